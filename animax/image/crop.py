"""AniMer's crop: box -> network input, one implementation for training data and inference.

Square box, an optional Gaussian anti-aliasing blur, an affine bilinear warp in OpenCV's
pixel convention with a zero border, RGB, ImageNet normalisation. `crop` chains them; the
training augmentation only chooses its arguments (a scaled, shifted, rotated or flipped box,
a colour gain).

AniMer crops two ways, and each animax path keeps its own (`CropRecipe`):
- INFERENCE (its demo's `ViTDetDataset`): the box centre as given, the whole picture blurred
  with sigma (f - 1) / 2, f = side / 256 / 2, when f > 1.1 (skimage `gaussian`, 4 sigmas).
- DATASET (its `TrainDataset` and `EvaluationDataset`, `get_example`): the centre floored
  (`dataset_box`), no blur (`USE_SKIMAGE_ANTIALIAS` is off), the uint8 RGBA picture warped by
  `cv2.warpAffine`, which returns uint8: whole grey levels. DATASET_ANTIALIAS is the same with
  `USE_SKIMAGE_ANTIALIAS` on: get_example's blur, f = 256 / side (> 1.1 when the box is
  enlarged, as written there), 3 sigmas, the warp then in floats.

All host-side NumPy: it runs in data-loader workers and before the jitted model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import scipy.ndimage

from animax.geometry import CROP_SIZE

IMAGE_MEAN = 255.0 * np.array([0.485, 0.456, 0.406], np.float32)
IMAGE_STD = 255.0 * np.array([0.229, 0.224, 0.225], np.float32)


def square_box(box_xyxy):
    """AniMer's inference box: centre of (x1, y1, x2, y2) and side max(w, h). -> (center [2], size)."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return np.array([(x1 + x2) / 2.0, (y1 + y2) / 2.0]), max(x2 - x1, y2 - y1)


def dataset_box(box_xyxy):
    """AniMer's dataset box (TrainDataset, EvaluationDataset): the centre floored,
    `((x * 2 + w) // 2, (y * 2 + h) // 2)` of the JSON's [x, y, w, h], side max(w, h).
    -> (center [2], size). From the stored float32 corners the sums are exact in float64, so
    the floor is AniMer's wherever the JSON's corners are float32 numbers (integers, halves...)."""
    x1, y1, x2, y2 = (float(v) for v in box_xyxy)
    return np.floor(np.array([x1 + x2, y1 + y2]) / 2.0), max(x2 - x1, y2 - y1)


