"""Evidence for a fit, built on the host from what users have: 2D keypoints (pixels +
confidence, NaN = missing) and optional binary masks, per animal and frame.

Masks become fixed-size arrays, so every image size compiles the same fit: the distance
transform on a G x G grid over the mask's box (grown by MASK_MARGIN), and a fixed random
subsample of P mask pixels.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import scipy.ndimage

from animax.fit.solve import Evidence
from animax.geometry import full_image_focal_length

MASK_MARGIN = 0.25
MIN_SCALE_FRACTION = 0.05     # an animal's scale is at least this share of the picture's longer side
MASK_SEED = 0


def clean_keypoints(keypoints) -> np.ndarray:
    """[..., K, 3] (x, y, confidence) with NaN or infinite coordinates (DeepLabCut's missing parts)
    and negative confidences set to confidence 0 at (0, 0)."""
    k = np.array(keypoints, np.float64)
    bad = ~np.all(np.isfinite(k), axis=-1) | (k[..., 2] <= 0)
    k[bad] = 0.0
    return k


def animal_scale(keypoints, mask, image_size) -> float:
    """The animal's size in pixels: the longer side of its mask's box, else of its confident
    keypoints' box, floored at MIN_SCALE_FRACTION of the picture."""
    floor = MIN_SCALE_FRACTION * max(image_size)
    if mask is not None and mask.any():
        ys, xs = np.nonzero(mask)
        return float(max(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1, floor))
    seen = keypoints[keypoints[:, 2] > 0, :2]
    if len(seen) < 2:
        return float(max(image_size))
    return float(max(*(seen.max(0) - seen.min(0)), floor))


def mask_arrays(mask, grid: int, points: int):
    """One binary mask [H, W] -> (distance [G,G] pixels, origin [2], cell, mask_points [P,2],
    mask_weight [P]). The grid is a square over the mask's box grown by MASK_MARGIN per side."""
    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask)
    low, high = np.array([xs.min(), ys.min()], np.float64), np.array([xs.max(), ys.max()], np.float64)
    side = (high - low).max() * (1 + 2 * MASK_MARGIN) + 2.0
    centre = (low + high) / 2
    cell = side / (grid - 1)
    origin = centre - side / 2
    full = scipy.ndimage.distance_transform_edt(~mask)
    height, width = mask.shape
    gx = origin[0] + cell * np.arange(grid)
    gy = origin[1] + cell * np.arange(grid)
    cx, cy = np.clip(np.round(gx), 0, width - 1).astype(int), np.clip(np.round(gy), 0, height - 1).astype(int)
    # Off the picture the distance grows by how far the grid point lies beyond it.
    off_x = np.abs(gx - np.clip(gx, 0, width - 1))
    off_y = np.abs(gy - np.clip(gy, 0, height - 1))
    distance = full[cy[:, None], cx[None, :]] + np.hypot(off_y[:, None], off_x[None, :])
    rng = np.random.default_rng(MASK_SEED)
    take = rng.choice(len(xs), size=min(points, len(xs)), replace=False)
    mask_points = np.zeros((points, 2))
    weight = np.zeros(points)
    mask_points[:len(take)] = np.stack([xs[take], ys[take]], -1)
    weight[:len(take)] = 1.0
    return distance, origin, cell, mask_points, weight


def build_evidence(keypoints, image_size, masks=None, valid=None, grid: int = 96, points: int = 256) -> Evidence:
    """keypoints [A, T, K, 3] pixels + confidence (NaN allowed); image_size (W, H) of every frame;
    masks: None or a nested list [A][T] of bool arrays [H, W] or None (no mask for that frame);
    valid [A, T] (default: frames with any confident keypoint or a mask) -> Evidence."""
    k = clean_keypoints(keypoints)
    num_animals, num_frames = k.shape[:2]
    has_masks = masks is not None and any(m is not None for row in masks for m in row)
    g, p = (grid, points) if has_masks else (2, 1)
    distance = np.zeros((num_animals, num_frames, g, g))
    origin = np.zeros((num_animals, num_frames, 2))
    cell = np.ones((num_animals, num_frames))
    mask_points = np.zeros((num_animals, num_frames, p, 2))
    mask_weight = np.zeros((num_animals, num_frames, p))
    has_mask = np.zeros((num_animals, num_frames))
    scale = np.zeros((num_animals, num_frames))
    for a in range(num_animals):
        for t in range(num_frames):
            mask = masks[a][t] if has_masks else None
            if mask is not None and np.any(mask):
                distance[a, t], origin[a, t], cell[a, t], mask_points[a, t], mask_weight[a, t] = mask_arrays(mask, g, p)
                has_mask[a, t] = 1.0
            else:
                mask = None
            scale[a, t] = animal_scale(k[a, t], mask, image_size)
    if valid is None:
        valid = ((k[..., 2] > 0).sum(-1) > 0) | (has_mask > 0)
    focal = float(full_image_focal_length(np.array(image_size, np.float64)))
    def f32(x):
        return jnp.asarray(x, jnp.float32)
    return Evidence(keypoints=f32(k[..., :2]), confidence=f32(k[..., 2]),
                    focal=f32(np.full((num_animals, num_frames), focal)),
                    center=f32(np.broadcast_to(np.array(image_size, np.float64) / 2, (num_animals, num_frames, 2))),
                    scale=f32(scale), valid=f32(np.asarray(valid, np.float64)), distance=f32(distance),
                    origin=f32(origin), cell=f32(cell), mask_points=f32(mask_points), mask_weight=f32(mask_weight),
                    has_mask=f32(has_mask))
