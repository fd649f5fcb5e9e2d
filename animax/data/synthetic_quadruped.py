"""Synthetic quadrupeds: the body model (the license-free stand-in by default) rendered at
random, with exact labels.

Each example is a pure function of (seed, split, index), so a build is reproducible:
- shape: a family (0..4) and betas = that family's mean + noise over the first ten shape
  directions (the stand-in's meaningful ones), so the family can be told from the shape;
- pose: drawn near the SMAL pose prior (its mean plus its covariance, truncated at 2
  sigma) when `pose_prior` names the prior file, else small random joint rotations;
- camera: the animal turned to any heading about its up axis, seen from slightly above,
  filling 35-75% of the image at a random place; AniMer's full-image focal length
  (FOCAL_LENGTH / CROP_SIZE x the longer image side);
- appearance: a random coat (base colour times smooth patches over the rest-pose surface),
  Lambert shading under a random light, a random smooth background, sensor noise, JPEG.
Labels: `keypoints_2d` (projected; confidence 0 outside the image), `keypoints_3d` (posed,
camera orientation, no translation), `betas`, `pose` (axis-angle), `trans`, `mask`, `family`.
Images are rasterised with `animax.image.raster`.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image

from animax.data import features
from animax.data.tfds_builder import AnimaxBuilder, BadExample, check_example
from animax.geometry import CROP_SIZE, FOCAL_LENGTH, axis_angle_to_rotmat, rotmat_to_axis_angle
from animax.image.raster import project, rasterize, vertex_normals
from animax.smal import load_smal, smal_forward
from animax.smal.io import load_pickle

NUM_FAMILIES = len(features.FAMILY_NAMES)
# Body frame (x forward, y left, z up) -> camera frame (x right, y down, z forward): a side
# view, the animal facing right, its left side away from the camera.
_SIDE_VIEW = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
_SPLIT_IDS = {"train": 0, "test": 1}


@dataclasses.dataclass(frozen=True)
class _Record:
    file: str                       # "<split>:<index>"
    split_id: int
    index: int


def _rotation(axis, angle) -> np.ndarray:
    return axis_angle_to_rotmat(np.asarray(axis, np.float64) * angle, xp=np)


class SyntheticQuadruped(AnimaxBuilder):
    """Rendered stand-in quadrupeds with exact 2D/3D keypoints, SMAL parameters and masks."""

    def __init__(self, *, num_train=1000, num_test=100, seed=0, image_size=(320, 320),
                 pose_prior=None, body_model=None, **kwargs):
        """image_size (width, height); pose_prior: the SMAL pose prior .pkl (optional);
        body_model: a SMAL .pkl/.npz (default: the built-in stand-in)."""
        super().__init__(**kwargs)
        self.num_examples = {"train": num_train, "test": num_test}
        self.seed = seed
        self.width, self.height = image_size
        self.pose_prior = pose_prior
        self.body_model = body_model

    def _split_records(self, manual_dir):
        # Loaded here, not in __init__: reading a built dataset also constructs the builder.
        self.body = load_smal(self.body_model)
        self.faces = np.asarray(self.body.faces)
        if self.pose_prior:
            prior = load_pickle(self.pose_prior)
            mean = np.asarray(prior["mean_pose"], np.float64).reshape(-1, 3)
            self.prior_mean, self.prior_factor = mean, np.linalg.cholesky(np.asarray(prior["cov"], np.float64))
        family_rng = np.random.default_rng([self.seed, 2**31 - 1])
        self.family_betas = np.zeros((NUM_FAMILIES, features.NUM_BETAS))
        self.family_betas[:, :10] = family_rng.normal(0.0, 0.8, (NUM_FAMILIES, 10))
        return {split: [_Record(f"{split}:{i}", _SPLIT_IDS[split], i) for i in range(count)]
                for split, count in self.num_examples.items() if count > 0}

    def _example(self, record):
        rng = np.random.default_rng([self.seed, record.split_id, record.index])
        family, betas, pose = self._sample_body(rng)
        rotations = axis_angle_to_rotmat(pose, xp=np)
        body = smal_forward(self.body, betas[None].astype(np.float32), rotations[None].astype(np.float32))
        vertices = np.asarray(body["vertices"][0], np.float64)
        keypoints_3d = np.asarray(body["keypoints_3d"][0], np.float64)
        focal, trans = self._sample_camera(rng, vertices)
        center = (self.width / 2.0, self.height / 2.0)
        raster = rasterize(project(vertices + trans, focal, center), self.faces, self.height, self.width)
        image = self._paint(rng, raster, vertices)
        keypoints_2d = project(keypoints_3d + trans, focal, center)
        inside = ((keypoints_2d[:, 0] >= 0) & (keypoints_2d[:, 0] <= self.width - 1)
                  & (keypoints_2d[:, 1] >= 0) & (keypoints_2d[:, 1] <= self.height - 1))
        keypoints_2d = np.concatenate([keypoints_2d[:, :2], inside[:, None]], -1) * inside[:, None]
        rows, cols = np.nonzero(raster.mask)
        if not len(rows):
            raise BadExample(record.file, "the animal is outside the image")
        bbox = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], np.float32)
        check_example(record.file, (self.height, self.width), bbox, keypoints_2d)
        encoded = io.BytesIO()
        Image.fromarray(image).save(encoded, format="JPEG", quality=92)
        return features.make_example(
            image=encoded.getvalue(), image_id=record.file, bbox=bbox, keypoints_2d=keypoints_2d,
            keypoints_3d=keypoints_3d, betas=betas, pose=pose, trans=trans,
            mask=features.encode_png(raster.mask.astype(np.uint8) * 255), family=family)

    def _sample_body(self, rng):
        """(family, betas [41], pose [35, 3] axis-angle with the camera-frame global orientation)."""
        family = int(rng.integers(NUM_FAMILIES))
        betas = self.family_betas[family].copy()
        betas[:10] += rng.normal(0.0, 0.4, 10)
        num_joints = self.body.num_joints
        if self.pose_prior:
            z = np.clip(rng.standard_normal(3 * num_joints), -2.0, 2.0)
            pose = self.prior_mean + (self.prior_factor @ z).reshape(num_joints, 3)
        else:
            pose = np.clip(rng.normal(0.0, 0.15, (num_joints, 3)), -0.3, 0.3)
        heading = _rotation((0, 0, 1), rng.uniform(-np.pi, np.pi))      # about the body's up axis
        from_above = _rotation((1, 0, 0), -rng.uniform(0.0, 0.5))       # camera looks slightly down
        roll = _rotation((0, 0, 1), rng.normal(0.0, 0.05))
        global_orientation = roll @ from_above @ _SIDE_VIEW @ heading
        pose[0] = rotmat_to_axis_angle(global_orientation, xp=np)
        return family, betas, pose

    def _sample_camera(self, rng, vertices):
        """(focal length, translation [3]) placing the posed body inside the image."""
        longer = max(self.width, self.height)
        focal = FOCAL_LENGTH / CROP_SIZE * longer
        low, high = vertices.min(0), vertices.max(0)
        extent = np.max(high[:2] - low[:2])
        depth = focal * extent / (rng.uniform(0.35, 0.75) * min(self.width, self.height))
        room = np.array([self.width, self.height]) / 2.0 - focal * (high[:2] - low[:2]) / 2.0 / depth
        offset = rng.uniform(-1.0, 1.0, 2) * np.maximum(room, 0.0) * 0.8 * depth / focal
        center = (low + high) / 2.0
        return focal, np.array([offset[0] - center[0], offset[1] - center[1], depth - center[2]])

    def _paint(self, rng, raster, vertices) -> np.ndarray:
        """uint8 RGB [H, W, 3]: the shaded, coated animal over a random background."""
        rest = np.asarray(self.body.v_template, np.float64)
        # Coat: a base colour times smooth patches, a function of the rest-pose surface.
        waves = rng.normal(0.0, 6.0, (3, 3))
        patches = 0.5 + 0.5 * np.sin(rest @ waves + rng.uniform(0, 2 * np.pi, 3)).mean(-1)
        coat = rng.uniform(0.15, 0.9, 3) * (1.0 - rng.uniform(0.0, 0.6) * patches[:, None])
        light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.2), -1.0])     # towards the light
        light /= np.linalg.norm(light)
        ambient = rng.uniform(0.2, 0.5)
        normals = vertex_normals(vertices, self.faces)
        lit = coat * (ambient + (1.0 - ambient) * np.clip(normals @ light, 0.0, 1.0))[:, None]
        mask = raster.mask
        corners = self.faces[raster.face[mask]]
        animal = np.einsum("nk,nkc->nc", raster.barycentric[mask], lit[corners])
        image = self._background(rng)
        image[mask] = animal
        image += rng.normal(0.0, 0.01, image.shape)
        return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)

    def _background(self, rng) -> np.ndarray:
        """float RGB [H, W, 3] in 0..1: a two-colour gradient times smooth blotches."""
        t = np.linspace(0.0, 1.0, self.height)[:, None, None]
        gradient = (1 - t) * rng.uniform(0.1, 0.9, 3) + t * rng.uniform(0.1, 0.9, 3)
        coarse = (rng.uniform(0.6, 1.0, (6, 6)) * 255).astype(np.uint8)
        blotches = np.asarray(Image.fromarray(coarse).resize((self.width, self.height), Image.BILINEAR),
                              np.float64) / 255.0
        return gradient * blotches[..., None]
