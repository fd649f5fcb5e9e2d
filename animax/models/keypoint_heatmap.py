"""A dense keypoint readout on the backbone's patch tokens: an auxiliary training signal (animax's).

`KeypointHeatmap(num_keypoints).apply(variables, feature_map)` maps `feature_map [B, h, w, C]`
to logits `[B, h, w, K]`: one linear map per token, so what a token says about keypoint k can
only come from that token's own features. Its loss (`losses.keypoint_heatmap_loss`) asks the
token under each true keypoint to light up.

Why: the SMAL head regresses ~150 numbers from one query token, and every gradient it sends the
backbone is a global one. A ViT trained from scratch on that signal learned the body's position,
heading and scale (global properties of the silhouette) and left the limbs at the rest pose;
nothing asked its tokens where a paw is. The dense loss does, per token. The tokens do learn it
(KL 2.33 -> 0.88 nats per keypoint), and with the query below the keypoints and PCK improve, but
the limbs stay at the rest pose (docs/training.md, "Local evidence"). It is off in AniMer's
recipe (a pretrained ViTPose backbone already knows where keypoints are).

With `model.smal_head.keypoint_query` the keypoints it finds (`expected_keypoints`, a soft-argmax
over the tokens) also enter the SMAL head's query, so the head regresses the pose from where
the paws, knees and ears are instead of having to find them by attention first.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from animax.geometry import CROP_SIZE

# The backbone sees crop columns 32..224 of the 256 x 256 crop (the pipeline's BACKBONE_COLUMNS).
WINDOW_X0, WINDOW_WIDTH = 32, 192


def token_centres(grid_h: int, grid_w: int) -> np.ndarray:
    """[h, w, 2] crop-normalised (x / S - 0.5, y / S - 0.5) centres of the patch tokens of the
    backbone's window, the coordinates of the batch's `keypoints_2d`."""
    x = WINDOW_X0 + (np.arange(grid_w) + 0.5) * WINDOW_WIDTH / grid_w
    y = (np.arange(grid_h) + 0.5) * CROP_SIZE / grid_h
    xx, yy = np.meshgrid(x, y)
    return np.stack([xx, yy], -1) / CROP_SIZE - 0.5


def in_window(xy) -> jnp.ndarray:
    """[...] whether crop-normalised points [..., 2] fall inside the backbone's window."""
    px = (xy + 0.5) * CROP_SIZE
    return ((px[..., 0] >= WINDOW_X0) & (px[..., 0] < WINDOW_X0 + WINDOW_WIDTH)
            & (px[..., 1] >= 0) & (px[..., 1] < CROP_SIZE))


def expected_keypoints(logits) -> jnp.ndarray:
    """logits [B, h, w, K] -> [B, K, 2] crop-normalised: each keypoint's token centres weighted
    by its softmax over the tokens (soft-argmax)."""
    b, h, w, k = logits.shape
    probs = jax.nn.softmax(logits.reshape(b, h * w, k).astype(jnp.float32), axis=1)
    return jnp.einsum("btk,tc->bkc", probs, jnp.asarray(token_centres(h, w).reshape(-1, 2), jnp.float32))


class KeypointHeatmap(nn.Module):
    """feature_map [B, h, w, C] -> logits [B, h, w, K] float32 (one Dense over each token)."""

    num_keypoints: int

    @nn.compact
    def __call__(self, feature_map):
        return nn.Dense(self.num_keypoints, dtype=jnp.float32, name="readout")(feature_map.astype(jnp.float32))
