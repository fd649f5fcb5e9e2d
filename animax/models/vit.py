"""ViTPose-style Vision Transformer: AniMer's backbone (ViT-H/16 on 256 x 192 crops).

`Model("H/16")` decodes the variant into widths; keyword arguments override any field
(`Model("Ti/16", depth=2)` for tests). Images are NHWC `[B, H, W, 3]`; AniMer feeds
`[B, 256, 192, 3]`, which the padded patch embedding (kernel 16, stride 16, padding 2)
turns into a 16 x 12 token grid (`pos_embed` is sized for the grid of the images given to
`init`). `model.apply(variables, images, train=False)` returns

    feature_map   [B, 16, 12, width]  patch tokens after `last_norm`, row-major grid
    cls_token     [B, width]          token 0 after `last_norm`
    patch_tokens  [B, 192, width]     the same patch tokens, flattened

With `conv_stem` widths, a `ConvStem` of early convolutions adds its features to the patch
embedding (from-scratch configs; off in AniMer's).

Parameters are float32; `dtype` is the compute dtype of the matmuls. LayerNorm, softmax
and the residual stream stay float32, so bfloat16 compute loses little accuracy.

With `train=True` and `drop_path_rate > 0` (AniMer trains with 0.55) the blocks apply
stochastic depth, at a rate linear from 0 at the first block to `drop_path_rate` at the
last, and `apply` needs a `dropout` rng. Evaluation is deterministic.

Parameter names follow AniMer's `backbone.*` modules in the unscanned layout (`blocks_{i}`);
the PyTorch name of every leaf is in the one table `animax/convert/keymap.py` reads both ways.
`stack_blocks` moves `blocks_{i}/...` to `blocks/...` with a leading depth axis, the layout
of `scan_blocks=True`; `unstack_blocks` is its inverse.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_VARIANTS = {  # name: (width, depth, num_heads, mlp_dim)
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    "H": (1280, 32, 16, 5120),
}

_dense_init = nn.initializers.truncated_normal(0.02)
_LayerNorm = functools.partial(nn.LayerNorm, epsilon=1e-6, dtype=jnp.float32)


def sincos_pos_embed(height: int, width: int, channels: int) -> np.ndarray:
    """[1, 1 + height * width, channels] fixed 2D sine-cosine position code, the start value of
    `pos_embed` (converted checkpoints overwrite it). Rows 1.. are the row-major token grid:
    the first half of the channels code the row, the second half the column, each as sines
    and cosines of geometrically spaced frequencies. Row 0 (the class-token slot, which
    ViTPose adds to every token) is zero.

    Why not a small random start: 0.02-sized random rows are swamped by the patch embedding,
    so a model trained from scratch starts blind to where each token is and has to grow a
    position code first; this one says where every token is from the first step.
    """
    if channels % 4:
        raise ValueError(f"sin-cos position code needs channels divisible by 4, got {channels}")
    quarter = channels // 4
    frequencies = 1.0 / 10000.0 ** (np.arange(quarter) / quarter)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    code = [f(np.outer(axis.reshape(-1), frequencies)) for axis in (rows, cols) for f in (np.sin, np.cos)]
    grid = np.concatenate(code, axis=-1)
    return np.concatenate([np.zeros((1, channels)), grid])[None].astype(np.float32)


def decode_variant(variant):
    """"H/16" -> {width: 1280, depth: 32, num_heads: 16, mlp_dim: 5120, patch_size: 16}."""
    name, patch = variant.split("/")
    width, depth, num_heads, mlp_dim = _VARIANTS[name]
    return dict(width=width, depth=depth, num_heads=num_heads, mlp_dim=mlp_dim, patch_size=int(patch))


def attention(q, k, v):
    """Multi-head softmax attention with float32 logits and softmax.

    q [B, Q, H, D] (already scaled), k and v [B, K, H, D] -> [B, Q, H, D] in v's dtype.
    The products run over one merged batch axis of B x H heads ([B*H, N, D]): XLA:CPU's
    batched products run several times faster so than with the head axis between the tokens
    and the features (measured in docs/performance.md); the transposes cost little on any backend.
    """
    batch, queries, heads, dim = q.shape
    q, k, v = (jnp.swapaxes(t, 1, 2).reshape(batch * heads, -1, t.shape[-1]) for t in (q, k, v))
    logits = jnp.einsum("xqd,xkd->xqk", q, k, preferred_element_type=jnp.float32)
    weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    out = jnp.einsum("xqk,xkd->xqd", weights, v).reshape(batch, heads, queries, -1)
    return jnp.swapaxes(out, 1, 2)


def attention_implementation(dtype) -> str | None:
    """"cudnn" (fused flash attention) on a GPU in bfloat16 or float16; None elsewhere: `attention`,
    XLA's products (CPU, TPU, and float32 everywhere: cuDNN's fused kernel has no float32 path)."""
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    return "cudnn" if half and jax.default_backend() == "gpu" else None


def fused_attention(q, k, v, implementation: str):
    """`attention` through jax.nn.dot_product_attention (same layout [B, N, H, D], q already
    scaled, so scale 1): implementation "cudnn" on GPUs; "xla" is the reference the tests hold
    equal to `attention`."""
    return jax.nn.dot_product_attention(q, k, v, scale=1.0, implementation=implementation)


class Attention(nn.Module):
    """Self-attention with a fused, biased qkv projection. [B, N, W] -> [B, N, W]."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, n, width = x.shape
        head_dim = width // self.num_heads
        dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=_dense_init)
        qkv = dense(3 * width, name="qkv")(x)
        q, k, v = (t.reshape(b, n, self.num_heads, head_dim) for t in jnp.split(qkv, 3, axis=-1))
        # Scaling q (N x D) rather than the logits (N x N), as ViTPose does.
        q = q * head_dim**-0.5
        implementation = attention_implementation(self.dtype)
        out = attention(q, k, v) if implementation is None else fused_attention(q, k, v, implementation)
        out = out.reshape(b, n, width)
        return dense(width, name="proj")(out)


