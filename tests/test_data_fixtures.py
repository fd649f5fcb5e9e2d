"""Small source datasets in each real on-disk format, with broken entries, for the data tests.

Images carry coloured dots at their keypoints (`dot_image`), so a test can find a keypoint
in any crop of them. Each writer returns what a build should report: the number of good
examples per split and the reasons it should skip. No tests here; the test_data_* modules
import these helpers.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from animax.smal.constants import KEYPOINT_NAMES

HORSE10_PARTS = (
    "Nose", "Eye", "Nearknee", "Nearfrontfetlock", "Nearfrontfoot", "Offknee",
    "Offfrontfetlock", "Offfrontfoot", "Shoulder", "Midshoulder", "Elbow", "Girth",
    "Wither", "Nearhindhock", "Nearhindfetlock", "Nearhindfoot", "Hip", "Stifle",
    "Offhindhock", "Offhindfetlock", "Offhindfoot", "Ischium",
)
AP10K_KEYPOINTS = (
    "left_eye", "right_eye", "nose", "neck", "root_of_tail", "left_shoulder", "left_elbow",
    "left_front_paw", "right_shoulder", "right_elbow", "right_front_paw", "left_hip", "left_knee",
    "left_back_paw", "right_hip", "right_knee", "right_back_paw",
)


def dot_colors(count):
    """Distinct saturated RGB colours, one per keypoint. [count, 3] uint8."""
    hue = np.arange(count) / count * 6.0
    channels = np.clip(np.abs((hue[:, None] + np.array([0.0, 4.0, 2.0])) % 6.0 - 3.0) - 1.0, 0.0, 1.0)
    return (channels * 255).astype(np.uint8)


def dot_image(width, height, points, radius=3.0, seed=0):
    """uint8 RGB [H, W, 3]: a dim textured background and a dot of colour k at points[k].
    points [K, 2] (NaN = no dot)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(20, 60, (height, width, 3)).astype(np.uint8)
    ys, xs = np.mgrid[0:height, 0:width]
    for color, (x, y) in zip(dot_colors(len(points)), points):
        if np.isfinite(x) and np.isfinite(y):
            image[(xs - x) ** 2 + (ys - y) ** 2 <= radius ** 2] = color
    return image


def find_dot(image, color):
    """Centroid (x, y) of the pixels closest in colour to `color`, in an RGB float image."""
    distance = np.linalg.norm(np.asarray(image, np.float64) - np.asarray(color, np.float64), axis=-1)
    near = distance <= distance.min() + 40.0
    ys, xs = np.nonzero(near)
    return np.array([xs.mean(), ys.mean()])


def save(path, array, fmt=None):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return path


def _horse_points(rng, width, height):
    """22 Horse-10 part positions inside the image. [22, 2]."""
    return np.stack([rng.uniform(20, width - 20, len(HORSE10_PARTS)),
                     rng.uniform(20, height - 20, len(HORSE10_PARTS))], -1).round(2)


