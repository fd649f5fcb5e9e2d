"""Images and boxes in, per-animal arrays out: the notebook API and the CLI's engine.

    model, variables = animax.load_model("ckpt/animer")          # or build_model + init_variables
    predictor = Predictor(model, variables, batch_size=8)
    animals = predictor.predict(load_image("horse.jpg"), [(40, 60, 360, 300)])
    animals[0]["keypoints2d"]                                    # [26, 2] pixels of the image

Every call runs one function compiled ahead of time for a fixed batch shape (the last batch
is padded), so the model compiles exactly once per Predictor. The batch is split over all local
devices (`jax.sharding`, data parallel), the weights replicated on each.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from animax.geometry import CROP_SIZE, cam_crop_to_full, full_image_focal_length
from animax.image.crop import apply_affine, crop, crop_transform, square_box

# Model outputs kept per animal, renamed to the exported file names (the rest stay in the model).
MODEL_OUTPUTS = {
    "vertices": "vertices", "keypoints_3d": "keypoints3d", "joints": "joints", "betas": "betas",
    "pose": "pose", "cam": "cam", "cam_t": "cam_t", "keypoints_2d": "keypoints2d_crop",
    "head_box": "head_box", "visual_features": "visual_features", "head_features": "head_features",
    "fused_features": "fused_features",
}


@dataclass(frozen=True)
class Animal:
    """One box of one image, cropped for the model.

    crop [256, 256, 3] ImageNet-normalised RGB, box [4] (x1, y1, x2, y2) as given,
    center [2] and size: AniMer's square box, image_size (W, H) of the whole image.
    """
    crop: np.ndarray
    box: np.ndarray
    center: np.ndarray
    size: float
    image_size: tuple[int, int]


def prepare(image, box) -> Animal:
    """Crops one box of a uint8 RGB image [H, W, 3] as AniMer's inference does (animax.image.crop)."""
    center, size = square_box(box)
    pixels, _ = crop(image, center, size)
    height, width = image.shape[:2]
    return Animal(pixels, np.asarray(box, np.float64), center, float(size), (width, height))


def whole_image_box(image):
    """The box (0, 0, W, H) used when an image comes without boxes."""
    height, width = image.shape[:2]
    return (0.0, 0.0, float(width), float(height))


class Predictor:
    """Runs a pipeline on animals and maps its crop-space outputs to the full image.

    Each result is a dict of float32 NumPy arrays:
      vertices [V,3], keypoints3d [K,3], joints [J,3] (model space, the model's camera frame
      before translation); betas [41]; pose [J,3,3]; cam [3] (crop weak-perspective s, tx, ty);
      cam_t [3] (crop camera translation); keypoints2d_crop [K,2] (crop-normalised, [-0.5, 0.5]);
      head_box [4] (crop pixels); visual_features, head_features, fused_features;
      and for the full image: keypoints2d [K,2] (pixels), cam_t_full [3] (translation for the
      focal length `focal_length` [] and principal point at the image centre), plus
      box [4], box_center [2], box_size [], image_size [2] (W, H).
    """

    def __init__(self, model, variables, batch_size: int = 8, devices=None):
        """devices: where the batch is split (default: all local devices). Each call's batch is
        padded to `batch_size` rounded up to a multiple of their number; the weights are
        replicated on each device once, here."""
        self.model = model
        self.batch_size = batch_size
        devices = list(jax.local_devices() if devices is None else devices)
        mesh = Mesh(np.array(devices), ("data",))
        self.split = NamedSharding(mesh, P("data"))          # the batch axis over the devices
        self.padded_size = -(-batch_size // len(devices)) * len(devices)
        self.variables = jax.device_put(variables, NamedSharding(mesh, P()))
        self._compiled = None

    def compile(self) -> float:
        """Compiles the model for the batch shape, once; returns the seconds spent (0 if done before)."""
        if self._compiled is not None:
            return 0.0
        start = time.perf_counter()

        def batch(*shape):
            return jax.ShapeDtypeStruct((self.padded_size,) + shape, jnp.float32, sharding=self.split)

        forward = jax.jit(functools.partial(_forward, self.model), out_shardings=self.split)
        self._compiled = forward.lower(self.variables, batch(CROP_SIZE, CROP_SIZE, 3), batch(2), batch(),
                                       batch(2)).compile()
        return time.perf_counter() - start

    def predict(self, image, boxes=None) -> list[dict]:
        """image uint8 RGB [H, W, 3]; boxes: list of (x1, y1, x2, y2), default the whole image."""
        boxes = [whole_image_box(image)] if boxes is None else boxes
        return self.predict_animals([prepare(image, box) for box in boxes])

    def predict_animals(self, animals) -> list[dict]:
        """Any number of prepared animals, in batches of `batch_size`; results in order."""
        results = []
        for start in range(0, len(animals), self.batch_size):
            results.extend(self._predict_batch(animals[start:start + self.batch_size]))
        return results

    def _predict_batch(self, animals) -> list[dict]:
        n = len(animals)
        pad = self.padded_size - n

        def stacked(values, fill):
            values = np.stack([np.asarray(v, np.float32) for v in values])
            values = np.concatenate([values, np.full((pad,) + values.shape[1:], fill, np.float32)])
            return jax.device_put(values, self.split)     # one slice per device

        self.compile()
        out = self._compiled(self.variables, stacked([a.crop for a in animals], 0.0),
                            stacked([a.center for a in animals], 0.0), stacked([a.size for a in animals], 1.0),
                            stacked([a.image_size for a in animals], 1.0))
        out = jax.tree.map(lambda x: np.asarray(x[:n], np.float32), jax.device_get(out))
        return [_to_image(animal, {key: value[i] for key, value in out.items()}) for i, animal in enumerate(animals)]


def _forward(model, variables, images, centers, sizes, image_sizes):
    """The jitted part: the model, and the camera translation for the full image."""
    out = model.apply(variables, images)
    kept = {name: out[key].astype(jnp.float32) for key, name in MODEL_OUTPUTS.items()}
    kept["cam_t_full"] = cam_crop_to_full(out["cam"].astype(jnp.float32), centers, sizes, image_sizes)
    kept["focal_length"] = full_image_focal_length(image_sizes)
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
