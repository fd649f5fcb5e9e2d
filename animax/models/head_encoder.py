"""The head branch: a box around the projected head keypoints, a 224x224 crop, a light CNN (or a
small ViT).

The box and crop live inside the jitted graph. The crop is bilinear sampling written as two
small matrix products (rows, then columns), which is exact, differentiable in the image and
fast on every backend, where a gather would be slow on CPU.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from animax.models.vit import ViT
from animax.runtime import exact_matmuls
from animax.smal.constants import HEAD_KEYPOINTS


def head_box(keypoints_2d, crop_size: int = 256, margin: float = 0.4, min_size: float = 32.0,
             indices: Sequence[int] = HEAD_KEYPOINTS):
    """Square box around the head keypoints, in crop pixels. No gradient flows through it.

    keypoints_2d [B, K, 2] crop-normalised ([-0.5, 0.5] spans the crop) -> [B, 4] (x1, y1, x2, y2).
    The side is the larger extent grown by `margin`, at least `min_size`, at most the crop;
    the box is shifted (not shrunk) to lie inside the crop.
    """
    pts = (jax.lax.stop_gradient(keypoints_2d[:, jnp.asarray(indices)]) + 0.5) * crop_size
    lo, hi = pts.min(axis=1), pts.max(axis=1)
    size = jnp.clip((hi - lo).max(axis=-1) * (1.0 + margin), min_size, crop_size)
    center = (lo + hi) / 2.0
    top_left = jnp.clip(center - size[:, None] / 2.0, 0.0, crop_size - size[:, None])
    return jnp.concatenate([top_left, top_left + size[:, None]], axis=-1)


def _interpolation_matrix(start, size, out_size: int, in_size: int):
    """[B, out, in] bilinear weights: output pixel i samples input coordinate
    start + (i + 0.5) * size / out_size - 0.5 (pixel centres at integers); outside is 0."""
    coord = start[:, None] + (jnp.arange(out_size) + 0.5) * (size[:, None] / out_size) - 0.5
    grid = jnp.arange(in_size, dtype=coord.dtype)
    return jnp.maximum(0.0, 1.0 - jnp.abs(coord[:, :, None] - grid[None, None, :]))


def crop_and_resize(images, boxes, out_size: int = 224):
    """Bilinear crop of each image's box to out_size x out_size. images [B,H,W,C], boxes [B,4] (x1,y1,x2,y2)."""
    _, height, width, _ = images.shape
    rows = _interpolation_matrix(boxes[:, 1], boxes[:, 3] - boxes[:, 1], out_size, height)
    cols = _interpolation_matrix(boxes[:, 0], boxes[:, 2] - boxes[:, 0], out_size, width)
    rows, cols = rows.astype(images.dtype), cols.astype(images.dtype)
    out = jnp.einsum("bih,bhwc->biwc", rows, images)
    return jnp.einsum("bjw,biwc->bijc", cols, out)


HEAD_ENCODERS = ("cnn", "vit")


class HeadEncoder(nn.Module):
    """The head crop encoded to `features` by one of HEAD_ENCODERS (`model.head_encoder.kind`):

    - "cnn": light CNN, strided 3x3 conv stages with GroupNorm, mean-pooled, projected;
    - "vit": a small ViT (the backbone's own `vit.ViT`: patch embedding, sin-cos positions,
      pre-norm blocks; `vit` = dict(width, depth, num_heads, mlp_dim, patch_size)), its patch
      tokens mean-pooled and projected.
    """
    widths: Sequence[int] = (32, 64, 128, 256, 512)
    features: int = 768
    crop: int = 224
    margin: float = 0.4
    min_size: float = 32.0
    kind: str = "cnn"
    vit: dict | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images, keypoints_2d):
        """images [B,S,S,3] normalised crop, keypoints_2d [B,K,2] -> (features [B,768], box [B,4])."""
        if self.kind not in HEAD_ENCODERS:
            raise ValueError(f"model.head_encoder.kind: {self.kind!r} is not one of {list(HEAD_ENCODERS)}")
        box = head_box(keypoints_2d, crop_size=images.shape[1], margin=self.margin, min_size=self.min_size)
        with exact_matmuls():       # resampling pixels: float32 at HIGHEST (the precision policy)
            x = crop_and_resize(images, box, self.crop).astype(self.dtype)
        if self.kind == "vit":
            tokens = ViT(**self.vit, patch_padding=0, dtype=self.dtype, name="vit")(x)["patch_tokens"]
            return nn.Dense(self.features, dtype=self.dtype, name="proj")(tokens.mean(axis=1)).astype(jnp.float32), box
        for i, width in enumerate(self.widths):
            x = nn.Conv(width, (3, 3), strides=2, padding=1, dtype=self.dtype, name=f"conv{i}")(x)
            x = nn.GroupNorm(num_groups=min(32, width // 4), dtype=jnp.float32, name=f"norm{i}")(x)
            x = x.astype(self.dtype)
            x = nn.gelu(x, approximate=False)
        x = x.mean(axis=(1, 2))
        return nn.Dense(self.features, dtype=self.dtype, name="proj")(x).astype(jnp.float32), box