class Mlp(nn.Module):
    """fc1 -> exact (erf) GELU -> fc2. [B, N, W] -> [B, N, W]."""

    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=_dense_init)
        y = nn.gelu(dense(self.mlp_dim, name="fc1")(x), approximate=False)
        return dense(x.shape[-1], name="fc2")(y)


class Block(nn.Module):
    """Pre-norm transformer block with stochastic depth on both residual branches."""

    num_heads: int
    mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, drop_path_rate, deterministic):
        """x [B, N, W] float32 -> (x [B, N, W], None); the pair lets `nn.scan` drive the block.

        drop_path_rate: this block's stochastic-depth rate (a scalar; traced under scan).
        """
        y = Attention(self.num_heads, self.dtype, name="attn")(_LayerNorm(name="norm1")(x))
        x = x + self._drop_path(y, drop_path_rate, deterministic)
        y = Mlp(self.mlp_dim, self.dtype, name="mlp")(_LayerNorm(name="norm2")(x))
        x = x + self._drop_path(y, drop_path_rate, deterministic)
        return x, None

    def _drop_path(self, y, rate, deterministic):
        """Zero a residual branch for whole samples with probability `rate`, rescale the rest."""
        if deterministic:
            return y
        keep = 1.0 - rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (y.shape[0],) + (1,) * (y.ndim - 1))
        return jnp.where(mask, y / keep, 0.0)


class PatchEmbed(nn.Module):
    """Padded strided convolution. [B, H, W, 3] -> [B, h, w, width]."""

    width: int
    patch_size: int
    padding: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images):
        p, pad = self.patch_size, self.padding
        return nn.Conv(self.width, (p, p), strides=(p, p), padding=((pad, pad), (pad, pad)),
                       dtype=self.dtype, name="proj")(images)


class ConvStem(nn.Module):
    """Early convolutions beside the patch embedding (animax's; not AniMer). [B, H, W, 3] -> [B, h, w, width].

    One 3 x 3 stride-2 convolution and exact GELU per entry of `widths`, then a 1 x 1 projection
    to the token width, which starts at zero: added to the patch embedding, a stem put into a
    trained model leaves its outputs unchanged until training moves the projection.

    Why: a 16 x 16 patch embedding is one linear map of each patch's 768 pixels to the token width,
    and a small ViT trained from scratch reads sub-patch detail (a leg is one or two patches wide)
    poorly. Stacked small convolutions see across patch borders and build detail nonlinearly
    (Xiao et al. 2021, "Early convolutions help transformers see better").
    """

    width: int
    widths: tuple
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images):
        x = images
        for i, features in enumerate(self.widths):
            x = nn.Conv(features, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), dtype=self.dtype,
                        name=f"conv_{i}")(x)
            x = nn.gelu(x, approximate=False)
        return nn.Conv(self.width, (1, 1), kernel_init=nn.initializers.zeros, dtype=self.dtype, name="proj")(x)


