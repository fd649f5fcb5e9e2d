"""What to process: `--input` paths, folders and globs, and the boxes of each image.

Boxes file (`--boxes FILE`), JSON, one of these layouts:

    {"horse.jpg": [[40, 60, 360, 300], [380, 50, 620, 310]], "dog.png": [[0, 0, 200, 150]]}

maps images to corner boxes [x1, y1, x2, y2] in pixels of the (EXIF-rotated) image, and

    {"format": "xywh", "boxes": {"horse.jpg": [[40, 60, 320, 240]]}}

holds COCO boxes [x, y, width, height] (`"format": "xyxy"` names the corner layout
explicitly). In either, an image's entry may also be an object naming its body model, one of
the `--smal NAME=FILE` models (species with different meshes in one run):

    {"horse.jpg": {"boxes": [[40, 60, 360, 300]], "smal": "horse"}, "dog.png": [[0, 0, 200, 150]]}

Detector outputs, MegaDetector's batch JSON and COCO results, are read by
`animax.predict.detections`. A key is an image's path as passed/expanded, a trailing part of
it (`site1/IMG_0001.JPG`, as MegaDetector writes them) or its file name; an empty list means no
animal in that image. An image that the file does not list is a failure.
"""

from __future__ import annotations

import glob
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from animax.predict.detections import (
    DEFAULT_MIN_SCORE,
    BoxesFileError,
    coco_boxes,
    is_coco,
    is_megadetector,
    load_json,
    megadetector_boxes,
)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
BOX_FORMATS = ("xyxy", "xywh")
MAX_BOX_SCALE = 100            # box_problem: a box's side at most this many times the image's


@dataclass(frozen=True)
class ImageJob:
    """One input image: where it is, its boxes (x1, y1, x2, y2; None = the whole image) and
    the output folder stem (the file stem, made unique among the inputs)."""
    path: Path
    boxes: tuple[tuple[float, float, float, float], ...] | None
    name: str
    body_model: str | None = None     # the boxes file's choice of body model; None: the default

    @property
    def num_animals(self) -> int:
        return 1 if self.boxes is None else len(self.boxes)

    def folder_name(self, index: int) -> str:
        """`<name>` when the image has one box, `<name>_<index>` when it has several."""
        return self.name if self.num_animals == 1 else f"{self.name}_{index}"


def expand_inputs(specs) -> tuple[list[Path], list[str]]:
    """Image files named by `--input` values, in order, without repeats.

    A folder contributes its files with an image suffix (sorted, not recursive); a value with
    glob characters its matches (sorted); a file itself, whatever its suffix. Returns
    (paths, failures) with one "SPEC: problem" line per value that yields nothing.
    """
    paths, failures = [], []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            problem = "folder contains no images"
        elif path.is_file():
            found, problem = [path], ""
        elif glob.has_magic(spec):
            found = sorted(Path(p) for p in glob.glob(spec) if Path(p).is_file())
            problem = "no files match this pattern"
        else:
            found, problem = [], "no such file or folder"
        if not found:
            failures.append(f"{spec}: {problem}")
        paths.extend(found)
    return list(dict.fromkeys(paths)), failures


def read_boxes(path, min_score=None, categories=None, coco_images=None) -> dict[str, list]:
    """Reads a boxes file (layouts in the module docstring) as {key: [(x1, y1, x2, y2), ...]}.

    min_score (None: DEFAULT_MIN_SCORE), categories: which detections of a detector output to
    keep (see `animax.predict.detections`); coco_images: the annotation file naming the images of COCO
    results. Raises BoxesFileError naming the file and what is wrong with it.
    """
    path = Path(path)
    data = load_json(path)
    min_score = DEFAULT_MIN_SCORE if min_score is None else min_score
    if is_megadetector(data):
        return megadetector_boxes(data, path, min_score, categories)
    if is_coco(data):
        images = None if coco_images is None else load_json(coco_images)
        return coco_boxes(data, path, images, min_score, categories, coco_images)
    if not isinstance(data, dict):
        raise BoxesFileError(f"{path}: expected a JSON object mapping image names to box lists")
    box_format = "xyxy"
    if "format" in data:
        box_format = data["format"]
        if box_format not in BOX_FORMATS or not isinstance(data.get("boxes"), dict):
            raise BoxesFileError(f"{path}: with a 'format' key, expected 'format' in {list(BOX_FORMATS)} "
                                 "and a 'boxes' object mapping image names to box lists")
        data = data["boxes"]
    return {str(key): [_corner_box(box, box_format, path, key) for box in _box_list(value, path, key)]
            for key, value in data.items()}


def read_body_models(path) -> dict[str, str]:
    """The body model each image of a boxes file names ({key: name}, layouts in the module
    docstring); {} for detector outputs and files that name none."""
    data = load_json(Path(path))
    if not isinstance(data, dict) or is_megadetector(data) or is_coco(data):
        return {}
    data = data["boxes"] if "format" in data else data
    return {str(key): value["smal"] for key, value in data.items() if isinstance(value, dict) and "smal" in value}


def _box_list(value, path, key):
    if isinstance(value, dict):                # {"boxes": [...], "smal": NAME}
        if not isinstance(value.get("smal", ""), str) or set(value) - {"boxes", "smal"}:
            raise BoxesFileError(f"{path}: entry {key!r} must be a box list or an object with 'boxes' "
                                 "and an optional 'smal' (a body model name)")
        value = value.get("boxes")
    if not isinstance(value, list) or not all(isinstance(box, list) for box in value):
        raise BoxesFileError(f"{path}: entry {key!r} must be a list of boxes, each a list of 4 numbers")
    return value


