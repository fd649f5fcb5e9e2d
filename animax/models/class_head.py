"""AniMer's class-token projection head for the supervised-contrastive loss.

`ClassTokenHead()` maps the backbone's `cls_token [B, 1280]` to `[B, 256]`:
Linear 1280 -> 4096 (no bias) -> BatchNorm -> ReLU -> Linear 4096 -> 4096 (no bias) ->
BatchNorm -> ReLU -> Linear 4096 -> 256 (no bias) -> BatchNorm without scale and bias.

BatchNorm follows PyTorch's defaults (eps 1e-5, torch momentum 0.1 == flax momentum 0.9).
With `train=True` it normalises with the batch statistics and updates the running ones in
`batch_stats` (apply with `mutable=["batch_stats"]`); otherwise it uses the running ones.
One difference from torch: flax updates the running variance with the biased batch
variance, torch with the unbiased one (a factor B / (B - 1)). Training outputs agree.

Submodules are named after the torch `nn.Sequential` indices (`layers_0`, `layers_1`, ...;
ReLUs are 2 and 5); the PyTorch name of every leaf is in `animax/convert/keymap.py`.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp


class ClassTokenHead(nn.Module):
    """[B, embed_dim] -> [B, output_dim]; see the module docstring."""

    hidden_dim: int = 4096
    output_dim: int = 256
    num_layers: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train=False):
        batch_norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                                       epsilon=1e-5, dtype=jnp.float32)
        for layer in range(self.num_layers):
            last = layer == self.num_layers - 1
            # torch Sequential: [Linear, BatchNorm, ReLU] per hidden layer, [Linear, BatchNorm] last.
            x = nn.Dense(self.output_dim if last else self.hidden_dim, use_bias=False, dtype=self.dtype,
                         name=f"layers_{3 * layer}")(x)
            x = batch_norm(use_scale=not last, use_bias=not last, name=f"layers_{3 * layer + 1}")(x)
            if not last:
                x = nn.relu(x)
        return x
