"""Synthetic quadrupeds as a TFDS dataset: stand-in scenes (`animax.data.scenes`, the
renderer of the bundled example and of the in-memory training source) drawn as whole
pictures with a detector's box and exact labels.

Each example is a pure function of (seed, split, index), so a build is reproducible. Poses
are drawn near the SMAL pose prior when `pose_prior` names the prior file. Labels:
`keypoints_2d` (confidence 0 outside the picture), `keypoints_3d` (posed, camera
orientation, no translation), `betas`, `pose` (axis-angle, joint 0 in the camera frame),
`trans`, `mask`, `family`; `bbox` is the scene's detector box, which the loader crops like
any dataset's box.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

from animax.data import features
from animax.data.scenes import SceneSampler, render_image
from animax.data.tfds_builder import AnimaxBuilder, BadExample, check_example
from animax.smal import load_smal
from animax.smal.io import load_pickle


@dataclasses.dataclass(frozen=True)
class _Record:
    file: str                       # "<split>:<index>"
    split: str
    index: int


class SyntheticQuadruped(AnimaxBuilder):
    """Rendered stand-in scenes with exact 2D/3D keypoints, SMAL parameters and masks."""

    def __init__(self, *, num_train=1000, num_test=100, seed=0, image_size=(640, 480),
                 pose_prior=None, body_model=None, **kwargs):
        """image_size (width, height); pose_prior: the SMAL pose prior .pkl (optional);
        body_model: a SMAL .pkl/.npz (default: the built-in stand-in)."""
        super().__init__(**kwargs)
        self.num_examples = {"train": num_train, "test": num_test}
        self.seed = seed
        self.image_size = tuple(image_size)
        self.pose_prior = pose_prior
        self.body_model = body_model

    def _split_records(self, manual_dir):
        # Loaded here, not in __init__: reading a built dataset also constructs the builder.
        self.body = load_smal(self.body_model)
        prior = None
        if self.pose_prior:
            raw = load_pickle(self.pose_prior)
            prior = {"mean": np.asarray(raw["mean_pose"], np.float64).reshape(-1, 3),
                     "factor": np.linalg.cholesky(np.asarray(raw["cov"], np.float64))}
        self.sampler = SceneSampler(self.body, self.seed, pose_prior=prior, image_size=self.image_size)
        return {split: [_Record(f"{split}:{i}", split, i) for i in range(count)]
                for split, count in self.num_examples.items() if count > 0}

    def _example(self, record):
        scene = self.sampler.scene(record.split, record.index)
        image, mask, labels = render_image(scene, self.body)
        if not mask.any():
            raise BadExample(record.file, "the animal is outside the image")
        keypoints_2d = labels["keypoints_2d"] * labels["keypoints_2d"][:, 2:]
        box = scene.box.astype(np.float32)
        check_example(record.file, mask.shape, box, keypoints_2d)
        encoded = io.BytesIO()
        Image.fromarray(image).save(encoded, format="JPEG", quality=92)
        return features.make_example(
            image=encoded.getvalue(), image_id=record.file, bbox=box, keypoints_2d=keypoints_2d,
            keypoints_3d=labels["keypoints_3d"], betas=scene.betas, pose=labels["pose"], trans=labels["trans"],
            mask=features.encode_png(mask.astype(np.uint8) * 255), family=scene.family)
