"""The crop on the device (animax.image.device_crop) equals the host crop (animax.image.crop)
within float32 rounding, for every recipe, on awkward boxes.

The bound, for grey levels in [0, 255] (U = 2^-24, one float32 rounding):
- host: scipy's blur sums in float64 and rounds once (U); `_bilinear` rounds 2 products, 1 sum,
  1 product, 1 sum per pixel (about 5U); so <= 6U x 255.
- device: each band entry is a float32 kernel tap (U) times a weight (U), two of them summed
  (U); each of the two banded products sums T = 2R + 2 = 14 terms (13U, plus U for each
  product); so <= 3U + 2 x 14U = 31U x 255 with a blur, 6U x 255 without (unit kernel, every
  entry exact).
Together 37U x 255; the test allows 64U x 255 = 9.7e-4 grey levels. Normalised values (divided
by 255 x std >= 57.1, then two float32 operations on values below 5) add 20U.
Whole grey levels (DATASET): equal, except a pixel whose unrounded host value lies within the
bound of a half level may round the other way (one level).
"""

import jax
import numpy as np
import pytest

from animax.image import device_crop, device_warp
from animax.image.crop import DATASET, IMAGE_STD, INFERENCE, crop, crop_transform, dataset_box, square_box, warp_affine
from helpers.nn_reference import U

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32

GREY_BOUND = 64 * U * 255
NORMALISED_BOUND = GREY_BOUND / IMAGE_STD.min() + 20 * U

_grey = jax.jit(device_crop.grey_levels, static_argnames="radius")
_crop = jax.jit(device_crop.crop_windows, static_argnames="radius")


def noise(height, width, seed=0):
    """Uniform noise: every tap weight shows in the result (the hardest case for equality)."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def batch_of(windows):
    shape = tuple(device_crop.bucket(max(w.shape[axis] for w in windows)) for axis in (0, 1))
    batch = device_crop.WindowBatch(len(windows), shape)
    for k, window in enumerate(windows):
        batch.fill(k, window)
    return batch.arrays()


def device_grey(windows, radius=device_crop.KERNEL_RADIUS):
    arrays = batch_of(windows)
    arrays.pop("gain")
    return np.asarray(_grey(**arrays, radius=radius))


def host_grey(image, center, size, recipe, flip=False):
    """`crop`'s pixels before normalisation (and its rounding when the recipe has it)."""
    transform = crop_transform(center, size, flip=flip)
    sigma = recipe.sigma(size, 256)
    pixels = warp_affine(image, transform, sigma=sigma, truncate=recipe.truncate)
    return np.floor(pixels + np.float32(0.5)) if recipe.whole_grey_levels and sigma == 0 else pixels


IMAGE = noise(1300, 1700)
# Odd corners, boxes past each border, tiny and huge boxes; 1000 and 1900 pixels are blurred
# (INFERENCE: sigma 0.48 and 1.36), the 1900-pixel one reaching past every border (its window,
# the whole 1300 x 1700 picture, fills the (1536, 2048) bucket).
BOXES = [(100.3, 50.7, 1100.1, 850.9), (-40, 700, 160, 950), (1150.5, -30.25, 1290, 60), (600, 400, 603, 401.5),
         (0, 0, 1200, 900), (-100, -300, 1800, 1600), (311.1, 222.2, 333.3, 777.7)]


@pytest.mark.parametrize("recipe", [INFERENCE, DATASET], ids=["inference", "dataset"])
def test_device_crop_equals_the_host_crop(recipe):
    make_box = dataset_box if recipe.floor_center else square_box
    boxes = [make_box(box) for box in BOXES]
    windows = [device_crop.plan_window(IMAGE, center, size, recipe=recipe) for center, size in boxes]
    assert max(max(w.shape) for w in windows) > 1536          # the largest bucket is served
    assert any(w.kernel[device_crop.KERNEL_RADIUS] < 1 for w in windows) == (recipe is INFERENCE)
    got = device_grey(windows)
    for k, (center, size) in enumerate(boxes):
        expected = host_grey(IMAGE, center, size, recipe)
        if recipe.whole_grey_levels:
            unrounded = warp_affine(IMAGE, crop_transform(center, size))     # DATASET does not blur
            near_half = np.abs(unrounded - np.floor(unrounded) - 0.5) <= GREY_BOUND
            differ = got[k] != expected
            assert (np.abs(got[k] - expected)[differ] == 1).all() and near_half[differ].all(), BOXES[k]
        else:
            assert np.abs(got[k] - expected).max() <= GREY_BOUND, BOXES[k]
    # Batches without blur take the 2-tap band (what the Predictor picks): the same sums less
    # zero terms (XLA may fuse them into other roundings: within the bound, not bitwise).
    unblurred = [w for w in windows if device_crop.batch_radius(w.kernel[None]) == 0]
    assert unblurred and device_crop.batch_radius(np.stack([w.kernel for w in windows])) == (
        device_crop.KERNEL_RADIUS if recipe is INFERENCE else 0)
    if not recipe.whole_grey_levels:
        assert np.abs(device_grey(unblurred, radius=0) - device_grey(unblurred)).max() <= GREY_BOUND


