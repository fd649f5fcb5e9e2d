"""An in-memory synthetic training source: the body model posed at random, drawn as a
coloured silhouette. For tests, benchmarks and laptop runs; no files, no downloads.

Every example is a pure function of (seed, example index): its parameters come from
`np.random.default_rng([seed, index])`. The stream is a sequence of batches; batch n of
shard s (of S) holds examples (n * S + s) * B ... (n * S + s + 1) * B - 1, so S processes
together read each global batch once. The iterator state is the next batch number.

Batches have the training keys (numpy):
    image [B,256,256,3] ImageNet-normalised; keypoints_2d [B,K,3] crop-normalised xy + visibility;
    keypoints_3d [B,K,4] camera-frame xyz + 1; betas [B,NB]; pose [B,J,3,3]; has_betas [B];
    has_pose [B]; family [B] int32; mask [B,256,256] float32; has_mask [B] (ones).

The camera frames the body as a detector crop would: its projected box is centred (up to a
small jitter) and fills 70-85% of the centre 192 x 256 pixels that the network sees.

The picture: vertices projected with the example's camera and splatted as discs, nearest on
top, each coloured by its rest-pose position (x, y, z -> R, G, B), so left and right, front
and back are told apart by colour, on a grey background with noise.
"""

from __future__ import annotations

import numpy as np

from animax.geometry import CROP_SIZE, axis_angle_to_rotmat, project_to_crop, weak_cam_to_translation
from animax.models.pipeline import BACKBONE_COLUMNS
from animax.smal import SMALModel, smal_forward

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
NUM_FAMILIES = 5
_SPLAT_RADIUS = 2
_VIEW_WIDTH = len(range(CROP_SIZE)[BACKBONE_COLUMNS])   # the crop columns the network sees
# The stand-in's +x (forward) -> image right, +z (up) -> image up, +y (left) -> away from the camera.
_SIDE_VIEW = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def _rotation(axis_angle):
    return axis_angle_to_rotmat(np.asarray(axis_angle, np.float64), xp=np)


def joint_sigmas(joint_names) -> np.ndarray:
    """Spread [J,3] (radians, about the body's x forward, y left, z up axes) of each joint's
    random local rotation, by the joint's part of the body: a stiff spine, legs that swing
    fore and aft, a wagging tail, a loose neck, head, jaw and ears. Independent rotations of
    the same size everywhere would bend the body through its six spine joints by about 50
    degrees, a contortion no animal makes.
    """
    def spread(name):
        name = name.lower()
        if "spine" in name or "pelvis" in name:
            return (0.04, 0.04, 0.04)
        if "leg" in name or "foot" in name:
            return (0.05, 0.3, 0.05)
        if "tail" in name:
            return (0.05, 0.15, 0.15)
        return (0.15, 0.15, 0.15)
    return np.array([spread(n) for n in joint_names])


def _project(points, cam):
    """Camera-frame points [B,N,3] seen by weak-perspective cameras [B,3] -> crop-normalised
    xy [B,N,2] (NumPy), with the pipeline's own camera model."""
    return np.asarray(project_to_crop(points, weak_cam_to_translation(cam)))


def _frame(vertices, cam):
    """Frames each body like a detector crop: cam [B,3] = [fill, jitter x, jitter y] ->
    weak-perspective cameras whose projected body box is centred (give or take the jitter)
    and fills the share `fill` of the centre 192 x 256 pixels that the network sees, along
    whichever side limits it (AniMer's crops, a box grown by 1.2: 0.83).

    Projected extents grow linearly with the scale s and a shift t of the body moves its
    projection by s t / 2, so one measurement at unit scale and zero offset sets both.
    """
    unit = np.concatenate([np.ones_like(cam[:, :1]), np.zeros_like(cam[:, 1:])], axis=-1)
    xy = _project(vertices, unit)
    lo, hi = xy.min(axis=1), xy.max(axis=1)
    scale = cam[:, 0] / np.max((hi - lo) / np.array([_VIEW_WIDTH / CROP_SIZE, 1.0]), axis=-1)
    centre = (lo + hi) / 2 * scale[:, None]
    return np.concatenate([scale[:, None], cam[:, 1:] - 2.0 * centre / scale[:, None]], axis=-1)


