"""Animal3D / CtrlAni3D in AniMer's JSON format as an animax dataset.

manual_dir holds the images and masks and one JSON per split (`train.json`, `test.json`,
... found by name, see `builder.find_annotation_splits`; or given as `annotations`). Each
JSON is `{"data": [record, ...]}` with, per record: `img_path`, `mask_path` (relative to
manual_dir, or `image_dir` when given), `bbox` [x, y, w, h], `keypoint_2d` [26, 3],
optional `keypoint_3d` [26, 3], `pose` [105] axis-angle, `shape` + `shape_extra` (41
together), `trans` [3], `supercategory` (family id or name). Keypoints are already in the
SMAL order.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from animax.data import features
from animax.data.tfds_builder import (
    AnimaxBuilder,
    BadExample,
    check_example,
    clean_keypoints,
    find_annotation_splits,
    read_image,
    read_mask,
    resolve_image,
)
from animax.smal.constants import NUM_JOINTS
from animax.untrusted import read_json


@dataclasses.dataclass(frozen=True)
class _Record:
    file: str                       # "<json name>:<index> <img_path>"
    data: dict
    roots: tuple[Path, ...]


class Animal3d(AnimaxBuilder):
    """Animal3D-style records: images, masks, 2D/3D keypoints, SMAL parameters, families."""

    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Point manual_dir at the Animal3D (or CtrlAni3D) folder: the images, masks and the
    train/test JSON files in AniMer's format.
    """

    def __init__(self, *, annotations=None, image_dir=None, split_index=None, **kwargs):
        """annotations: {split: json path} instead of finding the files by name;
        image_dir: folder the img_path/mask_path entries are relative to (default manual_dir)."""
        super().__init__(**kwargs)
        self.annotations = annotations
        self.image_dir = image_dir
        self.split_index = split_index

    def _split_records(self, manual_dir):
        splits = {}
        for split, path in find_annotation_splits(manual_dir, self.annotations, self.split_index).items():
            try:
                data = read_json(path, "annotation file")["data"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                self.skip(split, path, "unreadable annotation file", str(e))
                continue
            roots = tuple(Path(r) for r in (self.image_dir, manual_dir, Path(path).parent) if r)
            splits[split] = [_Record(_describe(path, i, r), r, roots) for i, r in enumerate(data)]
        return splits

    def _example(self, record):
        data, image_id = record.data, record.file
        if not isinstance(data, dict) or "img_path" not in data:
            raise BadExample(image_id, "malformed record", "no img_path")
        image, size = read_image(resolve_image(data["img_path"], record.roots), image_id)
        mask = (read_mask(resolve_image(data["mask_path"], record.roots), size, image_id)
                if data.get("mask_path") else None)
        try:
            x, y, w, h = (float(v) for v in data["bbox"])
            raw_keypoints = np.asarray(data["keypoint_2d"], np.float64).reshape(-1, 3)
            keypoints_3d = (np.asarray(data["keypoint_3d"], np.float64).reshape(-1, 3)
                            if data.get("keypoint_3d") is not None else None)
            pose = (np.asarray(data["pose"], np.float64).reshape(NUM_JOINTS, 3)
                    if data.get("pose") is not None else None)
            betas = (np.concatenate([np.ravel(data["shape"]), np.ravel(data.get("shape_extra", []))])
                     if data.get("shape") is not None else None)
            trans = np.asarray(data["trans"], np.float64).reshape(3) if data.get("trans") is not None else None
        except (KeyError, TypeError, ValueError) as e:
            raise BadExample(image_id, "malformed record", f"{type(e).__name__}: {e}") from None
        for name, value in (("keypoint_2d", raw_keypoints), ("keypoint_3d", keypoints_3d)):
            if value is not None and len(value) != features.NUM_KEYPOINTS:
                raise BadExample(image_id, "malformed record",
                                 f"{name} has {len(value)} keypoints, not {features.NUM_KEYPOINTS}")
        keypoints_2d = clean_keypoints(raw_keypoints)
        bbox = np.array([x, y, x + w, y + h], np.float32)
        check_example(image_id, size, bbox, keypoints_2d, keypoint_3d=keypoints_3d, pose=pose,
                      shape=betas, trans=trans)
        return features.make_example(
            image=image, image_id=image_id, bbox=bbox, keypoints_2d=keypoints_2d,
            keypoints_3d=keypoints_3d, betas=betas, pose=pose, trans=trans, mask=mask,
            family=features.family_index(data.get("supercategory")))


def _describe(path, index, data) -> str:
    """How the report names a record: its JSON file, its index there and its image."""
    image = data.get("img_path") if isinstance(data, dict) else None
    return f"{Path(path).name}:{index}" + (f" {image}" if image else "")
