"""Float64 NumPy building blocks and random parameters for checking the Flax networks (not a test)."""

import jax
import numpy as np
from scipy.special import erf


def f64(tree):
    """A param tree (nested dicts of arrays) as float64 NumPy arrays."""
    if isinstance(tree, dict):
        return {k: f64(v) for k, v in tree.items()}
    return np.asarray(tree, np.float64)


def rel_err(actual, expected):
    """max |actual - expected| / max |expected|."""
    expected = np.asarray(expected, np.float64)
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected)) / np.max(np.abs(expected)))


def dense(x, p):
    return x @ p["kernel"] + p["bias"] if "bias" in p else x @ p["kernel"]


def layer_norm(x, p, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def attention(q, k, v):
    """Unscaled softmax attention. q [B, Q, H, D], k and v [B, K, H, D] -> [B, Q, H * D]."""
    logits = np.einsum("bqhd,bkhd->bhqk", q, k)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", weights, v)
    return out.reshape(*out.shape[:2], -1)


def split_heads(x, heads):
    return x.reshape(*x.shape[:-1], heads, x.shape[-1] // heads)


def random_params(module, *args, seed=0, **kwargs):
    """Random float32 params of `module` for inputs `args`, without running (compiling) its init.

    Kernels ~ N(0, 1 / fan_in), LayerNorm/BatchNorm scales ~ 1 + N(0, 0.05^2), the rest ~ N(0, 0.05^2),
    so activations stay O(1) and no scale or bias is a trivial 1 or 0.
    """
    rng = np.random.default_rng(seed)
    # Closing over args keeps Python scalars (flags, rates) static.
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))["params"]

    def fill(path, leaf):
        name = path[-1].key
        noise = rng.normal(0.0, 1.0, leaf.shape)
        if name == "kernel":
            return (noise / np.sqrt(np.prod(leaf.shape[:-1]))).astype(np.float32)
        return ((name == "scale") + 0.05 * noise).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)
