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

from animax.image import device_crop
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
