"""AniMer's dataset crop inside the jitted step, rotations included: the host sends a uint8
window and the crop's affine map, the device gathers the bilinear taps.

`animax.image.device_crop` moves inference's crop with separable banded products; training
rotates 60% of its crops (AniMer's rotation_rate), and a rotated bilinear warp reads each
output pixel's four taps from anywhere in the window: a gather. This module serves the
training and evaluation loaders (`animax.data.loader`, device_crop on), whose crop is AniMer's
datasets' (`animax.image.crop.DATASET`: no blur, whole grey levels); `crop` stays the reference
and tests/test_device_crop.py bounds the difference (float32 coordinates on the device).

Host (`plan_warp`, no pixel computed): the crop's map (`crop_transform`, rotation and flip
included); the source region its taps can reach, clipped to the image, copied into a fixed
window_size^2 x 4 window (all rows of a loader share one shape; the fourth channel is the mask,
zero without one); the map in window coordinates (`to_window`, float64 there, so the device's
float32 coordinates stay small); the image's edges in window coordinates: taps outside the
image weigh zero, as `warp_affine`'s zero border, and the window's padding lies outside them,
so it never leaks in.
Device (`warp_windows`): per output pixel its source coordinates, the four taps gathered and
weighted as `_bilinear` weighs them, rounded half up to whole grey levels (cv2's uint8 warp),
then the colour gain, the clip and ImageNet normalisation (`device_crop.normalize`), and the
mask as AniMer's datasets take it (0..1; all ones where the crop lost the animal).

Falls back to the host crop, sent as an identity window in whole grey levels (exact for a
recipe that rounds): regions larger than the window (only in pictures larger than it: a box over
window_size / 1.3 pixels scaled 1.3x, over window_size / 1.84 if also turned 45 degrees) and
blurred recipes (DATASET_ANTIALIAS, off in AniMer: within half a grey level of its float crop).
Cost: 4 taps x C channels x 2 FLOPs per output pixel and ~10 index operations: 2.1 MFLOP a crop
(`warp_flops`), under 1e-5 of ViT-H's 249 GFLOP.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from animax.geometry import CROP_SIZE
from animax.image.crop import DATASET, CropRecipe, crop_transform
from animax.image.device_crop import host_grey_levels, normalize

# Window side of the training and evaluation loaders: Animal3D's pictures are a few hundred pixels.
WINDOW_SIZE = 512
CHANNELS = 4    # RGB and the mask


@dataclasses.dataclass(frozen=True)
class WarpWindow:
    """One crop's device inputs. pixels uint8 [window_size, window_size, 4]; affine float32
    [2, 3]: offsets from the output's centre pixel -> window pixel coordinates (`to_window`);
    edges int32 [2, 2]: the image's first and last pixel in window coordinates, (x_first,
    x_last), (y_first, y_last); gain float32 [3]."""
    pixels: np.ndarray
    affine: np.ndarray
    edges: np.ndarray
    gain: np.ndarray


def plan_warp(image, center, size, *, rotation_deg=0.0, flip=False, gain=(1.0, 1.0, 1.0), out_size=CROP_SIZE,
              recipe: CropRecipe = DATASET, window_size=WINDOW_SIZE):
    """The device's inputs for `crop(image, center, size, ...)` with the same arguments (image
    uint8 [H, W, C], C <= 4). Returns (WarpWindow, src_from_dst [2, 3] as `crop` returns it)."""
    if window_size < out_size:
        raise ValueError(f"a window of {window_size} pixels cannot hold a host crop of {out_size}")
    height, width = image.shape[:2]
    src_from_dst = crop_transform(center, size, out_size, rotation_deg, flip)
    gain = np.asarray(gain, np.float32)
    sigma = recipe.sigma(size, out_size)
    if sigma > 0 or not recipe.whole_grey_levels:     # `crop` rounds only these
        return _host_window(image, src_from_dst, sigma, recipe, gain, out_size, window_size), src_from_dst
    # The taps' reach: the output square's corners (the map is affine), one pixel more on each
    # side for the device's float32 coordinates, clipped to the image.
    corners = np.array([[0, 0, 1], [out_size - 1, 0, 1], [0, out_size - 1, 1], [out_size - 1, out_size - 1, 1]])
    src = corners @ src_from_dst.T
    x0, y0 = np.maximum(np.floor(src.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.minimum(np.floor(src.max(axis=0)).astype(int) + 3, (width, height))
    if max(x1 - x0, y1 - y0) > window_size:
        return _host_window(image, src_from_dst, 0.0, recipe, gain, out_size, window_size), src_from_dst
    pixels = np.zeros((window_size, window_size, CHANNELS), np.uint8)
    if x1 > x0 and y1 > y0:
        pixels[:y1 - y0, :x1 - x0, :image.shape[2]] = image[y0:y1, x0:x1]
    affine = to_window(src_from_dst, (x0, y0), out_size)
    edges = np.array([[-x0, width - 1 - x0], [-y0, height - 1 - y0]], np.int32)
    return WarpWindow(pixels, affine, edges, gain), src_from_dst


def _host_window(image, src_from_dst, sigma, recipe, gain, out_size, window_size) -> WarpWindow:
    """`crop`'s pixels made here, in whole grey levels, as an identity window."""
    pixels = np.zeros((window_size, window_size, CHANNELS), np.uint8)
    pixels[:out_size, :out_size, :image.shape[2]] = host_grey_levels(image, src_from_dst, sigma, recipe.truncate,
                                                                      out_size)
    identity = to_window(np.array([[1.0, 0, 0], [0, 1, 0]]), (0, 0), out_size)
    return WarpWindow(pixels, identity, np.array([[0, out_size - 1]] * 2, np.int32), gain)


