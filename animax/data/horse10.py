"""Horse-10 and other DeepLabCut projects as an animax dataset.

manual_dir is the project folder (Horse-10's release: `Horses-Byron-2019-05-08/`) holding
`labeled-data/<video>/CollectedData_<scorer>.csv` (or `.h5`; see `animax.data.dlc`) and the
labelled frames. Body parts are mapped to the SMAL keypoints by a keypoint map (default
animax/data/keypoint_maps/horse10.py); the box is the visible keypoints' box grown by `box_margin`
on each side. Each video is one horse: `identity` is the video's index among the project's
readable videos in name order.

Splits, `train`, `test_within` (test frames of the training horses) and `test` (the other
horses: out-of-domain), are the project's own shuffle `shuffle` (1, 2, 3 for Horse-10), read
from the first of (see `animax.data.dlc_splits`):

1. `training-datasets/iteration-*/UnaugmentedDataSet_*/Documentation_data-<Task>_<percent>
   shuffle<k>.pickle`, DeepLabCut's record of the shuffle (read with a restricted unpickler: plain
   containers and numpy arrays only), its indices counting the rows of the `CollectedData_<scorer>.h5`
   beside it. The training horses are the videos of its train frames; their test frames are
   `test_within`, all other test frames `test` (the benchmark's normalize_errors.py).
2. `TrainTestInfo_shuffle<k>.csv` (the Horse-10 benchmark's export of the same splits) in the
   project folder or its training-set folder.
3. Neither: a seed-drawn split, only for DeepLabCut projects without split files. A third of the
   horses (10 of 30) are training horses, half of their frames `train` and the other half
   `test_within`, the other horses' frames `test`; drawn with `split_seed` (default: the shuffle
   number). Its numbers are not comparable with any published Horse-10 result.

`split_file` names the source instead: a Documentation pickle (its combined table beside it), a
TrainTestInfo CSV, or JSON mapping each split name to a list of video names and/or frame paths
(as written in the label files).

`pck_scale`, the length Horse-10's PCK@0.3 and normalised errors divide by (Mathis et al., WACV
2021), is the benchmark's `Horsescale.h5` (in the project folder or its training-set folder) where
present: each frame's row, else the horse's. Otherwise, and for horses it lacks, it is computed:
the horse's median nose-to-eye distance over its labelled frames.

The build report's `sources` say which split source (documentation pickle / TrainTestInfo CSV /
split file / seed-drawn) and which scale (Horsescale.h5 / computed nose-eye) were used, and the
files read.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

from animax.data import dlc, dlc_splits, features
from animax.data.keypoint_maps import load_keypoint_map
from animax.data.tfds_builder import (
    AnimaxBuilder,
    BadExample,
    box_from_keypoints,
    check_example,
    clean_keypoints,
    read_image,
)
from animax.untrusted import read_json


@dataclasses.dataclass(frozen=True)
class _Record:
    file: str                       # the frame, relative to manual_dir
    image_path: Path
    frame: dlc.LabeledFrame
    identity: int                   # the video's place among the project's videos: one horse each
    pck_scale: float                # Horsescale.h5's, else the horse's median nose-to-eye distance (0: never both)


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

    def __init__(self, *, keypoint_map="horse10", shuffle=1, split_file=None, split_seed=None,
                 train_fraction=1 / 3, box_margin=0.1, family="equidae", **kwargs):
        super().__init__(**kwargs)
        self.keypoint_map_name = keypoint_map
        self.shuffle = shuffle
        self.split_file = split_file
        self.split_seed = split_seed
        self.train_fraction = train_fraction
        self.box_margin = box_margin
        self.family = features.family_index(family)
        self.sources: dict[str, str] = {}           # for the build report: where splits and scales came from

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
                frames_by_video[video_dir] = dlc.read_labels(files[0])
            except (ValueError, ImportError, OSError, KeyError) as e:
                self.skip("all", files[0], "unreadable label file", str(e))
        if not frames_by_video:
            why = "; ".join(s.detail if s.detail.startswith(s.file) else f"{s.file}: {s.detail or s.reason}"
                            for s in self.skipped[:3])
            raise ValueError(f"{labeled}: no readable label files" + (f" ({why})" if why else ""))
        split = self._shuffle_split(manual_dir)
        scale_of = self._scales(manual_dir, frames_by_video)
        records_by_video = {
            video_dir.name: [_Record(f.image, self._image_path(manual_dir, video_dir, f.image), f, identity,
                                     scale_of(video_dir.name, f.image)) for f in frames]
            for identity, (video_dir, frames) in enumerate(frames_by_video.items())}
        if isinstance(split, dlc_splits.ShuffleSplit):
            return self._named_splits(records_by_video, split)
        if split is not None:
            return self._splits_from_file(records_by_video)
        return self._protocol_splits(records_by_video)

    def _shuffle_split(self, manual_dir):
        """The shuffle's ShuffleSplit; "json" for a JSON split file; None for the seed-drawn split."""
        if self.split_file:
            path = Path(self.split_file)
            if path.suffix.lower() == ".json":
                self.sources["splits"] = f"split file {path}"
                return "json"
            split = (dlc_splits.documentation_split(path) if path.suffix.lower() == ".pickle"
                     else dlc_splits.read_train_test_info(path))
        else:
            documentation = dlc_splits.find_documentation(manual_dir, self.shuffle)
            info = dlc_splits.find_in_project(manual_dir, dlc_splits.TRAIN_TEST_INFO.format(self.shuffle))
            found = documentation or info
            if len(found) > 1:
                raise ValueError(f"{manual_dir}: several split files for shuffle {self.shuffle} "
                                 f"({', '.join(str(p.relative_to(manual_dir)) for p in found)}): "
                                 "name one with --split_file")
            if not found:
                seed = self.shuffle if self.split_seed is None else self.split_seed
                self.sources["splits"] = (
                    f"seed-drawn (split_seed {seed}): no Documentation_data-*shuffle{self.shuffle}.pickle or "
                    f"{dlc_splits.TRAIN_TEST_INFO.format(self.shuffle)} in the project; not Horse-10's "
                    "published split, so not comparable with published results")
                return None
            if self.split_seed is not None:
                raise ValueError(f"{found[0]}: the project has its own split for shuffle {self.shuffle}; "
                                 "split_seed applies only to projects without split files")
            split = (dlc_splits.documentation_split(found[0]) if documentation
                     else dlc_splits.read_train_test_info(found[0]))
        files = " with rows from ".join(str(p) for p in split.files)
        fraction = f", train fraction {split.train_fraction:g}" if split.train_fraction is not None else ""
        self.sources["splits"] = f"{split.source} {files} (shuffle {self.shuffle}{fraction})"
        return split

    def _scales(self, manual_dir, frames_by_video):
        """(video, frame path) -> pck_scale: Horsescale.h5's where the project has it, else computed."""
        computed = {video_dir.name: nose_eye_scale(frames) for video_dir, frames in frames_by_video.items()}
        found = dlc_splits.find_in_project(manual_dir, dlc_splits.HORSE_SCALE)
        if not found:
            self.sources["pck_scale"] = ("computed nose-eye: each horse's median nose-to-eye distance "
                                         f"(no {dlc_splits.HORSE_SCALE} in the project)")
            return lambda video, image: computed[video]
        by_frame = dlc_splits.read_scales(found[0])
        by_horse = {}
        for key, value in by_frame.items():
            by_horse.setdefault(dlc_splits.video_of(key), []).append(value)
        by_horse = {video: float(np.median(values)) for video, values in by_horse.items()}
        lacking = set()

        def scale_of(video, image):
            key = dlc_splits.frame_key(image)
            if key in by_frame:
                return by_frame[key]
            if video in by_horse:
                return by_horse[video]
            lacking.add(video)
            return computed[video]

        scales = {(video_dir.name, f.image): scale_of(video_dir.name, f.image)
                  for video_dir, frames in frames_by_video.items() for f in frames}
        self.sources["pck_scale"] = f"{dlc_splits.HORSE_SCALE} {found[0]}" + (
            f"; computed nose-eye for the horses it lacks: {', '.join(sorted(lacking))}" if lacking else "")
        return lambda video, image: scales[video, image]

    @staticmethod
    def _image_path(manual_dir, video_dir, image) -> Path:
        """The frame's file: as written, relative to the project; else by name beside the
        labels (label files often keep paths from the machine that labelled them)."""
        path = manual_dir / image
        return path if path.is_file() else video_dir / Path(image).name

    def _named_splits(self, records_by_video, split):
        """The records of the frames the shuffle names, per split in the file's order."""
        by_key = {}
        for records in records_by_video.values():
            for r in records:
                by_key.setdefault(dlc_splits.frame_key(r.frame.image), []).append(r)
        named = {"train": split.train, "test_within": split.test_within, "test": split.test}
        splits, used = {}, set()
        for name, frames in named.items():
            splits[name] = []
            for frame in frames:
                key = dlc_splits.frame_key(frame)
                if key not in by_key:
                    self.skip(name, frame, "frame of the split without labels",
                              f"named by {split.files[0]}, in no labeled-data label file")
                    continue
                used.add(key)
                splits[name].extend(by_key[key])
        for key, records in by_key.items():
            if key not in used:
                self.skip("all", records[0].file, "frame in no split", f"not named by {split.files[0]}")
        return {name: records for name, records in splits.items() if records}

    def _protocol_splits(self, frames_by_video):
        rng = np.random.default_rng(self.shuffle if self.split_seed is None else self.split_seed)
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
