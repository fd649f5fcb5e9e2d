"""COCO-style keypoint annotations (AP-10K, mmpose's Horse-10 JSON, ...) as an animax dataset.

manual_dir holds one JSON per split (found by name, e.g. `annotations/ap10k-train-split1.json`,
see `builder.find_annotation_splits`; or given as `annotations`) and the images, found
relative to `image_dir`, manual_dir, manual_dir/data, manual_dir/images or the JSON's
folder and its parent. Each annotation (one animal) becomes one example: keypoints
[x, y, v] * N mapped to SMAL by the keypoint map whose names match the category's
`keypoints` (or the one given), visible when v > 0; its `bbox` [x, y, w, h], or the
keypoints' box grown by `box_margin` when it has none. The family comes from the
category's supercategory or name (AP-10K: 'Canidae', ...) unless `family` is given.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from animax.data import features
from animax.data.keypoint_maps import KeypointMap, find_keypoint_map, load_keypoint_map
from animax.data.tfds_builder import (
    AnimaxBuilder,
    BadExample,
    box_from_keypoints,
    check_example,
    clean_keypoints,
    find_annotation_splits,
    read_image,
    resolve_image,
)
from animax.untrusted import read_json


@dataclasses.dataclass(frozen=True)
class _Record:
    file: str                       # "<json name>:<annotation id> <file_name>"
    annotation: dict
    image: dict
    category: dict
    roots: tuple[Path, ...]


class CocoKeypoints(AnimaxBuilder):
    """COCO keypoint JSON: one example per annotated animal, 2D keypoints mapped to SMAL."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Point manual_dir at the dataset folder: its annotations/*.json (COCO keypoint format)
    and its images.
    """

    def __init__(self, *, annotations=None, image_dir=None, split_index=1, keypoint_map=None,
                 box_margin=0.1, family=None, **kwargs):
        """keypoint_map: name or config path (default: the one matching the category's
        keypoint names); family: a fixed family name/id for every example."""
        super().__init__(**kwargs)
        self.annotations = annotations
        self.image_dir = image_dir
        self.split_index = split_index
        self.keypoint_map_name = keypoint_map
        self.box_margin = box_margin
        self.family = family
        self._maps: dict[tuple[str, ...], KeypointMap] = {}

    def _split_records(self, manual_dir):
        # Loaded here, not in __init__: reading a built dataset also constructs the builder.
        self.fixed_map = load_keypoint_map(self.keypoint_map_name) if self.keypoint_map_name else None
        splits = {}
        for split, path in find_annotation_splits(manual_dir, self.annotations, self.split_index).items():
            path = Path(path)
            try:
                coco = read_json(path, "annotation file")
                images = {im["id"]: im for im in coco["images"]}
                categories = {c["id"]: c for c in coco["categories"]}
                annotations = coco["annotations"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                self.skip(split, path, "unreadable annotation file", str(e))
                continue
            roots = tuple(Path(r) for r in (self.image_dir, manual_dir, manual_dir / "data",
                                            manual_dir / "images", path.parent, path.parent.parent) if r)
            records = []
            for i, ann in enumerate(annotations):
                if not isinstance(ann, dict):
                    self.skip(split, path, "malformed annotation", f"annotations[{i}] is not an object")
                    continue
                image = images.get(ann.get("image_id"), {})
                name = f"{path.name}:{ann.get('id', '?')} {image.get('file_name', '?')}"
                records.append(_Record(name, ann, image, categories.get(ann.get("category_id"), {}), roots))
            splits[split] = records
        return splits

    def _keypoint_map(self, category) -> KeypointMap:
        if self.fixed_map:
            return self.fixed_map
        names = tuple(category.get("keypoints", ()))
        if names not in self._maps:
            self._maps[names] = find_keypoint_map(names)
        return self._maps[names]

    def _example(self, record):
        ann, image_id = record.annotation, record.file
        if ann.get("iscrowd"):
            raise BadExample(image_id, "crowd annotation")
        if "file_name" not in record.image:
            raise BadExample(image_id, "malformed annotation", f"no image with id {ann.get('image_id')}")
        if not record.category:
            raise BadExample(image_id, "malformed annotation", f"no category with id {ann.get('category_id')}")
        try:
            keypoint_map = self._keypoint_map(record.category)
        except ValueError as e:
            raise BadExample(image_id, "no keypoint map", str(e)) from None
        image, size = read_image(resolve_image(record.image["file_name"], record.roots), image_id)
        try:
            source = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        except (KeyError, TypeError, ValueError) as e:
            raise BadExample(image_id, "malformed annotation", f"keypoints: {type(e).__name__}: {e}") from None
        names = record.category.get("keypoints") or keypoint_map.keypoints
        if len(source) != len(names):
            raise BadExample(image_id, "malformed annotation",
                             f"{len(source)} keypoints, the category names {len(names)}")
        source[:, 2] = source[:, 2] > 0
        keypoints_2d = clean_keypoints(keypoint_map.to_smal_keypoints(source, names))
        if not (keypoints_2d[:, 2] > 0).any():
            raise BadExample(image_id, "no visible keypoint")
        box = ann.get("bbox")
        if box is not None and len(box) == 4 and box[2] > 0 and box[3] > 0:
            x, y, w, h = (float(v) for v in box)
            bbox = np.array([x, y, x + w, y + h], np.float32)
        else:
            bbox = box_from_keypoints(keypoints_2d, self.box_margin)
        check_example(image_id, size, bbox, keypoints_2d)
        return features.make_example(image=image, image_id=image_id, bbox=bbox,
                                     keypoints_2d=keypoints_2d, family=self._family(record.category),
                                     source_keypoints=keypoint_map.in_source_order(source, names),
                                     source_mirror=keypoint_map.mirror)

    def _family(self, category) -> int:
        """The fixed family, else the category's supercategory (AP-10K's are families), else its name."""
        if self.family is not None:
            return features.family_index(self.family)
        by_supercategory = features.family_index(category.get("supercategory"))
        return by_supercategory if by_supercategory >= 0 else features.family_index(category.get("name"))
