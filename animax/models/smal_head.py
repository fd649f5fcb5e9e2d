"""AniMer's SMAL head: a one-token cross-attention transformer decoder with linear readouts.

`SMALHead().apply(variables, feature_map)` reads the backbone's `feature_map [B, 16, 12, 1280]`
(192 context tokens) and returns

    pose         [B, 35, 3, 3]  rotation matrices, joint 0 = global orientation
    betas        [B, 41]
    cam          [B, 3]         weak-perspective [s, tx, ty] of the crop
    pose_6d      [B, 210]       raw 6D pose of the last iteration
    pose_6d_iters [I, B, 210], betas_iters [I, B, 41], cam_iters [I, B, 3]: raw predictions
                                after each of the I = `ief_iters` refinement steps

The query is a zero token of dim 1 embedded by `to_token_embedding` plus `pos_embedding`.
Each of the `depth` layers adds pre-norm self-attention, pre-norm cross-attention to the
context and a pre-norm feed-forward to it. Readouts are added to fixed initial values
(pose 0, betas 0, cam [0.9, 0, 0]). With `rest_init` (training from scratch, not AniMer's)
the pose starts from the rest pose instead (every joint's 6D = identity) and the readouts
from near zero (Xavier-uniform, gain 0.01, as HMR 2.0 does): the first predictions are the
template in its rest pose, not 35 arbitrary rotations of near-degenerate 6D vectors.
Parameters are float32; `dtype` is the matmul compute dtype, with LayerNorm, softmax, the
residual stream and the readouts in float32.

Parameter names follow AniMer's `smal_head.*` modules (`transformer/layers_i/self_attn`,
`cross_attn`, `ff`, `decpose`, `decshape`, `deccam`); the PyTorch name of every leaf is in the
one table `animax/convert/keymap.py` reads both ways. The buffers `init_pose`, `init_betas`,
`init_cam` are constants of the module.
The fused projections keep torch's output layout: `to_qkv` is [q | k | v] and `to_kv` is
[k | v], each part ordered (heads, dim_head).
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from animax.geometry import rot6d_to_rotmat
from animax.models.vit import attention

_LayerNorm = functools.partial(nn.LayerNorm, epsilon=1e-5, dtype=jnp.float32)


def _split_heads(x, heads):
    """[B, N, heads * dim_head] -> [B, N, heads, dim_head]."""
    return x.reshape(*x.shape[:-1], heads, x.shape[-1] // heads)


class SelfAttention(nn.Module):
    """Pre-norm self-attention branch (the residual is added by the caller). [B, N, D] -> [B, N, D]."""

    heads: int
    dim_head: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, n, dim = x.shape
        y = _LayerNorm(name="norm")(x)
        qkv = nn.Dense(3 * self.heads * self.dim_head, use_bias=False, dtype=self.dtype, name="to_qkv")(y)
        q, k, v = (_split_heads(t, self.heads) for t in jnp.split(qkv, 3, axis=-1))
        out = attention(q * self.dim_head**-0.5, k, v).reshape(b, n, -1)
        return nn.Dense(dim, dtype=self.dtype, name="to_out")(out)


class CrossAttention(nn.Module):
    """Pre-norm cross-attention branch. x [B, N, D], context [B, M, C] -> [B, N, D].

    Only the query side is normalised; the context enters as it is.
    """

    heads: int
    dim_head: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, context):
        b, n, dim = x.shape
        inner = self.heads * self.dim_head
        y = _LayerNorm(name="norm")(x)
        q = nn.Dense(inner, use_bias=False, dtype=self.dtype, name="to_q")(y)
        kv = nn.Dense(2 * inner, use_bias=False, dtype=self.dtype, name="to_kv")(context)
        k, v = (_split_heads(t, self.heads) for t in jnp.split(kv, 2, axis=-1))
        out = attention(_split_heads(q, self.heads) * self.dim_head**-0.5, k, v).reshape(b, n, inner)
        return nn.Dense(dim, dtype=self.dtype, name="to_out")(out)


class FeedForward(nn.Module):
    """Pre-norm MLP branch: norm -> fc1 -> exact GELU -> fc2. [B, N, D] -> [B, N, D]."""

    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        y = nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc1")(_LayerNorm(name="norm")(x))
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(nn.gelu(y, approximate=False))


class DecoderLayer(nn.Module):
    """Self-attention, cross-attention and feed-forward, each as a pre-norm residual branch."""

    heads: int
    dim_head: int
    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, context):
        """x [B, N, D] float32, context [B, M, C] -> [B, N, D] float32."""
        x = x + SelfAttention(self.heads, self.dim_head, self.dtype, name="self_attn")(x)
        x = x + CrossAttention(self.heads, self.dim_head, self.dtype, name="cross_attn")(x, context)
        return x + FeedForward(self.mlp_dim, self.dtype, name="ff")(x)


class TransformerDecoder(nn.Module):
    """Token embedding + position embedding + `depth` decoder layers (no final norm)."""

    dim: int = 1024
    depth: int = 6
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 1024
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tokens, context, query_inputs=None):
        """tokens [B, N, T], context [B, M, C], query_inputs [B, F] or None -> [B, N, dim] float32.

        query_inputs (animax's, not AniMer's) are embedded and added to every query token; the
        embedding starts at zero, so a model it is added to starts with unchanged outputs.
        """
        x = nn.Dense(self.dim, dtype=self.dtype, name="to_token_embedding")(tokens)
        pos_embedding = self.param("pos_embedding", nn.initializers.normal(1.0), (1, tokens.shape[1], self.dim))
        x = x + pos_embedding  # float32 from here on
        if query_inputs is not None:
            x = x + nn.Dense(self.dim, kernel_init=nn.initializers.zeros, name="query_input_embedding")(
                query_inputs.astype(jnp.float32))[:, None]
        for i in range(self.depth):
            x = DecoderLayer(self.heads, self.dim_head, self.mlp_dim, self.dtype, name=f"layers_{i}")(x, context)
        return x


class SMALHead(nn.Module):
    """AniMer's SMAL regression head; see the module docstring for inputs and outputs."""

    num_joints: int = 35
    num_betas: int = 41
    ief_iters: int = 1
    dim: int = 1024
    depth: int = 6
    heads: int = 8
    dim_head: int = 64
    mlp_dim: int = 1024
    rest_init: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feature_map, query_inputs=None):
        """query_inputs [B, F]: optional per-image inputs of the query (the pipeline's keypoints
        read from its dense heatmap); None is AniMer's head."""
        b = feature_map.shape[0]
        context = feature_map.reshape(b, -1, feature_map.shape[-1])
        decoder = TransformerDecoder(self.dim, self.depth, self.heads, self.dim_head, self.mlp_dim, self.dtype,
                                     name="transformer")
        token = decoder(jnp.zeros((b, 1, 1), jnp.float32), context, query_inputs)[:, 0]

        # AniMer feeds the decoder a zero token at every refinement step, so its output and the
        # readouts are the same each step: compute them once and accumulate them `ief_iters` times.
        init = nn.initializers.variance_scaling(0.01**2, "fan_avg", "uniform") if self.rest_init \
            else nn.initializers.lecun_normal()

        def readout(features, name):
            return nn.Dense(features, dtype=self.dtype, kernel_init=init, name=name)(token).astype(jnp.float32)

        d_pose = readout(6 * self.num_joints, "decpose")
        d_betas = readout(self.num_betas, "decshape")
        d_cam = readout(3, "deccam")
        rest_6d = jnp.tile(jnp.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], jnp.float32), self.num_joints)
        pose_6d = jnp.broadcast_to(rest_6d if self.rest_init else 0.0, (b, 6 * self.num_joints))
        betas = jnp.zeros((b, self.num_betas), jnp.float32)
        cam = jnp.broadcast_to(jnp.array([0.9, 0.0, 0.0], jnp.float32), (b, 3))
        iters = []
        for _ in range(self.ief_iters):
            pose_6d, betas, cam = d_pose + pose_6d, d_betas + betas, d_cam + cam
            iters.append((pose_6d, betas, cam))
        pose_6d_iters, betas_iters, cam_iters = (jnp.stack(t) for t in zip(*iters))
        return {
            "pose": rot6d_to_rotmat(pose_6d.reshape(b, self.num_joints, 6)),
            "betas": betas,
            "cam": cam,
            "pose_6d": pose_6d,
            "pose_6d_iters": pose_6d_iters,
            "betas_iters": betas_iters,
            "cam_iters": cam_iters,
        }
