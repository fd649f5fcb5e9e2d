"""Boxes from the detectors users already run: MegaDetector batch output and COCO results.

MegaDetector (its batch-processing JSON):

    {"images": [{"file": "site1/IMG_0001.JPG",
                 "detections": [{"category": "1", "conf": 0.93, "bbox": [x, y, w, h]}]},
                {"file": "site1/IMG_0002.JPG", "failure": "..."}],
     "detection_categories": {"1": "animal", "2": "person", "3": "vehicle"}}

with `bbox` as fractions of the image's width and height (`FractionalBox`), `file` relative to
the folder it ran on. COCO results, `[{"image_id", "category_id", "bbox": [x, y, w, h] pixels,
"score"}]`, name images by id only: the file names come from an `images` list
(`[{"id", "file_name"}]`) in a second file (the dataset's annotation file) or beside the
results in one object (`{"images": [...], "annotations": [...], "categories": [...]}`, the
dataset layout, where a missing `score` counts as 1).

Both keep the detections with a score of at least `min_score` whose category is one of
`categories` (names or ids; MegaDetector's default: animal; COCO's: all). An image listed with
no kept detection maps to [] (nothing to do), an image MegaDetector failed on is left out (so
infer.py reports it as not listed). Any malformed part raises BoxesFileError naming the file.
"""

from __future__ import annotations

import math

from animax.untrusted import read_json

MEGADETECTOR_DEFAULT_CATEGORIES = ("animal",)
# MegaDetector writes detections down to a confidence of about 0.005; its documentation suggests
# a threshold near 0.2 for most projects.
DEFAULT_MIN_SCORE = 0.2


class BoxesFileError(ValueError):
    """The boxes file cannot be used at all; the message names the file and the problem."""


class FractionalBox(tuple):
    """(x1, y1, x2, y2) as fractions of the image's width and height; `in_pixels` resolves it
    once the image is read."""

    def in_pixels(self, width, height) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = self
        return (x1 * width, y1 * height, x2 * width, y2 * height)


def in_pixels(box, width, height):
    """A box in pixels: a FractionalBox scaled to the image, any other box as it is."""
    return box.in_pixels(width, height) if isinstance(box, FractionalBox) else tuple(box)


def load_json(path):
    """A boxes or annotation file's JSON, within `animax.untrusted.read_json`'s size limit."""
    try:
        return read_json(path, "boxes file")
    except ValueError as e:
        raise BoxesFileError(str(e)) from None


def is_megadetector(data) -> bool:
    return isinstance(data, dict) and "detection_categories" in data and isinstance(data.get("images"), list)


def is_coco(data) -> bool:
    """COCO results (a list of objects) or a COCO dataset (images and annotations)."""
    if isinstance(data, list):
        return all(isinstance(result, dict) for result in data)
    return isinstance(data, dict) and "annotations" in data and "images" in data


def megadetector_boxes(data, path, min_score=DEFAULT_MIN_SCORE, categories=None) -> dict[str, list]:
    """{file: [FractionalBox, ...]} of a MegaDetector batch output."""
    names = data["detection_categories"]
    if not isinstance(names, dict):
        raise BoxesFileError(f"{path}: 'detection_categories' must map category ids to names")
    wanted = _category_ids(categories or MEGADETECTOR_DEFAULT_CATEGORIES, names, path)
    table = {}
    for i, image in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(image, dict) or not isinstance(image.get("file"), str):
            raise BoxesFileError(f"{path}: {where} must be an object with a 'file' name")
        if image.get("failure") is not None:
            continue
        detections = image.get("detections") or []
        if not isinstance(detections, list):
            raise BoxesFileError(f"{path}: {where} ({image['file']}): 'detections' must be a list")
        boxes = []
        for j, detection in enumerate(detections):
            spot = f"{where}.detections[{j}] ({image['file']})"
            x, y, w, h = _xywh(detection, "bbox", path, spot)
            score = _score(detection, "conf", path, spot, default=None)
            if score >= min_score and str(detection.get("category")) in wanted:
                boxes.append(FractionalBox((x, y, x + w, y + h)))
        table[image["file"]] = boxes
    return table


def coco_boxes(data, path, images=None, min_score=DEFAULT_MIN_SCORE, categories=None,
               images_path=None) -> dict[str, list]:
    """{file_name: [(x1, y1, x2, y2), ...]} of COCO results (a list) with the `images` list of
    `images` (the parsed second file), or of a COCO dataset object holding both."""
    if isinstance(data, dict):
        results, images, images_path = data["annotations"], data, path
        default_score = 1.0
    else:
        results, default_score = data, None
        if images is None:
            raise BoxesFileError(f"{path}: COCO results name images by id only; give the annotation file "
                                 "with their file names (--coco-images)")
    source = images_path or path
    listed = images.get("images") if isinstance(images, dict) else None
    if not isinstance(listed, list):
        raise BoxesFileError(f"{source}: expected an object with an 'images' list of {{id, file_name}}")
    files = {}
    for i, image in enumerate(listed):
        if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
            raise BoxesFileError(f"{source}: images[{i}] must have an 'id' and a 'file_name'")
        files[image["id"]] = image["file_name"]
    names = {str(c["id"]): c["name"] for c in images.get("categories", []) if isinstance(c, dict) and "id" in c
             and "name" in c}
    wanted = None if not categories else _category_ids(categories, names, source)
    if not isinstance(results, list):
        raise BoxesFileError(f"{path}: 'annotations' must be a list")
    table = {name: [] for name in files.values()}
    for i, result in enumerate(results):
        spot = f"result {i}" if default_score is None else f"annotations[{i}]"
        if not isinstance(result, dict):
            raise BoxesFileError(f"{path}: {spot} must be an object")
        if result.get("image_id") not in files:
            raise BoxesFileError(f"{path}: {spot} has image_id {result.get('image_id')!r}, which {source} "
                                 "does not list")
        x, y, w, h = _xywh(result, "bbox", path, spot)
        score = _score(result, "score", path, spot, default=default_score)
        if score >= min_score and (wanted is None or str(result.get("category_id")) in wanted):
            table[files[result["image_id"]]].append((x, y, x + w, y + h))
    return table


def _category_ids(categories, names, path) -> set[str]:
    """The ids (as strings) of `categories`, each given as a name or an id."""
    by_name = {str(name).lower(): str(i) for i, name in names.items()}
    ids = set()
    for category in categories:
        key = str(category)
        if key in names:
            ids.add(key)
        elif key.lower() in by_name:
            ids.add(by_name[key.lower()])
        else:
            known = ", ".join(f"{i} ({n})" for i, n in names.items()) or "none"
            raise BoxesFileError(f"{path}: no category {category!r} (known: {known})")
    return ids


def _xywh(entry, key, path, spot):
    box = entry.get(key) if isinstance(entry, dict) else None
    if (not isinstance(box, list) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
        raise BoxesFileError(f"{path}: {spot} has {key} {box!r}, expected 4 finite numbers [x, y, w, h]")
    return tuple(float(v) for v in box)


def _score(entry, key, path, spot, default):
    score = entry.get(key, default)
    if not isinstance(score, (int, float)) or isinstance(score, bool) or not math.isfinite(score):
        raise BoxesFileError(f"{path}: {spot} has {key} {score!r}, expected a number")
    return float(score)
