"""Horse-10 and other DeepLabCut projects as an animax dataset.

manual_dir is the project folder holding `labeled-data/<video>/CollectedData_<scorer>.csv`
(see `animax.data.dlc`) and the labelled frames. Body parts are mapped to the SMAL
keypoints by a keypoint map (default animax/data/keypoint_maps/horse10.py); the box is the visible
keypoints' box grown by `box_margin` on each side. Each video is one horse: `identity` is the
video's index among the project's readable videos in name order, and `pck_scale` the horse's
median nose-to-eye distance over its frames: the length Horse-10's PCK@0.3 divides by (Mathis
et al., WACV 2021, report it per horse).

Splits follow the Horse-10 protocol (Mathis et al., WACV 2021) over the videos, one horse
each: a third of the horses (10 of 30) are training horses; half of their frames form
`train` and the other half `test_within` (within-domain); the other horses' frames form
`test` (out-of-domain). Which horses and frames is drawn with `split_seed`, so the three
Horse-10 shuffles are split_seed 1, 2, 3. A split file overrides this: JSON mapping each
split name to a list of video names and/or frame paths (as written in the label files).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from animax.data import dlc, features
from animax.data.tfds_builder import (AnimaxBuilder, BadExample, box_from_keypoints, check_example,
                                 clean_keypoints, read_image)
from animax.data.keypoint_maps import load_keypoint_map
from animax.untrusted import read_json


@dataclasses.dataclass(frozen=True)
class _Record:
    file: str                       # the frame, relative to manual_dir
    image_path: Path
    frame: dlc.LabeledFrame
    identity: int                   # the video's place among the project's videos: one horse each
    pck_scale: float                # the horse's median nose-to-eye distance in pixels (0: never both)


def nose_eye_scale(frames) -> float:
    """Median nose-to-eye distance (pixels) over the frames labelling both; 0 when none does."""
    distances = []
    for frame in frames:
        parts = [p.lower() for p in frame.bodyparts]
        if "nose" in parts and "eye" in parts:
            d = np.linalg.norm(frame.xy[parts.index("nose")] - frame.xy[parts.index("eye")])
            if np.isfinite(d):
                distances.append(d)
    return float(np.median(distances)) if distances else 0.0


class Horse10(AnimaxBuilder):
    """Horse-10 / DeepLabCut labelled frames: 2D keypoints mapped to SMAL, boxes from the
    keypoints, family equidae by default."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Point manual_dir at the DeepLabCut project folder (the one holding labeled-data/).
    """

    def __init__(self, *, keypoint_map="horse10", split_file=None, split_seed=1,
                 train_fraction=1 / 3, box_margin=0.1, family="equidae", **kwargs):
        super().__init__(**kwargs)
        self.keypoint_map_name = keypoint_map
        self.split_file = split_file
        self.split_seed = split_seed
        self.train_fraction = train_fraction
        self.box_margin = box_margin
        self.family = features.family_index(family)

    def _split_records(self, manual_dir):
        # Loaded here, not in __init__: reading a built dataset also constructs the builder.
        self.keypoint_map = load_keypoint_map(self.keypoint_map_name)
        labeled = manual_dir / "labeled-data"
        if not labeled.is_dir():
            raise FileNotFoundError(f"{labeled}: no labeled-data folder in the DeepLabCut project")
        frames_by_video = {}
        for video_dir in sorted(p for p in labeled.iterdir() if p.is_dir()):
            files = dlc.label_files(video_dir)
            if not files:
                self.skip("all", video_dir, "no label file", "no CollectedData_*.csv/.h5")
                continue
            try:
                frames = dlc.read_labels(files[0])
            except (ValueError, ImportError, OSError, KeyError) as e:
                self.skip("all", files[0], "unreadable label file", str(e))
                continue
            identity, scale = len(frames_by_video), nose_eye_scale(frames)
            frames_by_video[video_dir.name] = [
                _Record(f.image, self._image_path(manual_dir, video_dir, f.image), f, identity, scale) for f in frames]
        if not frames_by_video:
            why = "; ".join(s.detail if s.detail.startswith(s.file) else f"{s.file}: {s.detail or s.reason}"
                            for s in self.skipped[:3])
            raise ValueError(f"{labeled}: no readable label files" + (f" ({why})" if why else ""))
        if self.split_file:
            return self._splits_from_file(frames_by_video)
        return self._protocol_splits(frames_by_video)

    @staticmethod
    def _image_path(manual_dir, video_dir, image) -> Path:
        """The frame's file: as written, relative to the project; else by name beside the
        labels (label files often keep paths from the machine that labelled them)."""
        path = manual_dir / image
        return path if path.is_file() else video_dir / Path(image).name

    def _protocol_splits(self, frames_by_video):
        rng = np.random.default_rng(self.split_seed)
        videos = list(frames_by_video)
        num_train = min(max(round(self.train_fraction * len(videos)), 1), max(len(videos) - 1, 1))
        train_videos = set(rng.permutation(videos)[:num_train])
        splits = {"train": [], "test_within": [], "test": []}
        for video, records in frames_by_video.items():
            if video not in train_videos:
                splits["test"].extend(records)
                continue
            order = rng.permutation(len(records))
            half = (len(records) + 1) // 2
            splits["train"].extend(records[i] for i in sorted(order[:half]))
            splits["test_within"].extend(records[i] for i in sorted(order[half:]))
        return {name: records for name, records in splits.items() if records}

    def _splits_from_file(self, frames_by_video):
        listing = read_json(self.split_file, "split file")
        if not isinstance(listing, dict) or not all(isinstance(m, list) for m in listing.values()):
            raise ValueError(f"{self.split_file}: expected an object mapping split names to lists")
        splits = {}
        for name, members in listing.items():
            if not re.fullmatch(r"[A-Za-z0-9_]+", name):
                raise ValueError(f"{self.split_file}: split name '{name}' is not alphanumeric")
            members = {str(m).replace("\\", "/") for m in members}
            splits[name] = [r for video, records in frames_by_video.items() for r in records
                            if video in members or r.frame.image in members]
        return {name: records for name, records in splits.items() if records}

    def _example(self, record):
        frame = record.frame
        image_id = record.file + (f"#{frame.individual}" if frame.individual else "")
        image, size = read_image(record.image_path, image_id)
        labelled = np.isfinite(frame.xy).all(-1)
        source = np.concatenate([np.nan_to_num(frame.xy), labelled[:, None]], -1)
        keypoints_2d = clean_keypoints(self.keypoint_map.to_smal_keypoints(source, frame.bodyparts))
        if not (keypoints_2d[:, 2] > 0).any():
            raise BadExample(image_id, "no visible keypoint",
                             "" if not labelled.any() else "none of the labelled parts maps to SMAL")
        bbox = box_from_keypoints(keypoints_2d, self.box_margin)
        check_example(image_id, size, bbox, keypoints_2d)
        return features.make_example(image=image, image_id=image_id, bbox=bbox,
                                     keypoints_2d=keypoints_2d, family=self.family, identity=record.identity,
                                     pck_scale=record.pck_scale,
                                     source_keypoints=self.keypoint_map.in_source_order(source, frame.bodyparts),
                                     source_mirror=self.keypoint_map.mirror)
