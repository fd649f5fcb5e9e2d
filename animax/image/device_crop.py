"""AniMer's crop inside the jitted step: the host sends a uint8 window and its taps, the device
blurs, warps and normalises with two matrix products per batch row.

`animax.image.crop.crop` is the reference: the same recipes (INFERENCE, DATASET, ...), the same
pixel convention, the same numbers within float32 rounding (tests/test_device_crop.py derives
the bound). Only the work moves.

Host (`plan_window`, a few dozen NumPy operations on 256-long vectors, no pixel touched):
  - the window: the source pixels the bilinear taps and the blur can reach, clipped to the
    image (a view, copied once into the batch buffer, padded to a WINDOW_BUCKETS size so that
    the compiled step sees a few static shapes);
  - per output row and column, the first tap's window index and the two tap weights, computed
    exactly as `_bilinear` computes them (float64 fractions, float32 weights, zero outside the
    image);
  - the normalised Gaussian kernel (scipy's weights) or a unit tap when the recipe does not
    blur, the image's first and last pixel in window coordinates (the blur's 'nearest' edge),
    whether to round to whole grey levels (cv2's uint8 warp), the colour gain.

Device (`crop_windows`): per axis the sampling matrix S [out, L] = bilinear taps folded with
the blur is banded: output pixel i reads only 2 R + 2 consecutive window rows (R the kernel
radius; 0 without blur). So the crop is S_rows @ window @ S_cols^T per channel, applied as two
banded products (`band`: each row's positions and weights, positions clipped to the image's
edge pixels, which is the blur's 'nearest' padding exactly; `grey_levels`: the weighted sums
over gathered rows, then columns), in float32; then rounding, gain, ImageNet normalisation.
The same products as dense matrices would spend 0.8 GFLOP on a 640 x 480 window, almost all
on zeros (measured 52 ms a crop on a 2-core CPU); the band spends 2.4 MFLOP without blur.

Separable = no rotation. Inference never rotates; training rotates 60% of its crops (AniMer's
rotation_rate), and a rotated bilinear warp is a gather, not two products: the training and
evaluation loaders' device crop is `animax.image.device_warp`.

Cost per crop, C channels, window H x W, T = 2 R + 2 taps (the longer axis first):
2 * T * C * out * (min(H, W) + out) FLOPs: 2.3 MFLOP for a 640 x 480 picture without blur,
16 MFLOP with the widest blur (0.006% of ViT-H's 249 GFLOP).
Windows beyond the largest bucket (boxes over ~2000 pixels; infer.py --reduced-decode keeps
them under it) and blurs wider than KERNEL_RADIUS are cropped on the host and sent as a
256 x 256 window of whole grey levels (within half a grey level of the float crop).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from animax.geometry import CROP_SIZE
from animax.image.crop import (
    DATASET,
    IMAGE_MEAN,
    IMAGE_STD,
    INFERENCE,
    CropRecipe,
    blur_is_negligible,
    crop_transform,
    warp_affine,
)

# Window sides (each axis on its own) the compiled step is specialised to.
WINDOW_BUCKETS = (256, 512, 768, 1024, 1536, 2048)
# Taps of the largest blur served on the device: INFERENCE's sigma for a 2048-pixel box is 1.5,
# radius int(4 * 1.5 + 0.5) = 6.
KERNEL_RADIUS = 6
_TAPS = 2 * KERNEL_RADIUS + 1


@dataclasses.dataclass(frozen=True)
class AxisTaps:
    """One axis of a crop. first [out] int32: window index of each output pixel's first tap
    (the second is first + 1); weights [2, out] float32: the taps' bilinear weights, zero for
    taps outside the image; edges (lo, hi): window indices of the image's first and last pixel
    along this axis (outside [0, window) when the window stops short of the image's edge)."""
    first: np.ndarray
    weights: np.ndarray
    edges: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class CropWindow:
    """What the device needs for one crop. pixels uint8 [h, w, C] (a view of the image);
    rows, cols: AxisTaps; kernel [2 * KERNEL_RADIUS + 1] float32 (the unit tap without blur);
    round_half_up: whole grey levels (a DATASET recipe without blur); gain [3]."""
    pixels: np.ndarray
    rows: AxisTaps
    cols: AxisTaps
    kernel: np.ndarray
    round_half_up: bool
    gain: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape[:2]


def gaussian_kernel(sigma: float, truncate: float) -> np.ndarray | None:
    """scipy.ndimage's normalised Gaussian taps, centred in a 2 * KERNEL_RADIUS + 1 vector (float32);
    the unit tap for no blur or a negligible one (as `warp_affine` skips it); None when wider
    than KERNEL_RADIUS."""
    kernel = np.zeros(_TAPS, np.float64)
    if blur_is_negligible(sigma, truncate):
        kernel[KERNEL_RADIUS] = 1.0
        return kernel.astype(np.float32)
    radius = int(truncate * sigma + 0.5)
    if radius > KERNEL_RADIUS:
        return None
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    kernel[KERNEL_RADIUS - radius:KERNEL_RADIUS + radius + 1] = taps / taps.sum()
    return kernel.astype(np.float32)


def _axis(coords, start, stop, extent) -> AxisTaps:
    """Taps of source coordinates coords [out] (float64) read from window [start, stop) of an axis
    of `extent` pixels: `_bilinear`'s weights, to the same float32 bits."""
    floor = np.floor(coords)
    fraction = (coords - floor).astype(np.float32)
    floor = floor.astype(np.int64)
    one = np.float32(1.0)
    weights = np.stack([(one - fraction) * ((floor >= 0) & (floor < extent)),
                        fraction * ((floor >= -1) & (floor < extent - 1))])
    # Taps outside the window have zero weight; clipping keeps their indices harmless.
    first = np.clip(floor - start, -1, max(stop - start, 1)).astype(np.int32)
    return AxisTaps(first, weights, (-start, extent - 1 - start))


def plan_window(image, center, size, *, recipe: CropRecipe = INFERENCE, flip=False, gain=(1.0, 1.0, 1.0),
                out_size=CROP_SIZE, buckets=WINDOW_BUCKETS) -> CropWindow:
    """The device's inputs for `crop(image, center, size, flip=..., gain=..., recipe=...)` (no
    rotation): the window the crop reads and its taps; a host crop in whole grey levels when the
    window exceeds the largest bucket or the blur KERNEL_RADIUS."""
    height, width = image.shape[:2]
    src_from_dst = crop_transform(center, size, out_size, 0.0, flip)
    sigma = recipe.sigma(size, out_size)
    kernel = gaussian_kernel(sigma, recipe.truncate)
    steps = np.arange(out_size, dtype=np.float64)
    src_x = src_from_dst[0, 0] * steps + src_from_dst[0, 2]
    src_y = src_from_dst[1, 1] * steps + src_from_dst[1, 2]
    radius = 0 if kernel is None else int(np.count_nonzero(kernel) // 2)
    x0 = max(int(np.floor(src_x.min())) - radius, 0)
    y0 = max(int(np.floor(src_y.min())) - radius, 0)
    x1 = max(min(int(np.floor(src_x.max())) + 2 + radius, width), x0)
    y1 = max(min(int(np.floor(src_y.max())) + 2 + radius, height), y0)
    gain = np.asarray(gain, np.float32)
    if kernel is None or y1 - y0 > buckets[-1] or x1 - x0 > buckets[-1]:
        return _host_window(image, src_from_dst, sigma, recipe, gain, out_size)
    return CropWindow(image[y0:y1, x0:x1], _axis(src_y, y0, y1, height), _axis(src_x, x0, x1, width), kernel,
                      recipe.whole_grey_levels and sigma == 0, gain)


def host_grey_levels(image, src_from_dst, sigma, truncate, out_size) -> np.ndarray:
    """The fallback of both device crops: the crop made on the host (`warp_affine`), rounded to
    whole grey levels (uint8 [out, out, C]) to travel as a window."""
    pixels = warp_affine(image, src_from_dst, out_size, sigma=sigma, truncate=truncate)
    return np.clip(np.floor(pixels + 0.5), 0, 255).astype(np.uint8)


def _host_window(image, src_from_dst, sigma, recipe, gain, out_size) -> CropWindow:
    """The crop made here, in whole grey levels, as an identity window."""
    pixels = host_grey_levels(image, src_from_dst, sigma, recipe.truncate, out_size)
    steps = np.arange(out_size, dtype=np.float64)
    identity = _axis(steps, 0, out_size, out_size)
    kernel = gaussian_kernel(0.0, 1.0)
    return CropWindow(pixels, identity, identity, kernel, False, gain)


def bucket(extent: int, buckets=WINDOW_BUCKETS) -> int:
    """The smallest bucket holding `extent` pixels."""
    for side in buckets:
        if extent <= side:
            return side
    raise ValueError(f"a window of {extent} pixels exceeds the largest bucket {buckets[-1]}")


class WindowBatch:
    """Preallocated host arrays of one batch of crops, for one (rows, cols) bucket.

    `fill(k, window)` copies window k in (only its h x w corner: the rest of the buffer is never
    read, its sampling weights are zero); `arrays()` are the crop inputs of `crop_windows`.
    """

    def __init__(self, batch: int, shape: tuple[int, int], channels: int = 3, out_size: int = CROP_SIZE):
        self.pixels = np.zeros((batch, *shape, channels), np.uint8)
        self.first = np.zeros((batch, 2, out_size), np.int32)
        self.weights = np.zeros((batch, 2, 2, out_size), np.float32)
        self.edges = np.zeros((batch, 2, 2), np.int32)
        self.kernel = np.zeros((batch, _TAPS), np.float32)
        self.round_half_up = np.zeros((batch,), bool)
        self.gain = np.ones((batch, 3), np.float32)

    def fill(self, k: int, window: CropWindow) -> None:
        h, w = window.shape
        self.pixels[k, :h, :w] = window.pixels
        for axis, taps in enumerate((window.rows, window.cols)):
            self.first[k, axis] = taps.first
            self.weights[k, axis] = taps.weights
            self.edges[k, axis] = taps.edges
        self.kernel[k] = window.kernel
        self.round_half_up[k] = window.round_half_up
        self.gain[k] = window.gain

    def clear(self, k: int) -> None:
        """Row k as padding: zero weights, a black crop."""
        self.weights[k] = 0.0
        self.kernel[k] = 0.0

    def arrays(self) -> dict:
        return {"pixels": self.pixels, "first": self.first, "weights": self.weights, "edges": self.edges,
                "kernel": self.kernel, "round_half_up": self.round_half_up, "gain": self.gain}


def band(first, weights, edges, kernel, length: int, radius: int):
    """One axis's sampling band: the rows of the sampling matrix restricted to where they can be
    nonzero. first [out], weights [2, out], edges [2], kernel [2 * KERNEL_RADIUS + 1]; radius: the
    band's kernel radius (0 when every kernel of the batch is the unit tap).

    Returns (positions [out, T] int32, values [out, T] float32), T = 2 * radius + 2: output
    pixel i reads window index positions[i, m] with weight values[i, m]. Tap 0 (weight w0, at
    first) and tap 1 (w1, at first + 1) each spread over the kernel; positions are clipped to
    the image's edge pixels, so repeated edge indices sum the kernel's weight beyond the edge:
    the blur's 'nearest' padding, exactly."""
    taps = 2 * radius + 2
    centre = jnp.arange(taps) - radius                   # offsets from `first`
    positions = jnp.clip(first[:, None] + centre[None, :], edges[0], edges[1])
    positions = jnp.clip(positions, 0, length - 1)       # zero-weight taps of padding rows
    zero = jnp.zeros((1,), kernel.dtype)
    padded = jnp.concatenate([zero, kernel, zero])       # padded[1 + KERNEL_RADIUS + j] = g_j
    tap0 = jax.lax.dynamic_slice(padded, (1 + KERNEL_RADIUS - radius,), (taps,))      # g_(m - radius)
    tap1 = jax.lax.dynamic_slice(padded, (KERNEL_RADIUS - radius,), (taps,))          # g_(m - radius - 1)
    values = weights[0][:, None] * tap0[None, :] + weights[1][:, None] * tap1[None, :]
    return positions, values


def _resample(x, positions, values, axis: int):
    """sum_m values[i, m] * x.take(positions[i, m], axis): one axis of the crop, for one batch row."""
    shape = [1] * x.ndim
    shape[axis] = positions.shape[0]
    total = None
    for m in range(positions.shape[1]):
        term = jnp.take(x, positions[:, m], axis=axis) * values[:, m].reshape(shape)
        total = term if total is None else total + term
    return total


def grey_levels(pixels, first, weights, edges, kernel, round_half_up, radius: int = KERNEL_RADIUS):
    """Blur + bilinear warp of uint8 windows: pixels [B, H, W, C] and the WindowBatch arrays ->
    float32 [B, out, out, C] in 0..255 (whole grey levels where round_half_up).

    The separable sampling matrices applied as banded products: each output pixel sums the
    T = 2 radius + 2 window rows (then columns) its band names, the only nonzero entries of its
    matrix row. The longer axis goes first, so the second pass runs over out x min(H, W).
    radius (static): KERNEL_RADIUS serves any batch; 0 serves batches without blur (T = 2).
    """
    height, width = pixels.shape[1:3]

    def one(pixels, first, weights, edges, kernel):
        rows = band(first[0], weights[0], edges[0], kernel, height, radius)
        cols = band(first[1], weights[1], edges[1], kernel, width, radius)
        x = pixels.astype(jnp.float32)
        if width >= height:
            return _resample(_resample(x, *cols, axis=1), *rows, axis=0)
        return _resample(_resample(x, *rows, axis=0), *cols, axis=1)

    x = jax.vmap(one)(pixels, first, weights, edges, kernel)
    # cv2's uint8 warp rounds half up.
    return jnp.where(round_half_up[:, None, None, None], jnp.floor(x + 0.5), x)


def batch_radius(kernels) -> int:
    """The band radius a batch needs: 0 when every kernel [B, 2R + 1] is the unit tap."""
    unit = np.zeros(_TAPS, np.float32)
    unit[KERNEL_RADIUS] = 1.0
    return 0 if (np.asarray(kernels) == unit).all() else KERNEL_RADIUS


def normalize(pixels, gain):
    """`animax.image.crop.normalize` on the device: pixels [B, S, S, 3] 0..255, gain [B, 3]."""
    std, mean = jnp.asarray(IMAGE_STD), jnp.asarray(IMAGE_MEAN)
    scale = gain / std
    return jnp.minimum(pixels * scale[:, None, None, :] - mean / std, (255.0 - mean) / std)


def crop_windows(pixels, first, weights, edges, kernel, round_half_up, gain, radius: int = KERNEL_RADIUS):
    """The network input of a WindowBatch: ImageNet-normalised float32 [B, out, out, 3]."""
    return normalize(grey_levels(pixels, first, weights, edges, kernel, round_half_up, radius), gain)


def crop_flops(shape: tuple[int, int], radius: int = 0, channels: int = 3, out_size: int = CROP_SIZE) -> int:
    """Multiply-add FLOPs (x2) of one crop from a window bucket (rows, cols): the two banded
    passes, T = 2 radius + 2 taps each."""
    taps = 2 * radius + 2
    return 2 * taps * channels * out_size * (min(shape) + out_size)


def dense_crop_flops(shape: tuple[int, int], channels: int = 3, out_size: int = CROP_SIZE) -> int:
    """The same crop as two dense matrix products (zeros included), for comparison."""
    height, width = shape
    return 2 * out_size * channels * (height * width + out_size * min(height, width))


__all__ = ["DATASET", "INFERENCE", "WINDOW_BUCKETS", "KERNEL_RADIUS", "CropWindow", "WindowBatch", "bucket",
           "plan_window", "host_grey_levels", "band", "batch_radius", "crop_windows", "grey_levels", "normalize",
           "crop_flops", "dense_crop_flops"]
