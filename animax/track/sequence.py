"""Animals through a frame sequence: boxes, model, tracks.

    sequence = open_sequence("clip.mp4")
    tracks, num_frames = track_sequence(predictor, sequence.frames(), first_boxes=[(40, 60, 360, 300)])
    tracks = [smooth_track(t, body) for t in tracks]      # optional: animax.track.smoothing
    tracks[0].arrays["keypoints2d"]                       # [T, 26, 2] pixels of the frames

Per frame, the boxes are, in this order of preference: the frame's boxes from a file
(`frame_boxes`, e.g. a detector's), joined to the live tracks by IoU with their boxes in the
frame before; else every live track's top-down box (the box of its mesh predicted in the frame before,
`box_from_mesh`); for frame 0 without a file entry, `first_boxes` or the whole
frame. A top-down track ends when its box leaves the frame (less than MIN_VISIBLE of it inside)
or when it lands on an older track's animal (IoU above DUPLICATE_IOU). The animals of a frame
go through the model together; a frame waits for the one before it (top-down boxes need its
predictions), and the next frame is decoded while the model runs. Frames are not kept; each
track keeps its per-frame arrays (TRACK_ARRAYS, about 12 KB a frame, features included), and
meshes are rebuilt from pose and betas when written.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from animax.predict.detections import in_pixels
from animax.predict.inputs import box_problem
from animax.predict.predictor import prepare, whole_image_box
from animax.track.tracker import Tracker, box_from_mesh, iou, visible_fraction

MIN_VISIBLE = 0.25
DUPLICATE_IOU = 0.8
# Per-frame arrays a track keeps (Predictor result names); meshes are recomputed from pose and betas.
TRACK_ARRAYS = ("keypoints2d", "keypoints3d", "joints", "betas", "pose", "cam", "cam_t_full", "focal_length",
                "box", "visual_features", "head_features", "fused_features")


@dataclass
class TrackResult:
    """One animal through the sequence: `frames` [T] (indices into the sequence, consecutive),
    `arrays` {name: [T, ...]} (TRACK_ARRAYS; after `smooth_track`, its SMOOTHED hold the smoothed values
    and `<name>_raw` the model's), `image_size` (W, H) of the frames."""
    id: int
    frames: np.ndarray
    arrays: dict
    image_size: tuple[int, int]
    smoothing: float = 0.0


@dataclass
class _Open:
    frames: list = field(default_factory=list)
    results: list = field(default_factory=list)


def _prefetched(frames, ahead: int = 2):
    """The frames of an iterator, decoded `ahead` frames early on a background thread."""
    iterator = iter(frames)
    done = object()
    with ThreadPoolExecutor(1, thread_name_prefix="decode") as pool:
        queue = [pool.submit(next, iterator, done) for _ in range(ahead)]
        while True:
            frame = queue.pop(0).result()
            if frame is done:
                return
            queue.append(pool.submit(next, iterator, done))
            yield frame


def track_sequence(predictor, frames, first_boxes=None, frame_boxes=None, num_frames=None,
                   progress: bool | None = None, failures: list | None = None) -> tuple[list[TrackResult], int]:
    """Runs `predictor` through `frames` (uint8 RGB [H, W, 3] iterable); returns (tracks, frames read).

    first_boxes: frame 0's boxes (x1, y1, x2, y2; None: the whole frame); frame_boxes: {frame
    index: boxes} from a file, overriding top-down boxes where given. num_frames sizes the
    progress bar (frames/s). Boxes a file gives that cannot be cropped are appended to
    `failures` as one line each and skipped.
    """
    tracker = Tracker()
    tracks: dict[int, _Open] = {}
    expected: dict[int, tuple] = {}           # live track id -> top-down box for the next frame
    frame_boxes = frame_boxes or {}
    image_size, read = None, 0
    bar = tqdm(total=num_frames, unit="frame", disable=None if progress is None else not progress, file=sys.stderr)
    for t, image in enumerate(_prefetched(frames)):
        height, width = image.shape[:2]
        image_size = (width, height)
        given = frame_boxes.get(t)
        if given is None and t == 0:
            given = first_boxes if first_boxes is not None else [whole_image_box(image)]
        if given is not None:
            boxes = []
            for k, box in enumerate(in_pixels(b, width, height) for b in given):
                problem = box_problem(box, width, height)
                if problem and failures is not None:
                    failures.append(f"frame {t}: box {k} {list(box)}: {problem}")
                elif not problem:
                    boxes.append(box)
            ids = tracker.update(t, boxes)      # joined by overlap with each track's last box
        else:
            boxes = _top_down_boxes(expected, width, height)
            ids = tracker.update(t, boxes, expected)
        results = predictor.predict_animals([prepare(image, box) for box in boxes])
        expected = {}
        for track_id, result in zip(ids, results):
            track = tracks.setdefault(track_id, _Open())
            track.frames.append(t)
            track.results.append({name: result[name] for name in TRACK_ARRAYS})
            expected[track_id] = box_from_mesh(result["vertices"], result["cam_t"], result["box_center"],
                                               result["box_size"])
        read += 1
        bar.update(1)
    bar.close()
    return [TrackResult(i, np.array(track.frames), {name: np.stack([r[name] for r in track.results])
                                                    for name in TRACK_ARRAYS}, image_size)
            for i, track in sorted(tracks.items())], read


def _top_down_boxes(expected: dict, width, height) -> list[tuple]:
    """The live tracks' expected boxes, less those that left the frame or duplicate an older
    track (lower id); the tracker ends the tracks whose boxes are dropped."""
    kept = {}
    for track_id, box in sorted(expected.items()):
        if visible_fraction(box, width, height) < MIN_VISIBLE:
            continue
        if kept and iou([box], list(kept.values())).max() > DUPLICATE_IOU:
            continue
        kept[track_id] = box
    return list(kept.values())
