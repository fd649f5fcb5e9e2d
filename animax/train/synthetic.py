"""The in-memory synthetic training source: stand-in scenes (`animax.data.scenes`) rendered
straight into network crops. No files, no downloads; what `synthetic_inline` configs read.

Every example is a pure function of (seed, split, example index). The stream is a sequence
of batches; batch n of shard s (of S) holds examples (n * S + s) * B ... (n * S + s + 1) * B - 1,
so S processes together read each global batch once. The iterator state is the next batch
number.

Batches have the training keys (numpy): image [B,256,256,3] ImageNet-normalised;
keypoints_2d [B,K,3] crop-normalised xy + visibility in the crop; keypoints_3d [B,K,4]
camera-orientation xyz + 1; betas [B,NB]; pose [B,J,3,3]; has_betas [B]; has_pose [B];
family [B] int32; identity [B] int32 (-1: every render is a new individual); mask [B,256,256]
float32; has_mask [B] (ones); with a bank of body models, body_model [B] int32.
"""

from __future__ import annotations

import numpy as np

from animax.data.scenes import SceneSampler, render_crop
from animax.smal import BodyModelBank, SMALModel


class SyntheticQuadrupeds:
    """Batches of rendered stand-in scenes; see the module docstring. Checkpointable iterator."""

    def __init__(self, body: SMALModel | BodyModelBank, batch_size: int, seed: int = 0, shard_index: int = 0,
                 shard_count: int = 1, gt_fraction: float = 1.0, num_batches: int | None = None,
                 split: str = "train", num_examples: int | None = None, max_yaw: float = np.pi):
        """num_batches: stop after that many batches (a finite evaluation set); None = endless.
        gt_fraction: share of examples whose SMAL parameters are marked as annotated.
        num_examples: cycle through examples 0 .. num_examples - 1 only (a fixed set, e.g. the
        overfitting probe); None = every example new. max_yaw: the scenes' headings (SceneSampler).
        A bank of body models renders example i with model i mod M (its `body_model`)."""
        self.bodies = [body] if isinstance(body, SMALModel) else [body.own(m) for m in range(body.num_models)]
        self.batch_size, self.seed, self.split = batch_size, seed, split
        self.shard_index, self.shard_count = shard_index, shard_count
        self.gt_fraction, self.num_batches, self.num_examples = gt_fraction, num_batches, num_examples
        self.samplers = [SceneSampler(b, seed, max_yaw=max_yaw) for b in self.bodies]
        self._next_batch = 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.num_batches is not None and self._next_batch >= self.num_batches:
            raise StopIteration
        first = (self._next_batch * self.shard_count + self.shard_index) * self.batch_size
        self._next_batch += 1
        indices = range(first, first + self.batch_size)
        return self.examples([i % self.num_examples for i in indices] if self.num_examples else indices)

    def get_state(self) -> dict:
        return {"next_batch": self._next_batch}

    def set_state(self, state: dict) -> None:
        self._next_batch = int(state["next_batch"])

    def examples(self, indices) -> dict:
        """The batch of the given example indices."""
        models = [int(i) % len(self.bodies) for i in indices]
        scenes = [self.samplers[m].scene(self.split, int(i)) for m, i in zip(models, indices)]
        crops = [render_crop(scene, self.bodies[m]) for m, scene in zip(models, scenes)]
        batch = {key: np.stack([c[key] for c in crops]) for key in crops[0]}
        # Whether an example's SMAL parameters count as annotated: a draw of its own.
        has_gt = np.array([np.random.default_rng([self.seed, 7, int(i)]).random() < self.gt_fraction
                           for i in indices], np.float32)
        n = len(crops)
        return {**batch, "has_mask": np.ones(n, np.float32), "has_betas": has_gt, "has_pose": has_gt,
                "family": np.array([s.family for s in scenes], np.int32),
                "identity": np.full(n, -1, np.int32),
                **({"body_model": np.array(models, np.int32)} if len(self.bodies) > 1 else {})}
