"""The NumPy rasteriser (animax.image.raster): against a brute-force reference, and a render's coverage."""

import numpy as np
import pytest
import trimesh

from animax.image import raster

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32


def test_rasterizer_matches_a_brute_force_reference():
    rng = np.random.default_rng(0)
    height, width = 24, 32
    # Triangles of every bounding-box size bucket, some sticking out of the image, at random depths.
    corners = np.concatenate([rng.uniform(-8, 40, (6, 3, 2)),
                              rng.uniform(5, 15, (6, 1, 2)) + rng.uniform(-3, 3, (6, 3, 2))])
    depth = rng.uniform(1, 5, (12, 3, 1))
    screen = np.concatenate([corners, depth], -1).reshape(-1, 3)
    faces = np.arange(len(screen)).reshape(-1, 3)
    rasterized = raster.rasterize(screen, faces, height, width)
    for i in range(height):
        for j in range(width):
            best, best_inv_z = -1, 0.0
            for f, (a, b, c) in enumerate(screen[faces]):
                def cross(p, q):
                    return (q[0] - p[0]) * (i - p[1]) - (q[1] - p[1]) * (j - p[0])
                edges = np.array([cross(a, b), cross(b, c), cross(c, a)])
                if (edges >= 0).all() or (edges <= 0).all():
                    area = cross(a, b) + cross(b, c) + cross(c, a)
                    weights = np.array([cross(b, c), cross(c, a), cross(a, b)]) / area
                    inv_z = weights @ (1 / np.array([a[2], b[2], c[2]]))
                    if inv_z > best_inv_z:
                        best, best_inv_z = f, inv_z
            assert rasterized.face[i, j] == best, (i, j)
            if best >= 0:
                assert rasterized.depth[i, j] == pytest.approx(1 / best_inv_z)


def test_render_of_a_smal_sized_mesh_covers_its_silhouette():
    # Its speed is measured in bench/bench_infer_cli.py (export), not asserted here.
    sphere = trimesh.creation.uv_sphere(count=[56, 72])       # 7778 vertices, more faces than SMAL's 7774
    assert len(sphere.faces) >= 7774
    vertices = sphere.vertices * [1.6, 0.8, 0.8] + [0, 0, 14.0]   # 230 px long, like an animal in its crop
    _, mask = raster.render(vertices, sphere.faces, 1000.0, (128, 128), 256, 256)
    assert 0.3 < mask.mean() < 1.0
