"""Fusion of the visual, head and SMAL-parameter streams into one 512-d descriptor, by one of
FUSIONS (`model.fusion.kind`): an MLP over the concatenation, or a small Transformer over the
streams as tokens. Both take (visual [B, 1280], head [B, 768], params [B, 359]) -> [B, 512]."""

import flax.linen as nn
import jax.numpy as jnp

from animax.models.vit import Block

STREAMS = ("visual", "head", "params")


def smal_parameter_vector(betas, pose, cam):
    """betas [B,41], pose [B,35,3,3], cam [B,3] -> [B, 41 + 315 + 3] = [B, 359]."""
    return jnp.concatenate([betas, pose.reshape(pose.shape[0], -1), cam], axis=-1)


class Fusion(nn.Module):
    """LayerNorm over [visual 1280 | head 768 | params 359], then Dense-GELU-Dense to 512.

    The norm puts the three streams, whose scales differ by orders of magnitude, on one footing.
    """
    hidden: int = 1024
    features: int = 512
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, visual, head, params):
        x = jnp.concatenate([visual, head, params], axis=-1)
        x = nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name="norm")(x)
        x = nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x)
        x = nn.gelu(x, approximate=False)
        return nn.Dense(self.features, dtype=self.dtype, name="fc2")(x).astype(jnp.float32)


class TransformerFusion(nn.Module):
    """Each stream LayerNorm'd on its own and projected to `dim` as one token, plus a learned
    type embedding; a learned readout token in front; `depth` of the ViT's pre-norm blocks;
    the readout token, normalised, projected to `features`. Attention lets the descriptor weigh
    the streams per example instead of by fixed weights over their concatenation."""
    dim: int = 256
    depth: int = 2
    heads: int = 4
    mlp_dim: int = 512
    features: int = 512
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, visual, head, params):
        tokens = jnp.stack([nn.Dense(self.dim, dtype=self.dtype, name=f"embed_{name}")(
                                nn.LayerNorm(epsilon=1e-5, dtype=jnp.float32, name=f"norm_{name}")(x))
                            for name, x in zip(STREAMS, (visual, head, params))], axis=1)
        init = nn.initializers.normal(0.02)
        tokens = tokens + self.param("type_embed", init, (len(STREAMS), self.dim))
        readout = jnp.broadcast_to(self.param("readout", init, (1, 1, self.dim)), (tokens.shape[0], 1, self.dim))
        x = jnp.concatenate([readout, tokens], axis=1).astype(jnp.float32)
        for i in range(self.depth):
            x, _ = Block(self.heads, self.mlp_dim, self.dtype, name=f"block{i}")(x, 0.0, deterministic=True)
        x = nn.LayerNorm(epsilon=1e-6, dtype=jnp.float32, name="norm")(x[:, 0])
        return nn.Dense(self.features, dtype=self.dtype, name="out")(x).astype(jnp.float32)


FUSIONS = ("mlp", "transformer")


def make_fusion(cfg, dtype):
    """The fusion module `cfg` (model.fusion) names."""
    kind = cfg.kind
    if kind == "mlp":
        return Fusion(hidden=cfg.hidden, features=cfg.features, dtype=dtype)
    if kind == "transformer":
        t = cfg.transformer
        return TransformerFusion(dim=t.dim, depth=t.depth, heads=t.heads, mlp_dim=t.mlp_dim, features=cfg.features,
                                 dtype=dtype)
    raise ValueError(f"model.fusion.kind: {kind!r} is not one of {list(FUSIONS)}")
