"""Tracks through a sequence: which box is which animal from frame to frame, and smoothing.

- top-down: an animal's box in the next frame is the box of its predicted 2D keypoints in this
  one, grown by `margin` (`box_from_keypoints`);
- identities: boxes of a new frame (given per frame, or the top-down ones) join the tracks whose
  last boxes they overlap most, by an optimal (Hungarian) assignment on IoU; a track with no box
  above `min_iou` is lost and ends (`Tracker`);
- smoothing (`smooth_track`): a zero-phase Gaussian over time on the joint rotations as
  sign-aligned quaternions (renormalised: a rotation-safe average) and on the camera, and one
  shape per track (the median of its betas).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.ndimage
import scipy.optimize

from animax.geometry import axis_angle_to_rotmat, quaternion_to_axis_angle, rotmat_to_quaternion, sign_continuous

TRACK_MARGIN = 0.2          # the top-down box: the keypoints' box grown by 20% of its size per side
MIN_IOU = 0.3


def box_from_keypoints(keypoints2d, margin=TRACK_MARGIN) -> tuple[float, float, float, float]:
    """The box (x1, y1, x2, y2) of keypoints [K, 2], each side pushed out by margin x its size."""
    low, high = np.min(keypoints2d, axis=0), np.max(keypoints2d, axis=0)
    pad = margin * (high - low)
    return tuple(float(v) for v in (*(low - pad), *(high + pad)))


def iou(a, b) -> np.ndarray:
    """IoU of boxes a [N, 4] and b [M, 4] (x1, y1, x2, y2) -> [N, M]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(high - low, 0, None), axis=-1)
    area = lambda boxes: np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), axis=-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None] - inter, 1e-12)


@dataclass
class Track:
    """One animal: its id, the frames it was seen in and its box there."""
    id: int
    frames: list[int] = field(default_factory=list)
    boxes: list[tuple] = field(default_factory=list)
    alive: bool = True


class Tracker:
    """Keeps ids across frames: `update(frame, boxes)` joins the frame's boxes to the live tracks
    (new tracks for the rest) and returns each box's track id."""

    def __init__(self, min_iou=MIN_IOU):
        self.min_iou, self.tracks = min_iou, []

    @property
    def alive(self) -> list[Track]:
        return [t for t in self.tracks if t.alive]

    def update(self, frame: int, boxes) -> list[int]:
        boxes = [tuple(float(v) for v in box) for box in boxes]
        alive = self.alive
        ids = [None] * len(boxes)
        if alive and boxes:
            overlap = iou([t.boxes[-1] for t in alive], boxes)
            rows, cols = scipy.optimize.linear_sum_assignment(-overlap)
            for r, c in zip(rows, cols):
                if overlap[r, c] >= self.min_iou:
                    ids[c] = alive[r].id
        for track in alive:                    # a live track that got no box is lost
            track.alive = track.id in ids
        for c, box in enumerate(boxes):
            if ids[c] is None:
                self.tracks.append(Track(len(self.tracks)))
                ids[c] = self.tracks[-1].id
            track = self.tracks[ids[c]]
            track.frames.append(frame)
            track.boxes.append(box)
        return ids


def smooth_track(rotations, cam, betas, sigma_frames=1.5):
    """A track's per-frame rotations [T, J, 3, 3], camera [T, C] and betas [T, NB] smoothed over
    time (module docstring); sigma in frames (0: unsmoothed rotations and camera)."""
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
