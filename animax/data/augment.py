"""AniMer's training augmentation and dataset crop: one stored example -> one network input.

The crop is `animax.image.crop.crop` with a dataset recipe (AniMer's `get_example`: the box
centre floored, no blur unless asked, whole grey levels), and the mask rule of its datasets.
Augmentation jitters that crop the way `do_augmentation` draws it and `get_example` applies
it: scale, in-plane rotation, translation of the box, per-channel colour gain, and an optional
horizontal flip. Every annotation follows the warp exactly: 2D keypoints through the same
affine map, 3D keypoints and the global orientation through the matching camera-frame map (a
rotation about the optical axis, times the x flip: AniMer's `keypoint_3d_processing` and
`rot_aa`), and a flip also mirrors the animal (left/right keypoints and joints swap, see
`animax.data.mirror`).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from animax.data.mirror import KEYPOINT_MIRROR, transform_pose
from animax.geometry import CROP_SIZE, axis_angle_to_rotmat
from animax.image.crop import DATASET, apply_affine, crop, dataset_box, invert_affine, square_box
from animax.image.device_warp import plan_warp


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """AniMer's augmentation: its DATASETS.CONFIG (amr/configs_hydra/experiment/default.yaml,
    which both AniMerStage1.yaml and AniMerStage2.yaml take unchanged), as `do_augmentation`
    uses it. Two of its keys do nothing there and have no field here: TRANS_AUG_RATE (0.5; the
    translation is always drawn) and EXTREME_CROP_AUG_RATE (0.0; its extreme crops index human
    keypoints 25.. and cannot run on 26 SMAL keypoints). Flips are off (DO_FLIP False); AniMer's
    flip code would fail if on (`fliplr_params` reads a missing 'translation' key), animax's
    mirrors the animal properly."""
    scale_factor: float = 0.3        # box side x (1 + clip(N(0,1), -1, 1) x this)
    rotation_factor: float = 30.0    # degrees x clip(N(0,1), -2, 2) ...
    rotation_rate: float = 0.6       # ... with this probability, else 0
    translation_factor: float = 0.02  # box centre += unscaled box side x clip(N(0,1), -1, 1) x this, x and y
    color_scale: float = 0.2         # each RGB channel x U(1 - c, 1 + c), clipped to 0..255
    flip_rate: float = 0.0           # probability of a horizontal flip


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """One draw of the augmentation; the default is the plain crop."""
    scale: float = 1.0
    rotation_deg: float = 0.0                 # AniMer's rot (`animax.image.crop.crop_transform`)
    shift: tuple[float, float] = (0.0, 0.0)   # box-centre shift in box sides (x, y): AniMer's tx, ty
    flip: bool = False
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)


def sample_augmentation(rng: np.random.Generator, config: AugmentConfig) -> Augmentation:
    """Draws one augmentation as `do_augmentation` does; the same generator state always gives
    the same draw."""
    shift = np.clip(rng.standard_normal(2), -1.0, 1.0) * config.translation_factor
    scale = 1.0 + np.clip(rng.standard_normal(), -1.0, 1.0) * config.scale_factor
    rotation = np.clip(rng.standard_normal(), -2.0, 2.0) * config.rotation_factor
    rotate = rng.random() < config.rotation_rate
    flip = rng.random() < config.flip_rate
    color = rng.uniform(1.0 - config.color_scale, 1.0 + config.color_scale, 3)
    return Augmentation(scale=float(scale), rotation_deg=float(rotation) if rotate else 0.0,
                        shift=(float(shift[0]), float(shift[1])), flip=bool(flip), color=tuple(color))


def camera_frame_map(dst_from_src) -> np.ndarray:
    """The camera-frame linear map [3, 3] matching an image similarity transform [2, 3]:
    its rotation (and x flip) about the optical axis, scale removed. Rotating the camera
    frame about the optical axis rotates every projection the same way."""
    linear = dst_from_src[:, :2] / np.sqrt(abs(np.linalg.det(dst_from_src[:, :2])))
    out = np.eye(3)
    out[:2, :2] = linear
    return out


def _without_last_channel(array):
    """A contiguous copy of array[..., :-1] for a contiguous float32 [..., 4] array. Copied as
    12-byte items: several times faster than NumPy's strided copy of 3-float rows, and the
    loader's batching then stacks contiguous arrays (another several times faster)."""
    items = np.ndarray((array.size // 4,), dtype="V12", buffer=array, strides=(16,))
    return items.copy().view(np.float32).reshape(array.shape[:-1] + (3,))


def _image_and_mask(pixels, out_size) -> dict:
    """`crop`'s float32 [S, S, C] -> the network input and the mask as AniMer's datasets take it."""
    if pixels.shape[-1] == 4:
        rgb, crop_mask = _without_last_channel(pixels), np.clip(pixels[..., 3], 0.0, 1.0)
        if (crop_mask < 0.5).all():
            crop_mask = np.ones_like(crop_mask)     # AniMer: a mask that lost the animal counts as everywhere
    else:
        rgb, crop_mask = pixels, np.zeros((out_size, out_size), np.float32)
    return {"image": rgb, "mask": crop_mask}


def crop_example(pixels, example, augmentation=Augmentation(), out_size=CROP_SIZE, recipe=DATASET,
                 window_size: int = 0) -> dict:
    """The network input and targets of one example under one augmentation.

    pixels uint8 [H, W, 3] RGB, or [H, W, 4] with the mask (255 = animal) as fourth channel:
    the mask then goes through the same warp (and blur), as AniMer crops its RGBA image.
    example: the stored arrays (`bbox`, `keypoints_2d`, `keypoints_3d`, `pose` axis-angle;
    see animax.data.features). recipe: `animax.image.crop` DATASET (AniMer's training and
    evaluation data) or DATASET_ANTIALIAS (its USE_SKIMAGE_ANTIALIAS); INFERENCE gives what
    inference feeds the model.
    Returns float32 `image [S,S,3]` (ImageNet-normalised), `mask [S,S]` (0..1; zeros without
    a mask; all ones where the cropped mask is everywhere below 0.5, as AniMer's datasets),
    `keypoints_2d [26,3]` (crop-normalised x, y in [-0.5, 0.5] over the crop, and
    confidence), `keypoints_3d [26,4]`, `pose [35,3,3]` rotation matrices, `source_keypoints
    [S,3]` (the source's own keypoints, crop-normalised like keypoints_2d; mirrored by
    `source_mirror`), `zoom` (crop pixels per image pixel).
    window_size > 0: the crop is left to the device (`animax.image.device_warp`): `window`
    uint8 [window_size, window_size, 4], `window_affine` float32 [2, 3], `window_edges` int32
    [2, 2] and `gain` float32 [3] in place of `image` and `mask` (the targets are the same).
    """
    center, size = (dataset_box if recipe.floor_center else square_box)(example["bbox"])
    center = center + np.asarray(augmentation.shift) * size
    size = size * augmentation.scale
    how = dict(rotation_deg=augmentation.rotation_deg, flip=augmentation.flip, gain=augmentation.color,
               out_size=out_size, recipe=recipe)
    if window_size:
        window, src_from_dst = plan_warp(pixels, center, size, window_size=window_size, **how)
        crops = {"window": window.pixels, "window_affine": window.affine, "window_edges": window.edges,
                 "gain": window.gain}
    else:
        pixels, src_from_dst = crop(pixels, center, size, **how)
        crops = _image_and_mask(pixels, out_size)

    dst_from_src = invert_affine(src_from_dst)
    keypoints_2d = np.array(example["keypoints_2d"], np.float32)
    keypoints_2d[:, :2] = apply_affine(dst_from_src, keypoints_2d[:, :2]) / out_size - 0.5
    camera_map = camera_frame_map(dst_from_src)
    keypoints_3d = np.array(example["keypoints_3d"], np.float32)
    keypoints_3d[:, :3] = keypoints_3d[:, :3] @ camera_map.T
    pose = transform_pose(axis_angle_to_rotmat(np.asarray(example["pose"], np.float64), xp=np), camera_map,
                          augmentation.flip)
    source_keypoints = np.array(example.get("source_keypoints", np.zeros((0, 3))), np.float32).reshape(-1, 3)
    source_keypoints[:, :2] = apply_affine(dst_from_src, source_keypoints[:, :2]) / out_size - 0.5
    if augmentation.flip:
        keypoints_2d, keypoints_3d = keypoints_2d[KEYPOINT_MIRROR], keypoints_3d[KEYPOINT_MIRROR]
        source_keypoints = source_keypoints[np.asarray(example.get("source_mirror", []), np.int64)]
    return {
        **crops,
        "keypoints_2d": keypoints_2d,
        "keypoints_3d": keypoints_3d,
        "pose": pose.astype(np.float32),
        "source_keypoints": source_keypoints,
        "zoom": np.float32(out_size / size),    # crop pixels per image pixel
    }