class SyntheticQuadrupeds:
    """Batches of synthetic examples; see the module docstring. Checkpointable iterator."""

    def __init__(self, body: SMALModel, batch_size: int, seed: int = 0, shard_index: int = 0,
                 shard_count: int = 1, gt_fraction: float = 1.0, num_batches: int | None = None):
        """num_batches: stop after that many batches (a finite evaluation set); None = endless."""
        self.body = body
        self.batch_size, self.seed = batch_size, seed
        self.shard_index, self.shard_count = shard_index, shard_count
        self.gt_fraction = gt_fraction
        self.num_batches = num_batches
        self._next_batch = 0
        family_rng = np.random.default_rng([seed, 2**31 - 1])
        self._family_betas = np.zeros((NUM_FAMILIES, body.num_betas))
        self._family_betas[:, :10] = family_rng.normal(0.0, 0.8, (NUM_FAMILIES, 10))
        self._joint_sigmas = joint_sigmas(body.joint_names)
        template = np.asarray(body.v_template)
        lo, hi = template.min(0), template.max(0)
        self._colours = ((template - lo) / (hi - lo) * 0.8 + 0.1).astype(np.float32)

    def __iter__(self):
        return self

    def __next__(self):
        if self.num_batches is not None and self._next_batch >= self.num_batches:
            raise StopIteration
        first = (self._next_batch * self.shard_count + self.shard_index) * self.batch_size
        self._next_batch += 1
        return self.examples(range(first, first + self.batch_size))

    def get_state(self) -> dict:
        return {"next_batch": self._next_batch}

    def set_state(self, state: dict) -> None:
        self._next_batch = int(state["next_batch"])

    def _parameters(self, index):
        """(family, betas [NB], pose [J,3,3], cam [3] (fill, jitter x, y; see `_frame`), has_gt) of one example."""
        rng = np.random.default_rng([self.seed, index])
        family = int(rng.integers(NUM_FAMILIES))
        betas = self._family_betas[family] + rng.normal(0.0, 0.3, self.body.num_betas) * (
            np.arange(self.body.num_betas) < 10)
        yaw = rng.uniform(-0.8, 0.8) + np.pi * rng.integers(2)
        tilt = rng.normal(0.0, 0.1, 3) * np.array([1.0, 1.0, 0.0])
        rotations = [_SIDE_VIEW @ _rotation(np.array([0.0, 0.0, yaw])) @ _rotation(tilt)]
        rotations += [_rotation(rng.normal(0.0, 1.0, 3) * sigma) for sigma in self._joint_sigmas[1:]]
        cam = np.array([rng.uniform(0.7, 0.85), *rng.uniform(-0.05, 0.05, 2)])
        return family, betas, np.stack(rotations), cam, rng.random() < self.gt_fraction

    def examples(self, indices) -> dict:
        """The batch of the given example indices."""
        params = [self._parameters(i) for i in indices]
        family = np.array([p[0] for p in params], np.int32)
        betas = np.stack([p[1] for p in params]).astype(np.float32)
        pose = np.stack([p[2] for p in params]).astype(np.float32)
        cam = np.stack([p[3] for p in params])
        has_gt = np.array([p[4] for p in params], np.float32)
        body = smal_forward(self.body, betas, pose)
        vertices, keypoints = np.asarray(body["vertices"]), np.asarray(body["keypoints_3d"])
        cam = _frame(vertices, cam)
        kp_2d = _project(keypoints, cam)
        visible = np.all(np.abs(kp_2d) < 0.5, axis=-1, keepdims=True).astype(np.float32)
        images, masks = zip(*(self._draw(points, v[:, 2], i)
                              for points, v, i in zip(_project(vertices, cam), vertices, indices)))
        ones = np.ones(keypoints.shape[:-1] + (1,), np.float32)
        return {
            "image": np.stack(images), "mask": np.stack(masks), "has_mask": np.ones(len(images), np.float32),
            "keypoints_2d": np.concatenate([kp_2d, visible], -1).astype(np.float32),
            "keypoints_3d": np.concatenate([keypoints, ones], -1).astype(np.float32),
            "betas": betas, "pose": pose, "has_betas": has_gt, "has_pose": has_gt, "family": family,
        }

    def _draw(self, points_2d, depth, index):
        """Normalised image [S,S,3] and mask [S,S] of one posed body (points [V,2] crop-normalised)."""
        size = CROP_SIZE
        rng = np.random.default_rng([self.seed, index, 1])
        image = np.full((size, size, 3), rng.uniform(0.3, 0.7), np.float32)
        image += rng.normal(0.0, 0.05, image.shape).astype(np.float32)
        mask = np.zeros((size, size), np.float32)
        centre = np.round((points_2d + 0.5) * size - 0.5).astype(np.int64)
        r = _SPLAT_RADIUS
        offsets = np.array([(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= r * r])
        pix = (centre[:, None, :] + offsets[None, :, ::-1]).reshape(-1, 2)   # (x, y)
        colours = np.repeat(self._colours, len(offsets), axis=0)
        z = np.repeat(depth, len(offsets))
        inside = np.all((pix >= 0) & (pix < size), axis=-1)
        # Far first: the nearest surface is written last and stays on top.
        order = np.argsort(-z[inside], kind="stable")
        pix, colours = pix[inside][order], colours[inside][order]
        image[pix[:, 1], pix[:, 0]] = colours
        mask[pix[:, 1], pix[:, 0]] = 1.0
        return (image - IMAGENET_MEAN) / IMAGENET_STD, mask