def crop_transform(center, size, out_size=CROP_SIZE, rotation_deg=0.0, flip=False):
    """2x3 matrix mapping output pixel (x, y) to source pixel coordinates.

    The box centre lands on output pixel (out_size/2, out_size/2), integer coordinates are
    pixel centres (OpenCV's convention). `rotation_deg` is AniMer's `rot`
    (`gen_trans_from_patch_cv`): the output's x axis reads the source along (cos, sin) of it,
    so with rot > 0 the content appears turned counter-clockwise on screen (y down). `flip`
    crops the mirrored picture (AniMer's `generate_image_patch_cv2` flips before cropping):
    without rotation, the output mirrored about its centre.
    """
    scale = size / out_size
    theta = np.deg2rad(rotation_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    # src = center + diag(-1 if flip, 1) @ R(theta) @ (dst - out_size/2) * scale
    sx = -scale if flip else scale
    linear = np.array([[cos * sx, -sin * sx], [sin * scale, cos * scale]])
    offset = np.asarray(center, np.float64) - linear @ np.array([out_size / 2.0, out_size / 2.0])
    return np.concatenate([linear, offset[:, None]], axis=1)


def invert_affine(m):
    """Inverse of a 2x3 affine map (e.g. source -> output pixel coordinates for keypoints)."""
    linear = np.linalg.inv(m[:, :2])
    return np.concatenate([linear, -linear @ m[:, 2:]], axis=1)


def apply_affine(m, points):
    """points [..., 2] -> m[:, :2] @ p + m[:, 2]."""
    return np.asarray(points) @ m[:, :2].T + m[:, 2]


def antialias_sigma(size, out_size=CROP_SIZE):
    """AniMer's demo blur before downsampling: sigma = (f - 1) / 2 with f = size / out_size / 2, if f > 1.1."""
    f = size / out_size / 2.0
    return (f - 1.0) / 2.0 if f > 1.1 else 0.0


def dataset_antialias_sigma(size, out_size=CROP_SIZE):
    """get_example's blur with USE_SKIMAGE_ANTIALIAS: f = out_size / size (the patch over the
    scaled box, as written there: above 1.1 when the crop enlarges), sigma = (f - 1) / 2 if f > 1.1."""
    f = out_size / size
    return (f - 1.0) / 2.0 if f > 1.1 else 0.0


def no_blur(size, out_size=CROP_SIZE):
    return 0.0


@dataclasses.dataclass(frozen=True)
class CropRecipe:
    """How one of AniMer's paths makes its crop (see the module docstring)."""
    sigma: Callable[[float, int], float]  # the blur's sigma from the (scaled) box side and out_size; 0 = none
    truncate: float                       # the blur's radius in sigmas
    floor_center: bool                    # the box centre floored (`dataset_box`) instead of exact
    whole_grey_levels: bool               # an unblurred warp rounded half up, as cv2 warps uint8 to uint8


INFERENCE = CropRecipe(antialias_sigma, 4.0, floor_center=False, whole_grey_levels=False)
DATASET = CropRecipe(no_blur, 3.0, floor_center=True, whole_grey_levels=True)
DATASET_ANTIALIAS = CropRecipe(dataset_antialias_sigma, 3.0, floor_center=True, whole_grey_levels=True)


def after_reduction(recipe: CropRecipe, factor: int) -> CropRecipe:
    """`recipe` for a picture already shrunk `factor` times by block averaging (a reduced JPEG
    decode, `animax.image.io.load_reduced`): the blur left to reach the full picture's, in the
    shrunk picture's pixels. A factor-pixel box average has variance (factor^2 - 1) / 12 pixels^2,
    and Gaussian variances add."""
    if factor == 1:
        return recipe

    def sigma(size, out_size):
        full = recipe.sigma(size * factor, out_size)
        return math.sqrt(max(full ** 2 - (factor ** 2 - 1) / 12.0, 0.0)) / factor

    return dataclasses.replace(recipe, sigma=sigma)


# Kernel weight, out of 1, that a blur may leave out: at most 255e-6 of a grey level anywhere.
NEGLIGIBLE_BLUR = 1e-6


def blur_is_negligible(sigma, truncate=4.0) -> bool:
    """Whether the Gaussian blur (skimage/scipy kernel: `truncate` sigmas, normalised) puts less
    than NEGLIGIBLE_BLUR of its weight off the centre tap. A 640-pixel box (sigma 0.125) has side
    taps of 1.3e-14: its blur is the identity in float32, and skipping it saves a float copy and
    a filter pass over the whole window."""
    if sigma <= 0:
        return True
    radius = int(truncate * sigma + 0.5)
    weights = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return bool(1.0 - weights[radius] / weights.sum() < NEGLIGIBLE_BLUR)


def warp_affine(image, src_from_dst, out_size=CROP_SIZE, sigma=0.0, truncate=4.0):
    """Bilinear affine warp with a constant-zero border. image [H, W, C] -> float32 [out, out, C].

    src_from_dst: 2x3 matrix from output pixel to source pixel coordinates.
    sigma > 0 first Gaussian-blurs the source (skimage `gaussian` semantics: mode 'nearest',
    `truncate` radii). Only the window the warp reads is blurred, with enough margin that the
    result equals blurring the whole image.
    """
    image = np.asarray(image)
    height, width = image.shape[:2]
    channels = image.shape[2] if image.ndim == 3 else 1
    image = image.reshape(height, width, channels)
    # Source coordinates of every output pixel, [out, out] each, as broadcast outer sums.
    cols = np.arange(out_size, dtype=np.float64)
    rows = cols[:, None]
    src_x = src_from_dst[0, 0] * cols + src_from_dst[0, 1] * rows + src_from_dst[0, 2]
    src_y = src_from_dst[1, 0] * cols + src_from_dst[1, 1] * rows + src_from_dst[1, 2]
    if blur_is_negligible(sigma, truncate):
        # The taps read the source image directly: no copy, no conversion of unread pixels.
        return _bilinear(image, src_x, src_y)

    # The window of source pixels the bilinear taps can touch, plus the blur radius.
    radius = int(truncate * sigma + 0.5)
    x0 = max(int(np.floor(src_x.min())) - radius, 0)
    y0 = max(int(np.floor(src_y.min())) - radius, 0)
    x1 = min(int(np.floor(src_x.max())) + 2 + radius, width)
    y1 = min(int(np.floor(src_y.max())) + 2 + radius, height)
    if x1 <= x0 or y1 <= y0:
        return np.zeros((out_size, out_size, channels), np.float32)
    # 'nearest' padding at a window edge inside the image only touches pixels within
    # `radius` of it, which the margin keeps out of reach of the taps.
    window = scipy.ndimage.gaussian_filter(image[y0:y1, x0:x1].astype(np.float32),
                                           sigma=(sigma, sigma, 0), mode="nearest",
                                           truncate=truncate)
    return _bilinear(window, src_x - x0, src_y - y0)


def _bilinear(image, x, y):
    """Bilinear samples of image [h, w, C] at float coordinates x, y [...], 0 outside. -> float32 [..., C].

    Each tap is one flat gather of whole pixels: in a data loader this runs per example, and
    row gathers are several times faster than 2-D fancy indexing or padding a copy of the
    image. Taps combine along x, then along y, with each weight repeated per channel:
    same-shape products run several times faster in NumPy than a weight broadcast over a
    short channel axis.
    """
    h, w, channels = image.shape
    x0 = np.floor(x).ravel()
    y0 = np.floor(y).ravel()
    # Fractions in float64 (exact for any source coordinate), weights in float32 like the result.
    fx = (x.ravel() - x0).astype(np.float32)
    fy = (y.ravel() - y0).astype(np.float32)
    x0 = x0.astype(np.intp)
    y0 = y0.astype(np.intp)

    def per_channel(weight):
        return np.stack([weight] * channels, axis=1)

    # Tap weights per axis, zero for taps outside the image (the constant-zero border), so
    # every tap index can then be clamped into the image.
    one = np.float32(1.0)
    weight_left = per_channel((one - fx) * ((x0 >= 0) & (x0 < w)))
    weight_right = per_channel(fx * ((x0 >= -1) & (x0 < w - 1)))
    weights_y = (per_channel((one - fy) * ((y0 >= 0) & (y0 < h))), per_channel(fy * ((y0 >= -1) & (y0 < h - 1))))
    left, right = np.clip(x0, 0, w - 1), np.clip(x0 + 1, 0, w - 1)
    tap_rows = (np.clip(y0, 0, h - 1) * w, np.clip(y0 + 1, 0, h - 1) * w)
    pixels = image.reshape(h * w, channels)
    out = None
    for row, weight_y in zip(tap_rows, weights_y):
        line = np.take(pixels, row + left, axis=0) * weight_left
        line += np.take(pixels, row + right, axis=0) * weight_right
        line *= weight_y
        if out is None:
            out = line
        else:
            out += line
    return out.astype(np.float32, copy=False).reshape(x.shape + (channels,))


def normalize(crop, gain=(1.0, 1.0, 1.0)):
    """0..255 pixels [..., W, C] -> float32: RGB (the first three channels) times a per-channel
    `gain` (AniMer's colour augmentation), clipped to 255, ImageNet-normalised; a fourth
    channel (a mask) maps 0..255 to 0..1.

    One multiply-add and one clip over rows of W * C values: per-channel constants tiled
    along a row run several times faster than broadcast over a 3- or 4-long channel axis.
    """
    crop = np.ascontiguousarray(crop, np.float32)
    width, channels = crop.shape[-2:]
    # min(x * g, 255) normalised is min(x * g / std - mean / std, (255 - mean) / std): std > 0.
    scale = np.append(np.asarray(gain, np.float32) / IMAGE_STD, np.float32(1.0 / 255.0))[:channels]
    offset = np.append(-IMAGE_MEAN / IMAGE_STD, np.float32(0.0))[:channels]
    top = np.append((255.0 - IMAGE_MEAN) / IMAGE_STD, np.float32(1.0))[:channels]
    out = crop.reshape(crop.shape[:-2] + (width * channels,)) * np.tile(scale, width)
    out += np.tile(offset, width)
    np.minimum(out, np.tile(top, width), out=out)
    return out.reshape(crop.shape)


def crop(image, center, size, *, rotation_deg=0.0, flip=False, gain=(1.0, 1.0, 1.0), out_size=CROP_SIZE,
         recipe=INFERENCE):
    """AniMer's crop of the square box (center [2], size: already the recipe's box) of `image`
    uint8 [H, W, C].

    rotation_deg, flip: AniMer's rotation / mirrored picture (`crop_transform`); gain: the
    per-channel colour gain of `normalize`; recipe: INFERENCE (the demo's blur) or a DATASET one.
    C = 4 carries a mask through the same warp and blur.
    Returns (normalised crop float32 [out, out, C], src_from_dst [2, 3] output -> source pixels).
    """
    src_from_dst = crop_transform(center, size, out_size, rotation_deg, flip)
    sigma = recipe.sigma(size, out_size)
    pixels = warp_affine(image, src_from_dst, out_size, sigma=sigma, truncate=recipe.truncate)
    if recipe.whole_grey_levels and sigma == 0:
        # cv2's fixed-point bilinear rounds half up: (sum + 2^14) >> 15.
        pixels = np.floor(pixels + np.float32(0.5), out=pixels)
    return normalize(pixels, gain), src_from_dst
