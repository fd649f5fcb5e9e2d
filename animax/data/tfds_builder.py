"""What every animax dataset builder shares: the TFDS plumbing, checking one candidate
example, and keeping the list of what was skipped and why.

A builder lists candidate records per split (`_split_records`), then turns each into a
stored example (`_example`). A record that is bad data raises `BadExample`; the build
counts and lists it and goes on, so one broken file never stops a build. The files are
written in TFDS's array_record format; neither writing nor reading needs TensorFlow.
"""

from __future__ import annotations

import abc
import dataclasses
import re
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
from tqdm import tqdm

from animax.data import features
from animax.image.io import load_image

MAX_BOX_SCALE = 100        # check_example: a box's side at most this many times the image's


class BadExample(Exception):
    """A record that cannot become an example. The report groups skips by `reason` (a short
    category such as "missing file") and lists each `file` with its `detail`."""

    def __init__(self, file, reason, detail=""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.file = str(file)
        self.reason = reason
        self.detail = detail


@dataclasses.dataclass(frozen=True)
class Skipped:
    split: str
    file: str
    reason: str
    detail: str = ""


class AnimaxBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the animax builders: shared features, array_record files, a skip list."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "1.1.0": "`identity`: the individual animal; `pck_scale`: a dataset's own PCK length; "
                              "`source_keypoints`, `source_mirror`: every keypoint of the source."}
    # Nothing is downloaded, so there are no URL checksums; TFDS would otherwise look for a
    # checksums file beside this code through importlib.resources, which needs the
    # `importlib_resources` backport and fails for namespace-installed packages.
    url_infos = None

    def __init__(self, *, data_dir=None, file_format="array_record", progress=True, **kwargs):
        """progress: show a progress bar per split while building."""
        super().__init__(data_dir=data_dir, file_format=file_format, **kwargs)
        self.progress = progress
        self.skipped: list[Skipped] = []

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=self.__doc__,
                                     features=features.FEATURES)

    def _split_generators(self, dl_manager):
        manual_dir = Path(dl_manager.manual_dir) if self.MANUAL_DOWNLOAD_INSTRUCTIONS else None
        generators = {}
        for split, records in self._split_records(manual_dir).items():
            # TFDS fails a build on a split with no example, so a split is only offered once
            # its first usable record is found; a split of bad data is left out.
            for start, record in enumerate(records):
                first = self._try_example(split, record)
                if first is not None:
                    generators[split] = self._generate_examples(split, records, start, first)
                    break
        return generators

    @abc.abstractmethod
    def _split_records(self, manual_dir: Path | None) -> dict[str, list]:
        """Candidate records per split name (each with a `file` attribute naming its source);
        unusable annotation files found on the way go to `skip`."""

    @abc.abstractmethod
    def _example(self, record) -> dict:
        """`features.make_example(...)` of one record; raises BadExample."""

    def skip(self, split, file, reason, detail=""):
        self.skipped.append(Skipped(split, str(file), reason, detail))

    # TFDS prints where it writes, which is the build's staging folder; the build reports
    # the final place instead.
    def _log_download_bytes(self):
        pass

    def _log_download_done(self):
        pass

    def _try_example(self, split, record):
        """The example of a record, or None after noting why it was skipped."""
        try:
            return self._example(record)
        except BadExample as e:
            self.skip(split, e.file, e.reason, e.detail)
        except Exception as e:  # noqa: BLE001 - a build never dies on one record
            self.skip(split, record.file, f"unexpected {type(e).__name__}", str(e))
        return None

    def _generate_examples(self, split, records, start, first):
        """Yields (key, example) for `first` (the example of records[start]) and the records
        after it. The key is the record's position: unique even where a source repeats ids."""
        yield str(start), first
        skipped_before = len(self.skipped)
        bar = tqdm(records[start + 1:], desc=f"{self.name} {split}", unit="ex", initial=start + 1,
                   total=len(records), disable=not self.progress)
        for index, record in enumerate(bar, start=start + 1):
            example = self._try_example(split, record)
            if example is not None:
                yield str(index), example
            bar.set_postfix(skipped=len(self.skipped) - skipped_before, refresh=False)


def read_image(path, image_id=None) -> tuple[bytes, tuple[int, int]]:
    """The file's bytes and its decoded (height, width); BadExample if missing or unreadable."""
    path = Path(path)
    image_id = image_id or path
    if not path.is_file():
        raise BadExample(image_id, "missing file", str(path))
    try:
        height, width = load_image(path).shape[:2]   # decoded as the pipeline will decode it
    except ValueError as e:
        raise BadExample(image_id, "unreadable image", str(e)) from None
    return path.read_bytes(), (height, width)