def test_flips_gains_and_normalisation_match():
    rng = np.random.default_rng(1)
    boxes = [square_box(b) for b in BOXES[:4]]
    gains = rng.uniform(0.8, 1.2, (len(boxes), 3)).astype(np.float32)
    windows = [device_crop.plan_window(IMAGE, c, s, recipe=INFERENCE, flip=True, gain=g)
               for (c, s), g in zip(boxes, gains)]
    got = np.asarray(_crop(**batch_of(windows)))
    for k, (center, size) in enumerate(boxes):
        expected, _ = crop(IMAGE, center, size, flip=True, gain=gains[k], recipe=INFERENCE)
        assert np.abs(got[k] - expected).max() <= NORMALISED_BOUND, BOXES[k]


def test_the_bound_catches_a_half_pixel_shift_and_a_missing_blur():
    """The comparison can fail: a crop half a pixel off, or unblurred, is far outside the bound."""
    center, size = square_box(BOXES[0])
    expected = host_grey(IMAGE, center, size, INFERENCE)
    shifted = device_crop.plan_window(IMAGE, center + 0.5, size, recipe=INFERENCE)
    unblurred = device_crop.plan_window(IMAGE, center, size, recipe=DATASET)
    for window in (shifted, unblurred):
        assert np.abs(device_grey([window])[0] - expected).max() > 1000 * GREY_BOUND


def test_windows_beyond_the_largest_bucket_are_cropped_on_the_host_in_whole_grey_levels():
    image = noise(2200, 2300, seed=2)
    center, size = square_box((0, 0, 2300, 2200))              # a 2300-pixel window: past 2048
    window = device_crop.plan_window(image, center, size, recipe=INFERENCE)
    assert window.shape == (256, 256)
    got = device_grey([window])[0]
    assert np.abs(got - host_grey(image, center, size, INFERENCE)).max() <= 0.5 + GREY_BOUND


def test_buckets_and_flops():
    assert device_crop.bucket(480) == 512 and device_crop.bucket(640) == 768 and device_crop.bucket(1) == 256
    with pytest.raises(ValueError):
        device_crop.bucket(2049)
    # A whole 640 x 480 picture: 2.3 MFLOP as a band, 0.8 GFLOP (0.3% of ViT-H's 249.3 GFLOP) as
    # dense products; the widest blur in the largest bucket 50 MFLOP (0.02%).
    assert device_crop.crop_flops((512, 768)) == 2 * 2 * 3 * 256 * (512 + 256)
    assert device_crop.dense_crop_flops((512, 768)) / 249.3e9 < 0.004
    assert device_crop.crop_flops((2048, 2048), device_crop.KERNEL_RADIUS) / 249.3e9 < 2.5e-4


# ---- The rotated crop of the training and evaluation loaders (animax.image.device_warp).
#
# The bound. The device computes each source coordinate in float32 from the window map
# (`to_window`: offsets from the crop's centre, window coordinates), each term and partial sum
# below the window side N: the map's two float32 entries and the offset (3 roundings), two
# products and two sums (4), so within 7 U N pixels of the host's float64 coordinate. A bilinear
# value moves at most 255 grey levels per pixel along each axis: 2 x 7 U N x 255. The weights
# and the tap sums add the host's ~6 U and the device's ~6 U (x 255, as above).
# N = 512: 0.11 grey levels (measured: 0.006 on noise). Whole grey levels (cv2's rounding) are
# then equal except where the host's value lies within that of a half level: one level apart.
WINDOW = 512
WARP_BOUND = (14 * WINDOW + 12) * U * 255
RGBA = np.concatenate([noise(400, 500, seed=3), noise(400, 500, seed=4)[..., :1]], axis=-1)
# Odd corners, boxes past each border, a tiny box, one larger than the picture.
WARP_BOXES = [(100.3, 50.7, 300.1, 250.9), (-40, 200, 160, 350), (450.5, -30.25, 490, 60), (200, 100, 203, 101.5),
              (-100, -100, 600, 500)]

