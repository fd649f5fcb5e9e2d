"""Images and boxes in, per-animal arrays out: the notebook API and the CLI's engine.

    model, variables = animax.load_model("ckpt/animer")          # or build_model + init_variables
    predictor = Predictor(model, variables)                      # batch: 8 per CPU, 32 per accelerator
    animals = predictor.predict(load_image("horse.jpg"), [(40, 60, 360, 300)])
    animals[0]["keypoints2d"]                                    # [26, 2] pixels of the image

The host only cuts each box's uint8 window out of its picture and works out the crop's taps
(`animax.image.device_crop.plan_window`); the blur, warp and normalisation run on the device
inside the one jitted step, before the model. Each window is padded to a bucket size
(WINDOW_BUCKETS), so the step compiles once per batch shape and bucket (the last batch is
padded); with `animax.runtime.enable_compile_cache` a later process loads it instead.

Pipelined: `submit` copies a batch into preallocated host buffers, sends it and dispatches the
step without waiting (JAX dispatch is asynchronous) and starts the copy of its outputs back;
`predict_animals` submits batch N + 1 before it fetches batch N, so the host's work on one batch
overlaps the device's on the other. The batch is split over all local devices (`jax.sharding`,
data parallel), the weights replicated on each, cast once to the compute dtype
(`animax.runtime.cast_weights`: the precision policy).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from animax.geometry import CROP_SIZE, cam_crop_to_full, full_image_focal_length
from animax.image.crop import INFERENCE, after_reduction, apply_affine, crop, crop_transform, square_box
from animax.image.device_crop import CropWindow, WindowBatch, batch_radius, bucket, crop_windows, plan_window
from animax.image.io import FULL_SCALE, DecodeScale
from animax.runtime import cast_weights, default_batch_size, step_precision

# Model outputs kept per animal, renamed to the exported file names (the rest stay in the model).
MODEL_OUTPUTS = {
    "vertices": "vertices", "keypoints_3d": "keypoints3d", "joints": "joints", "betas": "betas",
    "pose": "pose", "cam": "cam", "cam_t": "cam_t", "keypoints_2d": "keypoints2d_crop",
    "head_box": "head_box", "visual_features": "visual_features", "head_features": "head_features",
    "fused_features": "fused_features",
}


@dataclass(frozen=True)
class Animal:
    """One box of one image, ready for the device.

    window: the crop's inputs (`plan_window`; None once sent, see `sent`); box [4] (x1, y1, x2,
    y2) as given; center [2] and size: AniMer's square box; image_size (W, H) of the whole
    picture; image: the decoded pixels (for `crop`, the host reference; None once sent);
    scale: where those pixels sit in the picture (`animax.image.io.DecodeScale`: a reduced JPEG
    decode), so box, centre, size and every output stay in the picture's own pixels.
    """
    window: CropWindow | None
    box: np.ndarray
    center: np.ndarray
    size: float
    image_size: tuple[int, int]
    image: np.ndarray | None = None
    scale: DecodeScale = FULL_SCALE

    @property
    def crop(self) -> np.ndarray:
        """The host crop (`animax.image.crop.crop`, AniMer's inference recipe) [256, 256, 3]: the
        reference the device's crop equals within float32 rounding."""
        if self.image is None:
            raise ValueError("this animal's picture was released when it was sent to the device")
        return crop(self.image, self.scale.to_pixels(self.center), self.size / self.scale.factor,
                    recipe=after_reduction(INFERENCE, self.scale.factor))[0]

    def sent(self) -> Animal:
        """The animal without its pixels (what export needs), so pictures are freed once batched."""
        return dataclasses.replace(self, window=None, image=None)


def prepare(image, box, scale: DecodeScale = FULL_SCALE) -> Animal:
    """One box (in the picture's pixels) of uint8 RGB pixels [H, W, 3], planned as AniMer's
    inference crops it; `scale` when the pixels are a reduced decode of the picture."""
    center, size = square_box(box)
    height, width = image.shape[:2]
    window = plan_window(image, scale.to_pixels(center), size / scale.factor,
                         recipe=after_reduction(INFERENCE, scale.factor))
    return Animal(window, np.asarray(box, np.float64), center, float(size), scale.picture_size or (width, height),
                  image, scale)


def whole_image_box(image):
    """The box (0, 0, W, H) used when an image comes without boxes."""
    height, width = image.shape[:2]
    return picture_box(width, height)


def picture_box(width, height):
    """The box (0, 0, width, height) of a whole picture."""
    return (0.0, 0.0, float(width), float(height))


class PendingBatch:
    """A dispatched batch: `wait()` blocks until the device is done, `result()` fetches its
    outputs (already on their way back) and maps them to the image."""

    def __init__(self, predictor, animals, buffer, out):
        self.predictor, self.animals, self.buffer, self.out = predictor, animals, buffer, out

    def wait(self) -> None:
        jax.block_until_ready(self.out)

    def result(self) -> list[dict]:
        n = len(self.animals)
        out = {key: np.asarray(value)[:n] for key, value in self.out.items()}
        self.predictor._release(self.buffer)
        self.out = None
        return [_to_image(animal, {key: value[i] for key, value in out.items()})
                for i, animal in enumerate(self.animals)]


class Predictor:
    """Runs a pipeline on animals and maps its crop-space outputs to the full image.

    Each result is a dict of float32 NumPy arrays:
      vertices [V,3], keypoints3d [K,3], joints [J,3] (model space, the model's camera frame
      before translation); betas [41]; pose [J,3,3]; cam [3] (crop weak-perspective s, tx, ty);
      cam_t [3] (crop camera translation); keypoints2d_crop [K,2] (crop-normalised, [-0.5, 0.5]);
      head_box [4] (crop pixels); visual_features, head_features, fused_features;
      and for the full image: keypoints2d [K,2] (pixels), cam_t_full [3] (translation for the
      focal length `focal_length` [] and principal point at the image centre), plus
      box [4], box_center [2], box_size [], image_size [2] (W, H); with `return_crops`, crop
      [256, 256, 3] (the normalised network input, made on the device: for overlays).
    """

    def __init__(self, model, variables, batch_size: int | None = None, devices=None, return_crops: bool = False):
        """batch_size: crops per call (default: `animax.runtime.default_batch_size`, 8 per CPU
        and 32 per accelerator device); devices: where the batch is split (default: all local
        devices). Each call's batch is padded to `batch_size` rounded up to a multiple of their
        number; the weights are cast to the compute dtype and replicated on each device once, here."""
        self.model = model
        devices = list(jax.local_devices() if devices is None else devices)
        self.batch_size = default_batch_size(devices) if batch_size is None else batch_size
        self.return_crops = return_crops
        self.dtype = jnp.dtype(model.model_config.dtype)
        mesh = Mesh(np.array(devices), ("data",))
        self.split = NamedSharding(mesh, P("data"))          # the batch axis over the devices
        self.padded_size = -(-self.batch_size // len(devices)) * len(devices)
        variables = {**variables, "params": cast_weights(variables["params"], self.dtype)}
        self.variables = jax.device_put(variables, NamedSharding(mesh, P()))
        self.compile_s = 0.0                                  # seconds spent compiling, all shapes
        self._compiled = {}                                   # (window bucket, return_crops) -> executable
        self._free = {}                                       # window bucket -> idle WindowBatch buffers

    def compile(self, window=(CROP_SIZE, CROP_SIZE), radius: int = 0) -> float:
        """Compiles the step for a window bucket (rows, cols) and blur band radius (0: no blur in
        the batch; `device_crop.KERNEL_RADIUS`: any), once; returns the seconds spent (0 if done
        before). Other shapes compile when a batch first needs them."""
        key = (tuple(window), radius, self.return_crops)
        if key in self._compiled:
            return 0.0
        start = time.perf_counter()
        inputs = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=self.split),
                              WindowBatch(self.padded_size, tuple(window)).arrays())

        def batch(*shape):
            return jax.ShapeDtypeStruct((self.padded_size,) + shape, jnp.float32, sharding=self.split)

        forward = jax.jit(functools.partial(_forward, self.model, radius=radius, return_crops=self.return_crops),
                          out_shardings=self.split)
        with step_precision(self.dtype):
            lowered = forward.lower(self.variables, inputs, batch(2), batch(), batch(2))
        self._compiled[key] = lowered.compile()
        seconds = time.perf_counter() - start
        self.compile_s += seconds
        return seconds

    def predict(self, image, boxes=None) -> list[dict]:
        """image uint8 RGB [H, W, 3]; boxes: list of (x1, y1, x2, y2), default the whole image."""
        boxes = [whole_image_box(image)] if boxes is None else boxes
        return self.predict_animals([prepare(image, box) for box in boxes])

    def predict_animals(self, animals) -> list[dict]:
        """Any number of prepared animals, in batches of `batch_size`; results in order. Batch
        N + 1 is on its way before batch N is fetched."""
        results, pending = [], None
        for start in range(0, len(animals), self.batch_size):
            submitted = self.submit(animals[start:start + self.batch_size])
            if pending is not None:
                results.extend(pending.result())
            pending = submitted
        if pending is not None:
            results.extend(pending.result())
        return results

    def submit(self, animals) -> PendingBatch:
        """Sends up to `batch_size` animals and dispatches the step; returns at once."""
        if not 0 < len(animals) <= self.batch_size:
            raise ValueError(f"a batch holds 1 to {self.batch_size} animals, got {len(animals)}")
        shape = tuple(bucket(max(a.window.shape[axis] for a in animals)) for axis in (0, 1))
        buffer = self._take(shape)
        for k, animal in enumerate(animals):
            buffer.fill(k, animal.window)
        for k in range(len(animals), self.padded_size):
            buffer.clear(k)
        radius = batch_radius(buffer.kernel[:len(animals)])
        self.compile(shape, radius)
        pad = self.padded_size - len(animals)

        def stacked(values, fill):
            values = np.asarray(values, np.float32)
            return np.concatenate([values, np.full((pad,) + values.shape[1:], fill, np.float32)])

        inputs = jax.device_put((buffer.arrays(), stacked([a.center for a in animals], 0.0),
                                 stacked([a.size for a in animals], 1.0),
                                 stacked([a.image_size for a in animals], 1.0)), self.split,
                                may_alias=True)     # the buffer is not refilled before this batch is fetched
        out = self._compiled[(shape, radius, self.return_crops)](self.variables, *inputs)
        for value in out.values():
            value.copy_to_host_async()
        return PendingBatch(self, [a.sent() for a in animals], buffer, out)

    def _take(self, shape) -> WindowBatch:
        free = self._free.setdefault(shape, [])
        return free.pop() if free else WindowBatch(self.padded_size, shape)

    def _release(self, buffer: WindowBatch) -> None:
        self._free[buffer.pixels.shape[1:3]].append(buffer)