# Activation recomputation in the backward pass, per ViT block (config.model.remat):
#   none  keep every activation
#   full  keep only each block's input; recompute everything inside it
#   dots  keep the outputs of the dense layers (matmuls without batch dimensions: qkv, proj,
#         fc1, fc2), recompute the attention's batched products, softmax, norms and GELU
REMAT_POLICIES = {"none": None, "full": jax.checkpoint_policies.nothing_saveable,
                  "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def remat_policy(remat):
    """config.model.remat (a REMAT_POLICIES key, or True / False for full / none) -> policy or None."""
    name = {True: "full", False: "none"}.get(remat, remat)
    if name not in REMAT_POLICIES:
        raise ValueError(f"config.model.remat must be one of {list(REMAT_POLICIES)} (or True / False), got {remat!r}")
    return REMAT_POLICIES[name]


class ViT(nn.Module):
    """ViTPose backbone with a class token; see the module docstring for inputs and outputs."""

    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    patch_size: int = 16
    patch_padding: int = 2
    drop_path_rate: float = 0.0
    scan_blocks: bool = False
    remat: bool | str = False       # REMAT_POLICIES key; True = "full", False = "none"
    conv_stem: tuple = ()           # ConvStem widths, one per halving; () = none (AniMer)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images, train=False):
        x = PatchEmbed(self.width, self.patch_size, self.patch_padding, self.dtype, name="patch_embed")(images)
        if self.conv_stem:
            stem = ConvStem(self.width, tuple(self.conv_stem), self.dtype, name="conv_stem")(images)
            if stem.shape != x.shape:
                raise ValueError(f"conv_stem: {len(self.conv_stem)} halvings give a {stem.shape[1:3]} grid, the "
                                 f"patch embedding {x.shape[1:3]}; "
                                 f"use log2(patch_size) = {self.patch_size.bit_length() - 1}")
            x = x + stem
        b, h, w, c = x.shape
        x = x.reshape(b, h * w, c)
        start = sincos_pos_embed(h, w, c)
        pos_embed = self.param("pos_embed", lambda _key, shape: jnp.asarray(start).reshape(shape), start.shape)
        # Row 0 belongs to the pre-training class token; ViTPose adds it to every patch token
        # and gives the class token no position at all. Adding float32 rows makes the
        # residual stream float32 whatever the compute dtype.
        x = x + pos_embed[:, 1:] + pos_embed[:, :1]
        cls_token = self.param("cls_token", nn.initializers.normal(1e-6), (1, 1, c))
        x = jnp.concatenate([jnp.broadcast_to(cls_token, (b, 1, c)), x], axis=1)

        rates = np.linspace(0.0, self.drop_path_rate, self.depth)
        deterministic = not train or self.drop_path_rate == 0.0
        block = Block
        policy = remat_policy(self.remat)
        if policy is not None:
            block = nn.remat(block, prevent_cse=not self.scan_blocks, static_argnums=(3,), policy=policy)
        if self.scan_blocks:
            blocks = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
                             in_axes=(0, nn.broadcast), length=self.depth)
            x, _ = blocks(self.num_heads, self.mlp_dim, self.dtype, name="blocks")(
                x, jnp.asarray(rates, jnp.float32), deterministic)
        else:
            for i in range(self.depth):
                x, _ = block(self.num_heads, self.mlp_dim, self.dtype, name=f"blocks_{i}")(
                    x, float(rates[i]), deterministic)

        x = _LayerNorm(name="last_norm")(x)
        patch_tokens = x[:, 1:]
        return {"feature_map": patch_tokens.reshape(b, h, w, c), "cls_token": x[:, 0], "patch_tokens": patch_tokens}


def Model(variant=None, **kw):
    """A `ViT` from a variant string ("H/16"); keyword arguments override its fields."""
    return ViT(**{**(decode_variant(variant) if variant else {}), **kw})


def _block_index(name):
    return int(name.removeprefix("blocks_"))


def stack_blocks(params):
    """Unscanned backbone params (`blocks_0` .. `blocks_{n-1}`) -> scanned (`blocks`, depth axis first)."""
    names = sorted((k for k in params if k.startswith("blocks_")), key=_block_index)
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *(params[k] for k in names))
    return {**{k: v for k, v in params.items() if not k.startswith("blocks_")}, "blocks": stacked}


def unstack_blocks(params):
    """Scanned backbone params (`blocks` with a leading depth axis) -> unscanned (`blocks_{i}`)."""
    blocks = params["blocks"]
    depth = jax.tree.leaves(blocks)[0].shape[0]
    unstacked = {f"blocks_{i}": jax.tree.map(lambda x, i=i: x[i], blocks) for i in range(depth)}
    return {**{k: v for k, v in params.items() if k != "blocks"}, **unstacked}