def to_window(src_from_dst, origin, out_size=CROP_SIZE) -> np.ndarray:
    """The device's map: offsets from the output's centre pixel (out_size // 2) -> window
    coordinates (origin: the window's corner in the image), computed in float64, sent as float32.
    Centred both sides, the device's float32 terms stay below the window's side: its
    coordinates are within 7 x 2^-24 x window_size pixels of `crop`'s (tests/test_device_crop.py)."""
    centre = src_from_dst[:, :2] @ np.full(2, out_size // 2) + src_from_dst[:, 2] - np.asarray(origin)
    return np.concatenate([src_from_dst[:, :2], centre[:, None]], axis=1).astype(np.float32)


def warp_grey_levels(window, affine, edges, out_size=CROP_SIZE, whole_grey_levels=True):
    """Bilinear warp of uint8 windows [B, H, W, C] by affine [B, 2, 3] (`to_window`)
    with zero weight outside edges [B, 2, 2] -> float32 [B, out, out, C] in 0..255, rounded half
    up where whole_grey_levels (static). `_bilinear`'s weights and order of operations."""
    height, width, channels = window.shape[1:]
    steps = jnp.arange(out_size, dtype=jnp.float32) - out_size // 2

    def one(window, affine, edges):
        cols, rows = steps[None, :], steps[:, None]
        x = affine[0, 0] * cols + affine[0, 1] * rows + affine[0, 2]
        y = affine[1, 0] * cols + affine[1, 1] * rows + affine[1, 2]
        x_floor, y_floor = jnp.floor(x), jnp.floor(y)
        fx, fy = x - x_floor, y - y_floor
        x_floor, y_floor = x_floor.astype(jnp.int32), y_floor.astype(jnp.int32)

        def inside(index, axis):    # the tap is an image pixel
            return ((index >= edges[axis, 0]) & (index <= edges[axis, 1])).astype(jnp.float32)

        weight_x = ((1.0 - fx) * inside(x_floor, 0), fx * inside(x_floor + 1, 0))
        weight_y = ((1.0 - fy) * inside(y_floor, 1), fy * inside(y_floor + 1, 1))
        pixels = window.reshape(height * width, channels)
        left, right = jnp.clip(x_floor, 0, width - 1), jnp.clip(x_floor + 1, 0, width - 1)
        out = None
        for row, wy in zip((jnp.clip(y_floor, 0, height - 1), jnp.clip(y_floor + 1, 0, height - 1)), weight_y):
            line = (jnp.take(pixels, row * width + left, axis=0) * weight_x[0][..., None]
                    + jnp.take(pixels, row * width + right, axis=0) * weight_x[1][..., None])
            line = line * wy[..., None]
            out = line if out is None else out + line
        return out

    out = jax.vmap(one)(window, affine, edges)
    return jnp.floor(out + 0.5) if whole_grey_levels else out


def warp_windows(window, affine, edges, gain, has_mask, out_size=CROP_SIZE, whole_grey_levels=True):
    """The network input and mask of a batch of windows (`plan_warp`'s arrays stacked; has_mask
    [B]): (image float32 [B, out, out, 3] ImageNet-normalised, mask float32 [B, out, out]), as
    `crop` and `animax.data.augment.crop_example` make them."""
    pixels = warp_grey_levels(window, affine, edges, out_size, whole_grey_levels)
    image = normalize(pixels[..., :3], gain)
    if pixels.shape[-1] < CHANNELS:
        return image, jnp.zeros(pixels.shape[:-1], jnp.float32)
    mask = jnp.clip(pixels[..., 3] * np.float32(1.0 / 255.0), 0.0, 1.0)
    lost = jnp.all(mask < 0.5, axis=(1, 2))     # AniMer: a mask that lost the animal counts as everywhere
    mask = jnp.where(lost[:, None, None], 1.0, mask)
    return image, jnp.where(has_mask[:, None, None] > 0, mask, 0.0)


def warp_flops(channels=CHANNELS, out_size=CROP_SIZE) -> int:
    """Multiply-add FLOPs (x 2) of one crop's bilinear taps (coordinates and weights aside)."""
    return 2 * 4 * channels * out_size * out_size


__all__ = ["WINDOW_SIZE", "WarpWindow", "plan_warp", "to_window", "warp_grey_levels", "warp_windows", "warp_flops"]