def _corner_box(box, box_format, path, key):
    if len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                and math.isfinite(v) for v in box):
        raise BoxesFileError(f"{path}: entry {key!r} has a box {box!r}, expected 4 finite numbers")
    x, y, a, b = (float(v) for v in box)
    return (x, y, x + a, y + b) if box_format == "xywh" else (x, y, a, b)


@dataclass(frozen=True)
class BoxSource:
    """Where a run's boxes come from: a boxes file (`read`, layouts in the module docstring), one
    box for every image (`bbox`), or neither (each image or frame 0 as a whole)."""
    file: str | None = None                    # the boxes file, named in failure lines
    by_name: dict | None = None                # its {key: [(x1, y1, x2, y2), ...]}
    body_by_name: dict = field(default_factory=dict)   # its {key: body model name}
    bbox: tuple[float, float, float, float] | None = None

    @classmethod
    def read(cls, file, min_score=None, categories=None, coco_images=None) -> BoxSource:
        """A boxes file's boxes and body models (`read_boxes`, `read_body_models`)."""
        return cls(str(file), read_boxes(file, min_score, categories, coco_images), read_body_models(file))

    @classmethod
    def one_box(cls, bbox) -> BoxSource:
        return cls(bbox=tuple(float(v) for v in bbox))

    def lookup(self) -> BoxLookup | None:
        return None if self.by_name is None else BoxLookup(self.by_name)


def plan_jobs(paths, boxes: BoxSource = BoxSource()) -> tuple[list[ImageJob], list[str]]:
    """One ImageJob per path, with boxes from the boxes file, or its one box for every image, or
    neither (the whole image); its body model where the boxes file names one.

    Output names are file stems; a stem already taken by an earlier input gets `-2`, `-3`, ...
    Returns (jobs, failures) with one line per image that the boxes file does not list.
    """
    jobs, failures, taken = [], [], set()
    lookup, body_lookup = boxes.lookup(), BoxLookup(boxes.body_by_name)
    for path in paths:
        if lookup is not None:
            image_boxes = lookup(path)
            if image_boxes is None:
                failures.append(f"{path}: not listed in {boxes.file}")
                continue
        else:
            image_boxes = None if boxes.bbox is None else [boxes.bbox]
        name, n = path.stem, 1
        while name in taken:
            n += 1
            name = f"{path.stem}-{n}"
        taken.add(name)
        jobs.append(ImageJob(path, None if image_boxes is None else tuple(image_boxes), name, body_lookup(path)))
    return jobs, failures


def share(jobs, index: int, count: int) -> list[ImageJob]:
    """Process `index` of `count`'s part of `jobs` in a multi-process run: a contiguous slice
    (so the processes' rows of an arrays file join in job order by concatenation), the slices
    about equal in animals. Every process plans the same jobs, so the parts are disjoint and
    cover them all."""
    total = sum(job.num_animals for job in jobs) or 1
    owned, before = [], 0
    for job in jobs:        # a job belongs to the process whose range holds its middle animal
        if min(count - 1, int((before + job.num_animals / 2) * count / total)) == index:
            owned.append(job)
        before += job.num_animals
    return owned


class BoxLookup:
    """Finds a path's boxes in a boxes file's {key: boxes} (or any value keyed like them): the
    key equal to the path as given, else the longest key that is a trailing part of it
    (`site1/IMG_0001.JPG`), else None."""

    def __init__(self, boxes_by_name: dict):
        self.boxes_by_name = boxes_by_name
        self.keys_by_name = {}
        for key in boxes_by_name:
            self.keys_by_name.setdefault(Path(key).name, []).append(key)

    def __call__(self, path):
        path = Path(path)
        boxes = self.boxes_by_name.get(str(path))
        if boxes is None:
            tails = [k for k in self.keys_by_name.get(path.name, []) if _is_tail(Path(k).parts, path.parts)]
            boxes = self.boxes_by_name[max(tails, key=lambda k: len(Path(k).parts))] if tails else None
        return boxes

    def video_frames(self, video) -> dict[int, list]:
        """Boxes of a video's frames: keys under the video's path (`clip.mp4/frame000012.jpg`,
        MegaDetector's layout for videos: the last number of the name is the frame index), and
        the video's own key for frame 0."""
        video = Path(video)
        found = {}
        for key, boxes in self.boxes_by_name.items():
            key_path = Path(key)
            numbers = re.findall(r"\d+", key_path.stem)
            if numbers and len(key_path.parts) > 1 and _is_tail(key_path.parent.parts, video.parts):
                found[int(numbers[-1])] = boxes
        own = self(video)
        if own is not None and 0 not in found:
            found[0] = own
        return found


def _is_tail(tail, parts) -> bool:
    return len(tail) <= len(parts) and tuple(parts[len(parts) - len(tail):]) == tuple(tail)


def box_problem(box, width, height) -> str | None:
    """Why a box (x1, y1, x2, y2) cannot be cropped from a width x height image, or None.

    A box may stick out of the image (the crop is zero-padded) but must overlap it, and be no
    more than MAX_BOX_SCALE times the image's longer side (a box of 1e300 pixels is a broken
    file, not an animal).
    """
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        return "non-finite coordinate"
    if x2 <= x1 or y2 <= y1:
        return "zero area" if x2 == x1 or y2 == y1 else "negative width or height"
    if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
        return f"outside the {width}x{height} image"
    if max(x2 - x1, y2 - y1) > MAX_BOX_SCALE * max(width, height):
        return f"more than {MAX_BOX_SCALE} times the size of the {width}x{height} image"
    return None
