"""The objective's terms: pure functions of one animal (or one track) with shapes in their
docstrings. Every term returns a scalar that is already normalised (a mean over what it
counts), so that term weights do not depend on how many keypoints, vertices or frames there are.

Pixel residuals are divided by the animal's `scale` (pixels: the size of its box), so a term's
value does not depend on the picture's resolution either.

    gmof                     Geman-McClure robustifier, as SMPLify uses it
    keypoint_term            confidence-weighted robust 2D keypoint residuals
    silhouette_outside_term  projected vertices against the mask's distance transform
    silhouette_cover_term    mask pixels' distance to the nearest projected vertex (chamfer-like)
    pose_prior_term          AniMer's Gaussian pose prior (animax.smal.priors.pose_prior)
    shape_prior_term         AniMer's family shape prior, nearest family (animax.smal.priors)
    joint_limit_term         squared excess of the joint axis-angles beyond box limits
    rotation_smoothness_term second differences of the joint rotation matrices over time
    trajectory_smoothness_term second differences of the camera translation over time
"""

from __future__ import annotations

import jax.numpy as jnp

from animax.smal.priors import PosePrior, ShapePrior, pose_prior, shape_prior


def gmof(x, sigma):
    """Geman-McClure: sigma^2 x^2 / (sigma^2 + x^2), elementwise. Quadratic near 0, bounded by
    sigma^2: an outlier costs at most sigma^2."""
    x2 = x * x
    return sigma * sigma * x2 / (sigma * sigma + x2)


def project(points, translation, focal, center):
    """Full-image pinhole camera: points [..., N, 3] (body-model frame, already oriented),
    translation [..., 3], focal [...] pixels, center [..., 2] principal point -> [..., N, 2] pixels.
    The depth is floored at 1e-3 so a point behind the camera cannot divide by zero."""
    p = points + translation[..., None, :]
    depth = jnp.maximum(p[..., 2:3], 1e-3)
    return focal[..., None, None] * p[..., :2] / depth + center[..., None, :]


def keypoint_term(predicted, target, confidence, scale, sigma):
    """predicted, target [K, 2] pixels, confidence [K] (0 = missing), scale [] pixels, sigma (in
    units of scale) -> []: sum_k c_k sum_xy gmof((p - t) / scale) / sum_k c_k."""
    residual = (predicted - target) / scale
    cost = jnp.sum(gmof(residual, sigma), axis=-1)
    return jnp.sum(confidence * cost) / jnp.maximum(jnp.sum(confidence), 1e-6)


