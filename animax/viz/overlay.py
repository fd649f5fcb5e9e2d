"""The overlay picture of one animal: crop | mesh over the crop | side view.

The crop panel shows the predicted 2D keypoints and the head box; the mesh panel renders
the mesh through the crop camera the model predicted (focal length 1000 px for the
256-pixel crop, principal point at its centre), so it lies where the model thinks the animal is;
the side view turns the mesh 90 degrees about the image's vertical axis and frames it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from animax.geometry import CROP_SIZE, FOCAL_LENGTH
from animax.image.crop import IMAGE_MEAN, IMAGE_STD
from animax.image.raster import MESH_COLOR, render

MESH_OPACITY = 0.7
SIDE_VIEW_FILL = 0.8               # fraction of the panel the side view's mesh spans
BACKGROUND = (40, 40, 40)
HEAD_BOX_COLOR = (255, 220, 0)
KEYPOINT_RADIUS = 2.5


def crop_to_uint8(crop):
    """ImageNet-normalised crop [S, S, 3] -> uint8 RGB (undoes animax.image.crop.normalize)."""
    return np.clip(np.round(np.asarray(crop, np.float32) * IMAGE_STD + IMAGE_MEAN), 0, 255).astype(np.uint8)


def keypoint_colors(count):
    """A fixed rainbow, one colour per keypoint index. -> [count] RGB tuples."""
    hue = np.arange(count) / max(count, 1)
    rgb = 0.5 + 0.5 * np.cos(2 * np.pi * (hue[:, None] + np.array([0.0, 2 / 3, 1 / 3])))
    return [tuple(int(255 * c) for c in color) for color in rgb]


def blend_mesh(picture, shaded, mask):
    """The shaded mesh [H, W, 3] (0..1) laid over a picture [H, W, 3] (0..255) where `mask`
    covers it, at MESH_OPACITY -> float [H, W, 3] (0..255)."""
    alpha = MESH_OPACITY * mask[..., None]
    return (1 - alpha) * np.asarray(picture, np.float64) + alpha * 255 * shaded


def blend_in_picture(picture, vertices, cam_t_full, focal_length, faces, color=MESH_COLOR):
    """The mesh through the full picture's camera (vertices + cam_t_full, `focal_length`,
    principal point at the centre) laid over picture [H, W, 3] (0..255) -> float [H, W, 3]."""
    height, width = np.shape(picture)[:2]
    shaded, mask = render(np.asarray(vertices) + np.asarray(cam_t_full), faces, float(focal_length),
                          (width / 2, height / 2), height, width, color=color)
    return blend_mesh(picture, shaded, mask)


def draw_keypoints(draw, points, dx=0.0):
    """Each keypoint [K, 2] (pixels) as a dot in its `keypoint_colors` colour, shifted by dx."""
    r = KEYPOINT_RADIUS
    for (x, y), color in zip(points, keypoint_colors(len(points))):
        draw.ellipse([x + dx - r, y - r, x + dx + r, y + r], fill=color, outline=(0, 0, 0))


def side_view(vertices, size=CROP_SIZE):
    """Camera-frame vertices [V, 3] turned 90 degrees about the vertical (y) axis around their
    centroid, then moved to a depth where they span SIDE_VIEW_FILL of a size x size view."""
    v = np.asarray(vertices, np.float64)
    centred = v - v.mean(axis=0)
    turned = centred @ np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]]).T
    radius = max(np.linalg.norm(turned[:, :2], axis=1).max(), 1e-6)
    depth = FOCAL_LENGTH * radius / (SIDE_VIEW_FILL * size / 2) + np.abs(turned[:, 2]).max()
    return turned + [0.0, 0.0, depth]


def overlay_image(crop, vertices, cam_t, faces, keypoints2d_crop, head_box):
    """uint8 RGB [S, 3S, 3] from the normalised crop [S, S, 3], model-space vertices [V, 3],
    crop camera translation cam_t [3], faces [F, 3], crop-normalised keypoints [K, 2] and
    the head box [4] in crop pixels."""
    crop = crop_to_uint8(crop)
    size = crop.shape[0]
    center = (size / 2.0, size / 2.0)
    focal = FOCAL_LENGTH * size / CROP_SIZE
    shaded, mask = render(np.asarray(vertices) + np.asarray(cam_t), faces, focal, center, size, size)
    mesh_panel = np.round(blend_mesh(crop, shaded, mask)).astype(np.uint8)
    side_shaded, side_mask = render(side_view(vertices, size), faces, focal, center, size, size)
    side_panel = np.where(side_mask[..., None], np.round(255 * side_shaded), BACKGROUND).astype(np.uint8)

    picture = Image.fromarray(np.concatenate([crop, mesh_panel, side_panel], axis=1))
    draw = ImageDraw.Draw(picture)
    draw.rectangle([float(v) for v in head_box], outline=HEAD_BOX_COLOR, width=2)
    points = (np.asarray(keypoints2d_crop, np.float64) + 0.5) * size
    for offset in (0, size):
        draw_keypoints(draw, points, offset)
    return np.asarray(picture)
