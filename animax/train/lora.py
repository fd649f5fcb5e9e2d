"""LoRA on the ViT attention projections (qkv and proj), as a transformation of parameters.

The model code does not change: the adapters live beside the parameters as
`{"backbone.blocks.attn.qkv": {"a": [..., in, r], "b": [..., r, out]}, ...}` (flat keys, one
entry per targeted kernel; a scanned backbone's kernels carry a leading depth axis, and so
do their factors), and `merge` adds `scale * a @ b` to each kernel before `model.apply`.
With `b` initialised to 0 the merged weights start equal to the base weights; training
updates `a` and `b` only (optim.py freezes the backbone), and export writes `merge(...)`, a
plain parameter tree any `animax.load_model` reads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import traverse_util

# (module, projection) pairs inside the backbone's attention blocks.
TARGETS = (("attn", "qkv"), ("attn", "proj"))


def _is_target(path):
    return path[0] == "backbone" and path[-1] == "kernel" and tuple(path[-3:-1]) in TARGETS


def init_lora(params, rank: int, rng):
    """Factors for every targeted kernel: a ~ N(0, 1/in) [..., in, rank], b = 0 [..., rank, out]."""
    flat = traverse_util.flatten_dict(params)
    targets = sorted(k for k in flat if _is_target(k))
    keys = jax.random.split(rng, max(len(targets), 1))
    lora = {}
    for key, path in zip(keys, targets):
        kernel = flat[path]
        *lead, fan_in, fan_out = kernel.shape
        lora[".".join(path[:-1])] = {
            "a": jax.random.normal(key, (*lead, fan_in, rank), jnp.float32) / jnp.sqrt(fan_in),
            "b": jnp.zeros((*lead, rank, fan_out), jnp.float32),
        }
    if not lora:
        raise ValueError("LoRA found no attention qkv/proj kernels under params['backbone']")
    return lora


def merge(params, lora, scale: float):
    """params with `kernel += scale * a @ b` at every adapted kernel (params itself is unchanged)."""
    if not lora:
        return params
    flat = traverse_util.flatten_dict(params)
    for name, factors in lora.items():
        path = (*name.split("."), "kernel")
        flat[path] = flat[path] + scale * jnp.einsum("...ir,...ro->...io", factors["a"], factors["b"])
    return traverse_util.unflatten_dict(flat)
