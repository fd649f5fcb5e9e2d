"""Smoothing a track over time, and how much a track jitters.

A zero-phase Gaussian over time on the joint rotations as sign-aligned quaternions
(renormalised: a rotation-safe average) and on the camera translation, and one shape per track
(the median of its betas); keypoints and joints are then recomputed through the body model.
"""

from __future__ import annotations

import jax
import numpy as np
import scipy.ndimage

from animax.geometry import axis_angle_to_rotmat, quaternion_to_axis_angle, rotmat_to_quaternion, sign_continuous
from animax.image.raster import project
from animax.smal.model import smal_forward
from animax.track.sequence import TrackResult

SMOOTH_SIGMA_FRAMES = 1.5
# The arrays `smooth_track` replaces; the model's values stay as `<name>_raw`.
SMOOTHED = ("keypoints2d", "keypoints3d", "joints", "betas", "pose", "cam_t_full")


def smooth_parameters(rotations, cam, betas, sigma_frames=SMOOTH_SIGMA_FRAMES):
    """Per-frame rotations [T, J, 3, 3], camera [T, C] and betas [T, NB] smoothed over time
    (module docstring); sigma in frames (0: unsmoothed rotations and camera, one shape)."""
    q = sign_continuous(rotmat_to_quaternion(np.asarray(rotations, np.float64), xp=np))
    cam = np.asarray(cam, np.float64)
    if sigma_frames > 0:
        q = scipy.ndimage.gaussian_filter1d(q, sigma_frames, axis=0, mode="nearest")
        cam = scipy.ndimage.gaussian_filter1d(cam, sigma_frames, axis=0, mode="nearest")
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    shape = np.median(np.asarray(betas, np.float64), axis=0)
    rotations = axis_angle_to_rotmat(quaternion_to_axis_angle(q, xp=np), xp=np)
    return (np.asarray(rotations, np.float32), cam.astype(np.float32),
            np.broadcast_to(shape, np.shape(betas)).astype(np.float32))


def smooth_track(track: TrackResult, body, sigma_frames: float = SMOOTH_SIGMA_FRAMES) -> TrackResult:
    """The track with its joint rotations and camera translation smoothed over time and one shape
    (`smooth_parameters`); keypoints and joints recomputed from them through the body model, 2D
    keypoints projected through the full frame's camera. The model's values stay as `<name>_raw`."""
    a = track.arrays
    pose, cam_t_full, betas = smooth_parameters(a["pose"], a["cam_t_full"], a["betas"], sigma_frames)
    posed = jax.device_get(smal_forward(body, betas, pose))
    keypoints3d = np.asarray(posed["keypoints_3d"], np.float32)
    centre = np.asarray(track.image_size, np.float64) / 2
    keypoints2d = np.stack([project(k + c, f, centre)[:, :2] for k, c, f in
                            zip(keypoints3d, cam_t_full, a["focal_length"])]).astype(np.float32)
    new = {"keypoints2d": keypoints2d, "keypoints3d": keypoints3d, "joints": np.asarray(posed["joints"], np.float32),
           "betas": betas, "pose": pose, "cam_t_full": cam_t_full}
    arrays = {**a, **new, **{f"{name}_raw": a[name] for name in SMOOTHED}}
    return TrackResult(track.id, track.frames, arrays, track.image_size, float(sigma_frames))


def jitter(keypoints2d) -> float:
    """Mean keypoint acceleration [T, K, 2] -> pixels per frame squared: the size of the second
    difference over time, averaged over frames and keypoints."""
    k = np.asarray(keypoints2d, np.float64)
    return float(np.linalg.norm(k[2:] - 2 * k[1:-1] + k[:-2], axis=-1).mean()) if len(k) > 2 else 0.0