_warp = jax.jit(device_warp.warp_grey_levels, static_argnames=("out_size", "whole_grey_levels"))
_warp_windows = jax.jit(device_warp.warp_windows, static_argnames=("out_size", "whole_grey_levels"))


def stacked(windows):
    return {name: np.stack([getattr(w, name) for w in windows]) for name in ("pixels", "affine", "edges", "gain")}


def assert_whole_levels_match(got, expected, unrounded, bound):
    """got and expected whole grey levels: equal, or one level apart where the host's unrounded
    value lies within `bound` of a half level; such pixels rare."""
    differ = got != expected
    near_half = np.abs(unrounded - np.floor(unrounded) - 0.5) <= bound
    assert (np.abs(got - expected)[differ] == 1).all() and near_half[differ].all()
    assert differ.mean() < 1e-3


@pytest.mark.parametrize("rotation, flip", [(0.0, False), (60.0, True), (-60.0, False), (17.3, True)])
def test_the_rotated_device_crop_equals_the_dataset_crop(rotation, flip):
    boxes = [dataset_box(box) for box in WARP_BOXES]
    windows = [device_warp.plan_warp(RGBA, c, s, rotation_deg=rotation, flip=flip, window_size=WINDOW)[0]
               for c, s in boxes]
    assert all(np.any(w.affine != np.float32([[1, 0, 128], [0, 1, 128]])) for w in windows)  # none on the host
    arrays = stacked(windows)
    rounded = np.asarray(_warp(arrays["pixels"], arrays["affine"], arrays["edges"]))
    exact = np.asarray(_warp(arrays["pixels"], arrays["affine"], arrays["edges"], whole_grey_levels=False))
    for k, (center, size) in enumerate(boxes):
        unrounded = warp_affine(RGBA, crop_transform(center, size, rotation_deg=rotation, flip=flip))
        assert np.abs(exact[k] - unrounded).max() <= WARP_BOUND, WARP_BOXES[k]
        assert_whole_levels_match(rounded[k], np.floor(unrounded + np.float32(0.5)), unrounded, WARP_BOUND)
    # The comparison can fail: half a pixel off is far outside the bound.
    center, size = boxes[0]
    shifted = device_warp.plan_warp(RGBA, center + 0.5, size, rotation_deg=rotation, flip=flip, window_size=WINDOW)
    arrays = stacked([shifted[0]] * len(boxes))
    moved = np.asarray(_warp(arrays["pixels"], arrays["affine"], arrays["edges"], whole_grey_levels=False))[0]
    assert np.abs(moved - warp_affine(RGBA, shifted[1] - [[0, 0, 0.5], [0, 0, 0.5]])).max() > 1000 * WARP_BOUND


def example_of(box):
    return {"bbox": np.asarray(box, np.float32), "keypoints_2d": np.zeros((26, 3)), "keypoints_3d": np.zeros((26, 4)),
            "pose": np.zeros((35, 3))}


def test_the_device_crop_makes_crop_examples_image_and_mask():
    """Colour gains, the clip at 255, normalisation, the mask (0..1, all ones where the crop lost
    the animal, zeros without one), rotations and flips: `warp_windows` as `crop_example`."""
    from animax.data.augment import Augmentation, crop_example

    rng = np.random.default_rng(5)
    rgb_only = RGBA[..., :3]
    lost = RGBA.copy()
    lost[..., 3] = 40                                    # everywhere below half: the mask becomes all ones
    rows = [(RGBA, WARP_BOXES[0], 30.0, False), (RGBA, WARP_BOXES[1], -60.0, True), (lost, WARP_BOXES[2], 0.0, False),
            (rgb_only, WARP_BOXES[3], 45.0, True), (RGBA, WARP_BOXES[4], 0.0, True)]
    augmentations = [Augmentation(rotation_deg=r, flip=f, color=tuple(rng.uniform(0.8, 1.2, 3))) for *_, r, f in rows]
    host = [crop_example(p, example_of(b), a) for (p, b, *_), a in zip(rows, augmentations)]
    device = [crop_example(p, example_of(b), a, window_size=WINDOW) for (p, b, *_), a in zip(rows, augmentations)]
    for h, d in zip(host, device):
        for key in ("keypoints_2d", "keypoints_3d", "pose", "zoom"):
            np.testing.assert_array_equal(h[key], d[key])
    has_mask = np.array([p.shape[-1] == 4 for p, *_ in rows], np.float32)
    image, mask = jax.device_get(_warp_windows(*(np.stack([d[k] for d in device]) for k in
                                                 ("window", "window_affine", "window_edges", "gain")), has_mask))
    for k, h in enumerate(host):
        # A pixel one grey level off (`assert_whole_levels_match`) moves by gain / std after normalisation.
        step = np.maximum(augmentations[k].color / IMAGE_STD, 0) + NORMALISED_BOUND
        image_diff = np.abs(image[k] - h["image"])
        assert (image_diff <= step).all() and (image_diff > NORMALISED_BOUND).mean() < 3e-3, k
        mask_diff = np.abs(mask[k] - h["mask"])
        assert (mask_diff <= 1 / 255 + 4 * U).all() and (mask_diff > 4 * U).mean() < 1e-3, k
    assert (mask[2] == 1).all() and (mask[3] == 0).all() and 0 < mask[0].mean() < 1