def read_mask(path, image_size, image_id) -> bytes:
    """A mask file as PNG bytes (255 = animal), checked to match the image size."""
    path = Path(path)
    if not path.is_file():
        raise BadExample(image_id, "missing file", str(path))
    try:
        with Image.open(path) as im:
            # The size is the header's: checked before decoding, so a mask declaring a huge
            # image (a decompression bomb) is refused without allocating it.
            if (im.height, im.width) != tuple(image_size):
                raise BadExample(image_id, "mask size differs from the image",
                                 f"{path} is {im.width}x{im.height}, the image {image_size[1]}x{image_size[0]}")
            mask = np.asarray(im.convert("L"))
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
        raise BadExample(image_id, "unreadable mask", f"{path}: {e}") from None
    return features.encode_png(mask)


def clean_keypoints(keypoints_2d) -> np.ndarray:
    """[K, 3] -> float32 with unlabelled keypoints (NaN coordinates or confidence <= 0) at
    (0, 0, 0): DeepLabCut and COCO mark missing labels that way, and it keeps NaNs out."""
    kp = np.array(keypoints_2d, np.float32).reshape(-1, 3)
    missing = ~np.isfinite(kp).all(-1) | ~(kp[:, 2] > 0)
    kp[missing] = 0.0
    return kp


def check_example(image_id, image_size, bbox, keypoints_2d, **arrays) -> None:
    """Bad-data checks shared by all builders; raises BadExample with the reason.

    image_size (height, width); bbox (x1, y1, x2, y2); keypoints_2d [K, 3] already cleaned;
    arrays: other numeric fields (None = absent) that must be finite.
    """
    for name, value in arrays.items():
        if value is not None and not np.isfinite(np.asarray(value, np.float64)).all():
            raise BadExample(image_id, "NaN or infinite value", name)
    if not (np.asarray(keypoints_2d)[:, 2] > 0).any():
        raise BadExample(image_id, "no visible keypoint")
    bbox = np.asarray(bbox, np.float64)
    if not np.isfinite(bbox).all():
        raise BadExample(image_id, "NaN or infinite value", "box")
    x1, y1, x2, y2 = bbox
    box = f"box ({x1:.1f}, {y1:.1f}, {x2:.1f}, {y2:.1f})"
    if x2 - x1 < 1 or y2 - y1 < 1:
        raise BadExample(image_id, "empty box", box)
    height, width = image_size
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        raise BadExample(image_id, "box outside the image", f"{box}, image {width}x{height}")
    if max(x2 - x1, y2 - y1) > MAX_BOX_SCALE * max(width, height):
        raise BadExample(image_id, "box far larger than the image",
                         f"{box}, image {width}x{height} (limit: {MAX_BOX_SCALE} times its longer side)")


def box_from_keypoints(keypoints_2d, margin) -> np.ndarray:
    """(x1, y1, x2, y2) around the visible keypoints, grown by `margin` x its size on each side."""
    visible = keypoints_2d[keypoints_2d[:, 2] > 0, :2]
    low, high = visible.min(0), visible.max(0)
    grow = margin * (high - low)
    return np.concatenate([low - grow, high + grow]).astype(np.float32)


_SPLIT_WORDS = (("train", "train"), ("val", "validation"), ("test", "test"))


def find_annotation_splits(manual_dir: Path, annotations: dict | None, split_index: int | None):
    """Annotation JSON files per split: given explicitly ({split: path}), or found by name.

    Without `annotations`, every *.json in manual_dir and manual_dir/annotations whose name
    says train / val / test is taken (AP-10K's `ap10k-train-split1.json`, Animal3D's
    `train.json`, ...). Datasets shipping several numbered splits (`...-split2.json`) are
    narrowed to `split_index`. Raises ValueError when a split stays ambiguous or none is found.
    """
    if annotations:
        return {split: Path(path) if Path(path).is_absolute() else manual_dir / path
                for split, path in annotations.items()}
    candidates = sorted({p for d in (manual_dir, manual_dir / "annotations") if d.is_dir()
                         for p in d.glob("*.json")})
    found: dict[str, list[Path]] = {}
    for path in candidates:
        stem = path.stem.lower()
        for word, split in _SPLIT_WORDS:
            if re.search(rf"(^|[^a-z]){word}", stem):
                found.setdefault(split, []).append(path)
                break
    result = {}
    for split, paths in found.items():
        if len(paths) > 1 and split_index is not None:
            paths = [p for p in paths if re.search(rf"split_?{split_index}(\D|$)", p.stem.lower())]
        if len(paths) != 1:
            names = ", ".join(p.name for p in found[split])
            raise ValueError(f"several annotation files for split '{split}' ({names}); "
                             "choose with split_index or name them with annotations")
        result[split] = paths[0]
    if not result:
        raise ValueError(f"no train/val/test annotation JSON in {manual_dir} or its annotations/")
    return result


def resolve_image(file_name: str, roots) -> Path:
    """The first existing root / file_name (paths in annotation files are relative to some
    image folder that differs between datasets); the first candidate when none exists."""
    file_name = file_name.replace("\\", "/")
    candidates = [Path(root) / file_name for root in roots]
    return next((c for c in candidates if c.is_file()), candidates[0])
