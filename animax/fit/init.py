"""Where a fit starts: the network's prediction (Predictor results, a track's TrackResult), or,
with no network, the prior's mean pose and a camera solved in closed form from the keypoints.

The closed-form start tries a fan of orientations (headings all around the body's up axis, two
camera elevations); for each, the weak-perspective camera (scale s and image offset u) that best
maps the rotated mean-pose keypoints onto the confident 2D keypoints is a linear least-squares
problem, x ~ s * Y_xy + u. The orientation with the least residual wins, and the perspective
translation follows: tz = f / s, (tx, ty) = (u - c) / s.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from animax.geometry import axis_angle_to_rotmat
from animax.smal.constants import KEYPOINT_NAMES
from animax.smal.model import smal_forward

HEADINGS = 16
ELEVATIONS = (0.0, 0.3)          # radians the camera looks down on the animal
PAWS = [i for i, n in enumerate(KEYPOINT_NAMES) if n.endswith("_paw")]


@dataclasses.dataclass
class Start:
    """A fit's start, [A, T, ...]: betas [A,T,NB], rotations [A,T,J,3,3], translation [A,T,3]."""
    betas: np.ndarray
    rotations: np.ndarray
    translation: np.ndarray


def from_predictions(results) -> Start:
    """One frame per animal from Predictor result dicts (betas, pose, cam_t_full)."""
    def stack(key):
        return np.stack([np.asarray(r[key], np.float32) for r in results])[:, None]
    return Start(stack("betas"), stack("pose"), stack("cam_t_full"))


def from_tracks(arrays_list, num_frames: int | None = None) -> Start:
    """Tracks' per-frame arrays (TrackResult.arrays: betas [T,NB], pose [T,J,3,3], cam_t_full [T,3]),
    each padded to `num_frames` by repeating its last frame."""
    num_frames = num_frames or max(len(a["betas"]) for a in arrays_list)

    def pad(x):
        x = np.asarray(x, np.float32)
        return np.concatenate([x, np.repeat(x[-1:], num_frames - len(x), axis=0)])
    return Start(*(np.stack([pad(a[k]) for a in arrays_list]) for k in ("betas", "pose", "cam_t_full")))


def body_axes(keypoints_3d):
    """(forward, up) unit vectors of a standing body from its keypoints [K, 3]: tail base to nose,
    and paws to the rest, made orthogonal to forward."""
    k = np.asarray(keypoints_3d, np.float64)
    forward = k[KEYPOINT_NAMES.index("nose")] - k[KEYPOINT_NAMES.index("tail_base")]
    forward /= np.linalg.norm(forward)
    up = np.delete(k, PAWS, axis=0).mean(0) - k[PAWS].mean(0)
    up -= up @ forward * forward
    return forward, up / np.linalg.norm(up)


def candidate_rotations(forward, up, headings=HEADINGS, elevations=ELEVATIONS) -> np.ndarray:
    """[C, 3, 3] global rotations: the body seen side-on facing right (forward -> camera x, up ->
    camera -y), turned about its up axis by each heading, the camera raised by each elevation."""
    side = np.cross(forward, up)
    model = np.stack([forward, up, side], axis=1)
    camera = np.stack([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]], axis=1)
    base = camera @ model.T
    out = []
    for elevation in elevations:
        tilt = axis_angle_to_rotmat(np.array([elevation, 0.0, 0.0]), xp=np)
        for heading in np.arange(headings) * 2 * np.pi / headings:
            out.append(tilt @ base @ axis_angle_to_rotmat(up * heading, xp=np))
    return np.stack(out)


def weak_perspective(points, keypoints, confidence):
    """Least-squares x ~ s * Y_xy + u. points [C, K, 2] (rotated model points), keypoints [K, 2],
    confidence [K] -> (s [C], u [C, 2], residual [C]: confidence-weighted mean squared pixels)."""
    w = confidence / max(confidence.sum(), 1e-9)
    mean_y = np.einsum("k,ckd->cd", w, points)
    mean_x = w @ keypoints
    dy, dx = points - mean_y[:, None], keypoints - mean_x
    s = np.einsum("k,ckd,kd->c", w, dy, dx) / np.maximum(np.einsum("k,ckd->c", w, dy * dy), 1e-12)
    s = np.maximum(s, 1e-6)        # the body in front of the camera, the right way round
    u = mean_x - s[:, None] * mean_y
    residual = np.einsum("k,ck->c", w, np.sum((s[:, None, None] * points + u[:, None] - keypoints) ** 2, -1))
    return s, u, residual


def from_keypoints(body, priors, keypoints, focal, center, shared_heading: bool = False) -> Start:
    """The no-network start. keypoints [A, T, K, 3] pixels + confidence (cleaned: no NaN),
    focal [A, T], center [A, T, 2]. The pose is the prior's mean; each frame's orientation and
    translation come from `weak_perspective` over `candidate_rotations`; with shared_heading one
    orientation per track (the least summed residual: a clip), else one per frame. Frames with
    fewer than 2 confident keypoints take their track's nearest solved frame."""
    keypoints, focal, center = (np.asarray(x, np.float64) for x in (keypoints, focal, center))
    num_animals, num_frames = keypoints.shape[:2]
    mean_pose = np.asarray(priors.pose.mean, np.float64).reshape(body.num_joints, 3).copy()
    mean_pose[0] = 0.0
    betas = np.asarray(priors.shape.means[0], np.float32)
    rest_rot = axis_angle_to_rotmat(mean_pose, xp=np).astype(np.float32)
    out = jax.device_get(smal_forward(body, betas[None], rest_rot[None]))
    model_points, root = np.asarray(out["keypoints_3d"][0], np.float64), np.asarray(out["joints"][0, 0], np.float64)
    rotations = candidate_rotations(*body_axes(model_points))
    # The root rotation turns the body about its root joint: Y = R (X - j0) + j0.
    turned = np.einsum("cij,kj->cki", rotations, model_points - root) + root
    np.zeros((num_animals, num_frames, 4))       # candidate, s, ux, uy
    residuals = np.full((num_animals, num_frames, len(rotations)), np.nan)
    fits = {}
    for a in range(num_animals):
        for t in range(num_frames):
            conf = keypoints[a, t, :, 2]
            if (conf > 0).sum() < 2:
                continue
            fits[a, t] = weak_perspective(turned[..., :2], keypoints[a, t, :, :2], conf)
            residuals[a, t] = fits[a, t][2]
    pose = np.tile(rest_rot, (num_animals, num_frames, 1, 1, 1))
    translation = np.zeros((num_animals, num_frames, 3))
    for a in range(num_animals):
        solved = [t for t in range(num_frames) if (a, t) in fits]
        if not solved:
            raise ValueError(f"animal {a}: no frame has 2 or more confident keypoints to start a fit from")
        best_track = int(np.nanargmin(np.nansum(residuals[a], axis=0))) if shared_heading else None
        for t in range(num_frames):
            source = min(solved, key=lambda u: abs(u - t))
            s, u, residual = fits[a, source]
            c = best_track if shared_heading else int(np.argmin(residual))
            pose[a, t, 0] = rotations[c]
            depth = focal[a, t] / s[c]
            translation[a, t] = [*((u[c] - center[a, t]) / s[c]), depth]
    return Start(np.tile(betas, (num_animals, num_frames, 1)), pose.astype(np.float32), translation.astype(np.float32))