def write_dlc_project(root, width=96, height=72):
    """A DeepLabCut project with both CSV layouts, NaN and empty labels, and bad data.

    Videos: horseA (three index columns, 4 frames: one with no label at all, one whose image
    is missing), horseB (one path column with Windows separators, 3 frames: one unreadable
    image), horseC (one path column, 2 good frames), horseD (a broken CSV).
    Returns {"good": 6, "skipped": [reasons...], "points": {frame path: [22, 2] with NaN}}.
    """
    root = Path(root)
    rng = np.random.default_rng(1)
    points = {}

    def frames(video, count):
        out = []
        for i in range(count):
            p = _horse_points(rng, width, height)
            p[rng.choice(len(p), 5, replace=False)] = np.nan        # unlabelled parts
            path = f"labeled-data/{video}/img{i:03d}.png"
            points[path] = p
            save(root / path, dot_image(width, height, p, seed=i))
            out.append((path, p))
        return out

    def header(index_columns):
        pad = [""] * (index_columns - 1)
        return [["scorer", *pad, *["Byron"] * 44],
                ["bodyparts", *pad, *[b for b in HORSE10_PARTS for _ in range(2)]],
                ["coords", *pad, *["x", "y"] * 22]]

    def cells(p):
        # DeepLabCut writes NaN as an empty cell; some exports spell it out.
        return ["" if not np.isfinite(v) else repr(float(v)) for v in p.ravel()]

    a = frames("horseA", 4)
    a[1][1][:] = np.nan                                              # no visible keypoint
    (root / a[2][0]).unlink()                                        # missing image
    with open(root / "labeled-data/horseA/CollectedData_Byron.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerows(header(3))
        for path, p in a:
            w.writerow([*path.split("/"), *cells(p)])

    b = frames("horseB", 3)
    (root / b[2][0]).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")  # unreadable image
    with open(root / "labeled-data/horseB/CollectedData_Byron.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerows(header(1))
        for path, p in b:
            w.writerow([path.replace("/", "\\"), *["nan" if c == "" else c for c in cells(p)]])

    c = frames("horseC", 2)
    with open(root / "labeled-data/horseC/CollectedData_Byron.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerows(header(1))
        for path, p in c:
            w.writerow([path, *cells(p)])

    (root / "labeled-data/horseD").mkdir(parents=True)
    (root / "labeled-data/horseD/CollectedData_Byron.csv").write_text("scorer,Byron\nnot,a,header\n")
    return {"good": 6, "skipped": ["no visible keypoint", "missing file", "unreadable image",
                                   "unreadable label file"], "points": points}


def animal3d_record(rng, index, width, height, **overrides):
    """One AniMer-format record whose 2D keypoints are dots in its image."""
    keypoints = np.stack([rng.uniform(40, width - 40, 26), rng.uniform(40, height - 40, 26),
                          np.ones(26)], -1).round(2)
    keypoints[rng.choice(26, 3, replace=False), 2] = 0.0
    record = {
        "img_path": f"images/{index:04d}.jpg", "mask_path": f"masks/{index:04d}.png",
        "bbox": [30.0, 25.0, width - 60.0, height - 50.0], "keypoint_2d": keypoints.tolist(),
        "keypoint_3d": rng.normal(0, 0.3, (26, 3)).tolist(),
        "pose": rng.normal(0, 0.2, 105).tolist(), "shape": rng.normal(0, 1, 20).tolist(),
        "shape_extra": rng.normal(0, 1, 21).tolist(), "trans": [0.0, 0.1, 9.0],
        "supercategory": int(index % 5),
    }
    record.update(overrides)
    return record


def write_animal3d(root, width=160, height=120):
    """Animal3D-style folder: images/, masks/, train.json (5 good, 5 bad), test.json (2 good)."""
    root = Path(root)
    rng = np.random.default_rng(2)

    def good(i, **overrides):
        r = animal3d_record(rng, i, width, height, **overrides)
        save(root / r["img_path"], dot_image(width, height, np.array(r["keypoint_2d"])[:, :2], seed=i),
             "JPEG")
        mask = np.zeros((height, width), np.uint8)
        mask[30:height - 30, 35:width - 35] = 255
        save(root / r["mask_path"], mask)
        return r

    train = [good(i) for i in range(5)]
    no_visible = good(5)
    for kp in no_visible["keypoint_2d"]:
        kp[2] = 0.0
    nan_pose = good(6)
    nan_pose["pose"][7] = float("nan")
    outside = good(7, bbox=[width + 10.0, 5.0, 40.0, 40.0])
    missing = animal3d_record(rng, 8, width, height)                    # no image on disk
    unreadable = good(9)
    (root / unreadable["img_path"]).write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    train += [no_visible, nan_pose, outside, missing, unreadable]
    (root / "train.json").write_text(json.dumps({"data": train}))   # NaN is written as NaN
    (root / "test.json").write_text(json.dumps({"data": [good(10), good(11)]}))
    return {"good": {"train": 5, "test": 2},
            "skipped": ["no visible keypoint", "NaN or infinite value in pose", "outside the",
                        "missing file", "unreadable image"]}


def write_coco(root, width=128, height=96):
    """AP-10K-style folder: data/*.jpg, annotations/ap10k-{train,val}-split1.json, plus a
    split2 train file that split_index=1 must ignore. train: 4 good, 3 bad annotations."""
    root = Path(root)
    rng = np.random.default_rng(3)
    categories = [{"id": 1, "name": "horse", "supercategory": "Equidae", "keypoints": list(AP10K_KEYPOINTS)},
                  {"id": 2, "name": "dog", "supercategory": "Canidae", "keypoints": list(AP10K_KEYPOINTS)}]

    def split(count, first_id):
        images, annotations = [], []
        for i in range(count):
            image_id = first_id + i
            kp = np.stack([rng.uniform(15, width - 15, 17), rng.uniform(15, height - 15, 17),
                           np.full(17, 2.0)], -1).round(1)
            kp[rng.choice(17, 4, replace=False)] = 0.0                      # v = 0: unlabelled
            file_name = f"{image_id:012d}.jpg"
            save(root / "data" / file_name,
                 dot_image(width, height, np.where(kp[:, 2:] > 0, kp[:, :2], np.nan), seed=image_id), "JPEG")
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            annotations.append({"id": 100 + image_id, "image_id": image_id, "category_id": 1 + i % 2,
                                "keypoints": kp.ravel().tolist(), "num_keypoints": 13,
                                "bbox": [10.0, 8.0, width - 20.0, height - 16.0], "iscrowd": 0})
        return images, annotations

    images, annotations = split(4, 1)
    crowd = dict(annotations[0], id=900, iscrowd=1)
    unlabelled = dict(annotations[1], id=901, keypoints=[0.0] * 51)
    missing_image = dict(annotations[2], id=902, image_id=999)
    images.append({"id": 999, "file_name": "missing.jpg", "width": width, "height": height})
    annotations += [crowd, unlabelled, missing_image]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (root / "annotations/ap10k-train-split1.json").write_text(json.dumps(coco))
    (root / "annotations/ap10k-train-split2.json").write_text(json.dumps(coco))
    val_images, val_annotations = split(2, 50)
    (root / "annotations/ap10k-val-split1.json").write_text(json.dumps(
        {"images": val_images, "annotations": val_annotations, "categories": categories}))
    return {"good": {"train": 4, "validation": 2},
            "skipped": ["crowd annotation", "no visible keypoint", "missing file"]}


def keypoint_index(name):
    return KEYPOINT_NAMES.index(name)
