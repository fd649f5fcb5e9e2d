"""The overlay (animax.viz.overlay): the mesh drawn where its vertices project."""

import numpy as np

from animax.smal import load_smal
from animax.viz import overlay


def standin_side_on():
    """Camera-frame vertices of the stand-in's template seen from its side, and its faces."""
    body = load_smal()
    to_camera = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], np.float64)   # x fwd, z up -> x right, y down
    return np.asarray(body.v_template, np.float64) @ to_camera.T, np.asarray(body.faces)


def test_overlay_shows_mesh_where_vertices_project():
    vertices, faces = standin_side_on()
    cam_t = np.array([0.1, -0.05, 8.0])
    crop = np.zeros((256, 256, 3), np.float32)              # normalised 0 = the ImageNet mean colour
    far_away = np.full((26, 2), -10.0)                      # keep keypoints off the panels
    picture = overlay.overlay_image(crop, vertices, cam_t, faces, far_away, [-50, -50, -40, -40])
    assert picture.shape == (256, 768, 3)
    camera = vertices + cam_t
    pixels = np.round(1000 * camera[:, :2] / camera[:, 2:] + 128).astype(int)
    assert ((pixels >= 0) & (pixels < 256)).all()
    crop_panel, mesh_panel = picture[:, :256].astype(int), picture[:, 256:512].astype(int)
    changed = np.abs(mesh_panel - crop_panel).sum(-1) > 0

    def within(radius):
        """[256, 256] True within `radius` pixels (Chebyshev) of a projected vertex."""
        near = np.zeros((256, 256), bool)
        for dy in range(-radius, radius + 1):
            for dx in range(-radius, radius + 1):
                near[np.clip(pixels[:, 1] + dy, 0, 255), np.clip(pixels[:, 0] + dx, 0, 255)] = True
        return near

    # Every vertex has mesh pixels at or next to it (silhouette vertices round either way) ...
    at_vertex = changed[pixels[:, 1], pixels[:, 0]]
    assert at_vertex.mean() > 0.9
    for i, (x, y) in enumerate(pixels[~at_vertex]):
        assert changed[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].any(), i
    # ... and there are none away from them (this mesh's edges are under 10 pixels long).
    assert not (changed & ~within(6)).any()
    side_panel = picture[:, 512:]
    assert (side_panel != overlay.BACKGROUND).any(-1).mean() > 0.05
