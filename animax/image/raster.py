"""A software z-buffer rasteriser with Lambert shading, in NumPy (no OpenGL, no GPU).

Fast enough for overlays (a 256 x 256 view of a 7774-face mesh in a few tens of
milliseconds) because no Python loop runs per face or per pixel: faces are grouped by the
size of their pixel bounding box, and each group tests all its faces against all the pixel
centres of a box of that size in one array expression.

Conventions: pinhole camera at the origin looking down +z, x right, y down (the model's
camera frame); pixel (row i, column j) has its centre at image coordinates (x=j, y=i).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NEAR = 1e-3                        # faces with a vertex closer than this are dropped
LIGHT_DIRECTION = np.array([0.3, -0.5, -1.0]) / np.linalg.norm([0.3, -0.5, -1.0])  # towards the light
MESH_COLOR = np.array([0.65, 0.74, 0.86])
AMBIENT = 0.25


@dataclass
class Rasterized:
    """Per-pixel result: which face is visible and where on it.

    face [H, W] int (-1 = background), barycentric [H, W, 3] (screen-space weights of the
    face's three vertices), depth [H, W] (camera z; inf on background).
    """
    face: np.ndarray
    barycentric: np.ndarray
    depth: np.ndarray

    @property
    def mask(self) -> np.ndarray:
        return self.face >= 0


def project(vertices, focal_length, principal_point):
    """Camera-frame points [V, 3] -> (pixel x, pixel y, depth z) [V, 3]."""
    v = np.asarray(vertices, np.float64)
    z = v[:, 2]
    safe_z = np.where(np.abs(z) < NEAR, NEAR, z)
    xy = focal_length * v[:, :2] / safe_z[:, None] + np.asarray(principal_point, np.float64)
    return np.concatenate([xy, z[:, None]], axis=1)


def rasterize(screen, faces, height, width) -> Rasterized:
    """Z-buffer rasterisation of triangles.

    screen [V, 3]: pixel x, pixel y and camera depth of each vertex (see `project`);
    faces [F, 3] vertex indices. A pixel is covered when its centre lies inside a triangle
    (edges included); the nearest covering face wins. Depth is interpolated as 1/z, which is
    linear in screen space under perspective.
    """
    screen = np.asarray(screen, np.float64)
    faces = np.asarray(faces, np.int64)
    tri = screen[faces]                                           # [F, 3, 3]
    in_front = (tri[:, :, 2] > NEAR).all(axis=1)
    # Integer pixel-centre ranges each face's bounding box covers, clipped to the image.
    lo = np.ceil(tri[:, :, :2].min(axis=1)).astype(np.int64)      # [F, 2] (x, y)
    hi = np.floor(tri[:, :, :2].max(axis=1)).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi = np.minimum(hi, [width - 1, height - 1])
    extent = hi - lo + 1
    keep = in_front & (extent > 0).all(axis=1)
    # Twice the signed area; zero-area faces cover no pixel centre reliably, drop them.
    e1 = tri[:, 1, :2] - tri[:, 0, :2]
    e2 = tri[:, 2, :2] - tri[:, 0, :2]
    area = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    keep &= np.abs(area) > 1e-12

    side = np.where(keep, extent.max(axis=1), 0)
    # Group by the bounding box side rounded up to a power of two: at most 4x wasted tests.
    bucket = np.ceil(np.log2(np.maximum(side, 1))).astype(np.int64)
    fragments = [_fragments(tri[ids], area[ids], lo[ids], 1 << b, ids)
                 for b in np.unique(bucket[keep])
                 for ids in [np.flatnonzero(keep & (bucket == b))]]
    return _resolve(fragments, height, width)


def _fragments(tri, area, lo, size, face_ids):
    """Pixel centres inside each triangle of a group whose bounding boxes fit in size x size.

    Returns (flat pixel index [N] without image bounds applied, x [N], y [N], inverse depth [N],
    barycentric [N, 3], face id [N]).
    """
    offsets = np.arange(size)
    px = lo[:, 0, None, None] + offsets[None, None, :]            # [F, 1, S]
    py = lo[:, 1, None, None] + offsets[None, :, None]            # [F, S, 1]
    x0, y0 = tri[:, 0, 0, None, None], tri[:, 0, 1, None, None]
    x1, y1 = tri[:, 1, 0, None, None], tri[:, 1, 1, None, None]
    x2, y2 = tri[:, 2, 0, None, None], tri[:, 2, 1, None, None]
    inv_area = 1.0 / area[:, None, None]
    # Barycentric weight of vertex k = signed area of the opposite sub-triangle / area.
    w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) * inv_area
    w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) * inv_area
    w2 = 1.0 - w0 - w1
    inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)                     # [F, S, S]
    f, r, c = np.nonzero(inside)
    bary = np.stack([w0[f, r, c], w1[f, r, c], w2[f, r, c]], axis=-1)
    inv_z = (bary / tri[f, :, 2]).sum(axis=-1)
    return lo[f, 0] + c, lo[f, 1] + r, inv_z, bary, face_ids[f]


def _resolve(fragments, height, width) -> Rasterized:
    """Keeps the nearest fragment (largest 1/z) per pixel; ties go to either."""
    face = np.full(height * width, -1, np.int64)
    barycentric = np.zeros((height * width, 3))
    nearest = np.full(height * width, -np.inf)               # 1/z of the nearest fragment
    if fragments:
        x, y, inv_z, bary, face_id = (np.concatenate(parts) for parts in zip(*fragments))
        inside = (x < width) & (y < height)
        pixel = y[inside] * width + x[inside]
        inv_z, bary, face_id = inv_z[inside], bary[inside], face_id[inside]
        np.maximum.at(nearest, pixel, inv_z)
        won = inv_z == nearest[pixel]
        face[pixel[won]] = face_id[won]
        barycentric[pixel[won]] = bary[won]
    depth = np.where(face >= 0, 1.0 / nearest, np.inf)
    return Rasterized(face.reshape(height, width), barycentric.reshape(height, width, 3),
                      depth.reshape(height, width))


def vertex_normals(vertices, faces):
    """Area-weighted unit vertex normals. vertices [V, 3], faces [F, 3] -> [V, 3]."""
    v = np.asarray(vertices, np.float64)
    tri = v[faces]
    face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])   # length = 2 x area
    normals = np.zeros_like(v)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def shade(raster: Rasterized, vertices, faces, color=MESH_COLOR, light=LIGHT_DIRECTION, ambient=AMBIENT):
    """Lambert shading of the visible surface: float RGB [H, W, 3] in 0..1 (0 on background).

    color: one RGB [3], or one per vertex [V, 3] (interpolated); light: unit direction
    towards the light in the camera frame. Normals are interpolated from the vertices and
    turned towards the camera, so the shading does not depend on the mesh's face orientation.
    """
    faces = np.asarray(faces, np.int64)
    mask = raster.mask
    normals = vertex_normals(vertices, faces)
    visible = faces[raster.face[mask]]                                       # [N, 3]
    n = np.einsum("nk,nkc->nc", raster.barycentric[mask], normals[visible])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    # The camera looks down +z: a normal facing it has negative z.
    n *= np.where(n[:, 2:] > 0, -1.0, 1.0)
    lambert = np.clip(n @ np.asarray(light), 0.0, 1.0)
    color = np.asarray(color, np.float64)
    if color.ndim == 2:
        color = np.einsum("nk,nkc->nc", raster.barycentric[mask], color[visible])
    out = np.zeros(mask.shape + (3,))
    out[mask] = (ambient + (1.0 - ambient) * lambert)[:, None] * color
    return out


def render(vertices, faces, focal_length, principal_point, height, width, color=MESH_COLOR):
    """Shaded image [H, W, 3] (0..1) and coverage mask [H, W] of a camera-frame mesh."""
    raster = rasterize(project(vertices, focal_length, principal_point), faces, height, width)
    return shade(raster, vertices, faces, color), raster.mask