def bilinear(grid, x, y):
    """grid [G, G] sampled at continuous cell coordinates x, y [N] (x along columns), clamped
    to the grid -> [N]."""
    size = grid.shape[0]
    x = jnp.clip(x, 0.0, size - 1.0)
    y = jnp.clip(y, 0.0, size - 1.0)
    x0 = jnp.clip(jnp.floor(x), 0, size - 2).astype(jnp.int32)
    y0 = jnp.clip(jnp.floor(y), 0, size - 2).astype(jnp.int32)
    fx, fy = x - x0, y - y0
    top = grid[y0, x0] * (1 - fx) + grid[y0, x0 + 1] * fx
    bottom = grid[y0 + 1, x0] * (1 - fx) + grid[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def silhouette_outside_term(points, distance, origin, cell, scale):
    """How far the projected vertices lie outside the mask.

    points [N, 2] pixels; distance [G, G] the mask's Euclidean distance transform in pixels (0 on
    the mask) on a grid whose cell (0, 0) centre is at pixel `origin` [2], cells `cell` [] pixels
    apart; scale [] pixels. Points beyond the grid add their distance to it. -> []: the mean
    over points of (distance / scale)^2, bilinear in the points (differentiable, no renderer).
    """
    u = (points - origin) / cell
    size = distance.shape[0] - 1.0
    off = u - jnp.clip(u, 0.0, size)
    off2 = jnp.sum(off * off, axis=-1)
    # A norm with a zero gradient at 0 (points on the grid), not NaN.
    beyond = jnp.where(off2 > 0, jnp.sqrt(jnp.where(off2 > 0, off2, 1.0)), 0.0) * cell
    d = bilinear(distance, u[:, 0], u[:, 1]) + beyond
    return jnp.mean((d / scale) ** 2)


def silhouette_cover_term(points, mask_points, mask_weight, scale):
    """How well the projected mesh covers the mask: each mask pixel's distance to the nearest
    projected vertex (the chamfer distance's other half).

    points [N, 2] pixels, mask_points [P, 2] pixels (a fixed subsample of the mask),
    mask_weight [P] (0 = padding), scale [] pixels -> []: the weighted mean of (min_n |m - p_n|
    / scale)^2.
    """
    d2 = jnp.sum((mask_points[:, None, :] - points[None, :, :]) ** 2, axis=-1)
    nearest = jnp.min(d2, axis=-1) / (scale * scale)
    return jnp.sum(mask_weight * nearest) / jnp.maximum(jnp.sum(mask_weight), 1e-6)


def pose_prior_term(prior: PosePrior, rotations):
    """rotations [T, J, 3, 3] -> []: AniMer's pose prior (animax.smal.priors.pose_prior), mean over T."""
    return jnp.mean(pose_prior(prior, rotations))


def shape_prior_term(prior: ShapePrior, betas):
    """betas [T, NB] -> []: AniMer's family shape prior of the nearest family (the family is
    unknown when fitting), mean over T."""
    families = prior.means.shape[0]
    per_family = jnp.stack([shape_prior(prior, betas, jnp.full(betas.shape[:1], c)) for c in range(families)], -1)
    return jnp.mean(jnp.min(per_family, axis=-1))


def joint_limit_term(axis_angles, lower, upper):
    """axis_angles [T, J, 3], lower, upper [J, 3] radians -> []: the mean over T of the summed
    squared excess beyond [lower, upper] (0 inside the box)."""
    excess = jnp.maximum(axis_angles - upper, 0.0) + jnp.maximum(lower - axis_angles, 0.0)
    return jnp.mean(jnp.sum(excess * excess, axis=(-1, -2)))


def rotation_smoothness_term(rotations, valid):
    """rotations [T, J, 3, 3], valid [T] (0 = no frame) -> []: the mean over frame triples
    (t-1, t, t+1) all valid of sum_j |R_{t+1} - 2 R_t + R_{t-1}|_F^2, the rotations' acceleration
    as matrices (rotation-safe: no angle wraps, no axis-angle singularity). 0 for T < 3."""
    if rotations.shape[0] < 3:
        return jnp.zeros((), rotations.dtype)
    accel = rotations[2:] - 2 * rotations[1:-1] + rotations[:-2]
    both = valid[2:] * valid[1:-1] * valid[:-2]
    return jnp.sum(both * jnp.sum(accel * accel, axis=(-1, -2, -3))) / jnp.maximum(jnp.sum(both), 1.0)


def trajectory_smoothness_term(translations, valid):
    """translations [T, 3] camera-frame root translations, valid [T] -> []: the mean over valid
    frame triples of |t_{t+1} - 2 t_t + t_{t-1}|^2 / depth^2 (depth-relative, as the picture sees
    it). 0 for T < 3."""
    if translations.shape[0] < 3:
        return jnp.zeros((), translations.dtype)
    accel = translations[2:] - 2 * translations[1:-1] + translations[:-2]
    depth = jnp.maximum(translations[1:-1, 2], 1e-3)
    both = valid[2:] * valid[1:-1] * valid[:-2]
    return jnp.sum(both * jnp.sum(accel * accel, axis=-1) / depth ** 2) / jnp.maximum(jnp.sum(both), 1.0)
