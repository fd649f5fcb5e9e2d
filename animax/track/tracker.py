"""Tracks through a sequence: which box is which animal from frame to frame.

- top-down: an animal's box in the next frame is the box of its predicted mesh in this one,
  grown by `margin` (`box_from_mesh`);
- identities: boxes of a new frame (given per frame, or the top-down ones) join the tracks whose
  last boxes they overlap most, by an optimal (Hungarian) assignment on IoU; a track with no box
  above `min_iou` is lost and ends (`Tracker`).
Smoothing over time is `animax.track.smoothing`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.optimize

from animax.geometry import CROP_SIZE, FOCAL_LENGTH
from animax.image.crop import apply_affine, crop_transform

TRACK_MARGIN = 0.2          # the top-down box: the mesh's box grown by 20% of its size per side,
                            # about the median growth of the detector-like training boxes
MIN_IOU = 0.3


def box_from_mesh(vertices, cam_t, box_center, box_size, margin=TRACK_MARGIN) -> tuple[float, float, float, float]:
    """The top-down box (x1, y1, x2, y2, image pixels) of a prediction: its mesh (model-space
    vertices [V, 3] through the crop camera cam_t [3], the projection of the model's own 2D
    keypoints) mapped from the crop (box_center, box_size) to the image, grown by margin x its
    size per side."""
    v = np.asarray(vertices, np.float64) + np.asarray(cam_t, np.float64)
    crop_pixels = FOCAL_LENGTH * v[:, :2] / v[:, 2:] + CROP_SIZE / 2.0
    points = apply_affine(crop_transform(np.asarray(box_center, np.float64), float(box_size)), crop_pixels)
    low, high = points.min(axis=0), points.max(axis=0)
    pad = margin * (high - low)
    return tuple(float(v) for v in (*(low - pad), *(high + pad)))


def visible_fraction(box, width, height) -> float:
    """The part of a box's area (x1, y1, x2, y2) inside a width x height image."""
    x1, y1, x2, y2 = box
    area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0)
    inside = max(min(x2, width) - max(x1, 0.0), 0.0) * max(min(y2, height) - max(y1, 0.0), 0.0)
    return inside / area if area > 0 else 0.0


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

    def update(self, frame: int, boxes, expected=None) -> list[int]:
        """expected: {track id: box} where each live track is expected in this frame (its top-down
        box); a live track not in it is compared by its last box."""
        boxes = [tuple(float(v) for v in box) for box in boxes]
        alive = self.alive
        expected = expected or {}
        ids = [None] * len(boxes)
        if alive and boxes:
            overlap = iou([expected.get(t.id, t.boxes[-1]) for t in alive], boxes)
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