def test_regions_past_the_window_and_blurred_recipes_are_cropped_on_the_host():
    """Sent as an identity window of whole grey levels: exact for DATASET (whole levels anyway),
    within half a level of DATASET_ANTIALIAS's blurred float crop."""
    from animax.image.crop import DATASET_ANTIALIAS

    out, window = 64, 128
    big = dataset_box(WARP_BOXES[0])                       # 200 pixels of picture: past 128
    small = dataset_box((200, 100, 240, 140))              # 40 pixels: enlarged, so DATASET_ANTIALIAS blurs
    rows = [(big, DATASET, 25.0), (small, DATASET_ANTIALIAS, -10.0), (small, DATASET, -10.0)]
    windows = [device_warp.plan_warp(RGBA, c, s, rotation_deg=r, recipe=recipe, out_size=out, window_size=window)[0]
               for (c, s), recipe, r in rows]
    assert [np.array_equal(w.affine, np.float32([[1, 0, 32], [0, 1, 32]])) for w in windows] == [True, True, False]
    arrays = stacked(windows)
    got = np.asarray(_warp(arrays["pixels"], arrays["affine"], arrays["edges"], out_size=out))
    for k, ((center, size), recipe, rotation) in enumerate(rows):
        transform = crop_transform(center, size, out, rotation)
        sigma = recipe.sigma(size, out)
        expected = warp_affine(RGBA, transform, out, sigma=sigma, truncate=recipe.truncate)
        if sigma == 0:
            assert_whole_levels_match(got[k], np.floor(expected + np.float32(0.5)), expected, WARP_BOUND)
        else:
            assert sigma > 0 and np.abs(got[k] - expected).max() <= 0.5 + GREY_BOUND
    assert np.array_equal(got[0], np.floor(warp_affine(RGBA, crop_transform(*big, out, 25.0), out) + np.float32(0.5)))


def test_warp_flops():
    # 4 taps x 4 channels x 2 FLOPs per output pixel: 2.1 MFLOP, under 1e-5 of ViT-H's 249.3 GFLOP.
    assert device_warp.warp_flops() == 2 * 4 * 4 * 256 * 256
    assert device_warp.warp_flops() / 249.3e9 < 1e-5


def test_the_rotated_device_crop_without_rounding_equals_the_float_crop():
    """whole_grey_levels=False: normalised floats within the bound, divided by the normalisation's
    std (times the gain), against `crop` without rounding (INFERENCE's, no blur below 563 px)."""
    rng = np.random.default_rng(6)
    boxes = [square_box(box) for box in WARP_BOXES[:4]]
    rotations, gains = rng.uniform(-60, 60, len(boxes)), rng.uniform(0.8, 1.2, (len(boxes), 3)).astype(np.float32)
    windows = [device_warp.plan_warp(RGBA, c, s, rotation_deg=r, flip=True, gain=g, window_size=WINDOW)[0]
               for (c, s), r, g in zip(boxes, rotations, gains)]
    arrays = stacked(windows)
    image, mask = jax.device_get(_warp_windows(arrays["pixels"], arrays["affine"], arrays["edges"], arrays["gain"],
                                               np.ones(len(boxes), np.float32), whole_grey_levels=False))
    for k, (center, size) in enumerate(boxes):
        expected, _ = crop(RGBA, center, size, rotation_deg=rotations[k], flip=True, gain=gains[k], recipe=INFERENCE)
        assert INFERENCE.sigma(size, 256) == 0
        assert np.abs(image[k] - expected[..., :3]).max() <= (WARP_BOUND * gains[k] / IMAGE_STD + 20 * U).max()
        np.testing.assert_allclose(mask[k], expected[..., 3], atol=WARP_BOUND / 255 + 4 * U, rtol=0)