def _forward(model, variables, windows, centers, sizes, image_sizes, radius=0, return_crops=False):
    """The jitted step: the crop, the model, and the camera translation for the full image."""
    images = crop_windows(**windows, radius=radius)
    out = model.apply(variables, images)
    kept = {name: out[key].astype(jnp.float32) for key, name in MODEL_OUTPUTS.items()}
    kept["cam_t_full"] = cam_crop_to_full(out["cam"].astype(jnp.float32), centers, sizes, image_sizes)
    kept["focal_length"] = full_image_focal_length(image_sizes)
    if return_crops:
        kept["crop"] = images
    return kept


def crop_keypoints_to_image(keypoints_crop, center, size) -> np.ndarray:
    """Crop-normalised keypoints [K, 2] of the crop at (center, size) -> image pixels, float64."""
    crop_pixels = (np.asarray(keypoints_crop, np.float64) + 0.5) * CROP_SIZE
    return apply_affine(crop_transform(center, size), crop_pixels)


def _to_image(animal: Animal, result: dict) -> dict:
    """Adds the box and maps the crop keypoints back through the crop transform to image pixels."""
    keypoints = crop_keypoints_to_image(result["keypoints2d_crop"], animal.center, animal.size)
    return {**result, "keypoints2d": keypoints.astype(np.float32), "box": animal.box.astype(np.float32),
            "box_center": animal.center.astype(np.float32), "box_size": np.float32(animal.size),
            "image_size": np.array(animal.image_size, np.float32)}
