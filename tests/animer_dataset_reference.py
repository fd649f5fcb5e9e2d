"""AniMer's dataset examples rebuilt independently (test-only): what its `TrainDataset` /
`EvaluationDataset` (amr/datasets/datasets.py) feed the network for one Animal3D-format record,
with the upstream kernel (cv2.warpAffine) and plain NumPy, from the facts of
amr/datasets/utils.py (`get_example`, `do_augmentation`, `gen_trans_from_patch_cv`,
`keypoint_3d_processing`, `rot_aa`); no animax code.

- box: centre `((x * 2 + w) // 2, (y * 2 + h) // 2)` of the JSON's [x, y, w, h], side max(w, h);
- augmentation: centre += side * (tx, ty); side *= scale; the crop's affine from three point
  pairs in float32 (centre -> (128, 128), centre + R(rot) (0, side / 2) -> (128, 256),
  centre + R(rot) (side / 2, 0) -> (256, 128));
- the uint8 RGBA picture (mask as alpha) warped bilinearly with a zero border, uint8 out;
- RGB x colour gain, clipped to 0..255, minus 255 x mean, over 255 x std;
- mask: alpha / 255 clipped to [0, 1], all ones when everywhere below 0.5;
- 2D keypoints through the affine, / 256 - 0.5; 3D keypoints and the global orientation turned
  by R(-rot) about the optical axis.
"""

from __future__ import annotations

import cv2
import numpy as np

MEAN = 255.0 * np.array([0.485, 0.456, 0.406])
STD = 255.0 * np.array([0.229, 0.224, 0.225])
PATCH = 256


def animer_box(bbox_xywh):
    x, y, w, h = bbox_xywh
    return np.array([(x * 2 + w) // 2, (y * 2 + h) // 2], np.float64), max(w, h)


def animer_affine(center, side, scale=1.0, rot=0.0):
    """Image -> patch 2x3 affine as AniMer builds it (float32 point pairs, cv2 solve)."""
    side = side * scale
    r = np.pi * rot / 180.0
    sn, cs = np.sin(r), np.cos(r)
    down = np.array([-side / 2 * sn, side / 2 * cs], np.float32)
    right = np.array([side / 2 * cs, side / 2 * sn], np.float32)
    src = np.float32([center, center + down, center + right])
    half = PATCH / 2
    dst = np.float32([[half, half], [half, PATCH], [PATCH, half]])
    return cv2.getAffineTransform(src, dst)


def z_rotation(rot):
    """AniMer's in-plane rotation of 3D points and the global orientation: R(-rot) about z."""
    r = np.deg2rad(-rot)
    return np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])


def animer_example(rgb, mask, record, scale=1.0, rot=0.0, tx=0.0, ty=0.0, color=(1.0, 1.0, 1.0)):
    """rgb uint8 [H, W, 3], mask uint8 [H, W], record: the JSON record's `bbox`, `keypoint_2d`,
    optional `keypoint_3d` and `pose`. Returns img [256, 256, 3] normalised (HWC), mask [256, 256],
    keypoints_2d [26, 3], keypoints_3d [26, 4], global_orient [3, 3], affine [2, 3]."""
    center, side = animer_box(record["bbox"])
    center = center + side * np.array([tx, ty])
    affine = animer_affine(center, side, scale, rot)
    rgba = np.concatenate([rgb, mask[..., None]], axis=2)
    patch = cv2.warpAffine(rgba, affine, (PATCH, PATCH), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    img = patch[..., :3].astype(np.float32)
    img = (np.clip(img * np.float32(color), 0, 255) - MEAN) / STD
    mask_patch = np.clip(patch[..., 3] / 255.0, 0, 1)
    if (mask_patch < 0.5).all():
        mask_patch = np.ones_like(mask_patch)
    keypoints_2d = np.array(record["keypoint_2d"], np.float64).reshape(-1, 3)
    keypoints_2d[:, :2] = (keypoints_2d[:, :2] @ affine[:, :2].T + affine[:, 2]) / PATCH - 0.5
    turn = z_rotation(rot)
    keypoints_3d = np.zeros((len(keypoints_2d), 4))
    if record.get("keypoint_3d") is not None:
        keypoints_3d[:, :3] = np.asarray(record["keypoint_3d"], np.float64) @ turn.T
        keypoints_3d[:, 3] = 1.0
    global_orient = np.eye(3)
    if record.get("pose") is not None:
        global_orient = turn @ cv2.Rodrigues(np.asarray(record["pose"][:3], np.float64))[0]
    return {"img": img, "mask": mask_patch, "keypoints_2d": keypoints_2d, "keypoints_3d": keypoints_3d,
            "global_orient": global_orient, "affine": affine, "patch": patch}


def warp_error_bound(image):
    """How far cv2's uint8 bilinear warp can be from exact bilinear sampling rounded half up (what
    animax's dataset crop makes), in grey levels. cv2 reads the source at coordinates rounded to
    1/32 pixel (INTER_BITS 5: off by <= 1/64 per axis, plus the 1/1024 rounding of its affine
    steps) with 15-bit weights: its sum is within e = the largest step between neighbouring
    pixels x 2 (1/64 + 1/1024) + 255 x 2^-14 of the exact value. Both then round to whole grey
    levels, which can part two values less than 1 apart by one level: the bound is 1 + floor(e),
    one grey level for pictures whose neighbours differ by less than ~30 levels."""
    image = np.asarray(image, np.float64)
    step = max(np.abs(np.diff(image, axis=0)).max(), np.abs(np.diff(image, axis=1)).max())
    return 1.0 + np.floor(2 * step * (1 / 64 + 1 / 1024) + 255 * 2.0 ** -14)
