"""How animax runs on the machine it finds: the precision policy, the batch size per device, the
persistent compilation cache, several processes (hosts) joined by jax.distributed.

Precision policy (docs/performance.md, "Precision policy"):
- Parameters are float32 on disk.
- `float32` (the default on CPU; AniMer-parity mode): every matmul at precision HIGHEST, so a
  GPU's TF32 or a TPU's bfloat16 passes never stand in for float32 (`exact_matmuls` around
  the whole step).
- `bfloat16` (the default on GPU and TPU): the weight matrices are cast once, when the model is
  placed on the devices (`cast_weights`), not on every call; LayerNorm, softmax, the residual
  stream and everything after the network (skinning, projection, geometry, losses, metrics)
  stay float32 at HIGHEST precision (`exact_matmuls` scoped around them in the modules).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

DTYPES = ("float32", "bfloat16")
ACCELERATORS = ("gpu", "cuda", "rocm", "tpu")
# Crops per device and batch (infer.py's --batch-size default is this x the local devices).
BATCH_PER_DEVICE = {"accelerator": 32, "cpu": 8}
BARRIER_TIMEOUT_S = 24 * 3600      # gather_ints: how long a process waits for the others


def on_accelerator() -> bool:
    return jax.default_backend() in ACCELERATORS


def default_dtype() -> str:
    """bfloat16 on GPU/TPU, float32 on CPU (which has no fast bfloat16 path)."""
    return "bfloat16" if on_accelerator() else "float32"


def default_batch_size(devices=None) -> int:
    """BATCH_PER_DEVICE for this backend times the number of (local) devices."""
    devices = jax.local_devices() if devices is None else devices
    return BATCH_PER_DEVICE["accelerator" if on_accelerator() else "cpu"] * len(devices)


def exact_matmuls():
    """Context (at trace time): the matmuls traced inside it run at precision HIGHEST."""
    return jax.default_matmul_precision("highest")


def step_precision(dtype) -> contextlib.AbstractContextManager:
    """Context for tracing a whole step in `dtype`: float32 is exact everywhere; bfloat16 leaves
    the network's matmuls at the backend's default (bfloat16 inputs, float32 accumulation)."""
    return exact_matmuls() if jnp.dtype(dtype) == jnp.float32 else contextlib.nullcontext()


def _is_weight_matrix(path, leaf) -> bool:
    return getattr(path[-1], "key", None) == "kernel" and getattr(leaf, "ndim", 0) >= 2


def cast_weights(params, dtype):
    """Dense and convolution kernels cast to the compute dtype once (biases, norms, position
    embeddings and the class token stay float32, as the modules keep them)."""
    dtype = jnp.dtype(dtype)
    if dtype == jnp.float32:
        return params
    return jax.tree_util.tree_map_with_path(lambda p, x: x.astype(dtype) if _is_weight_matrix(p, x) else x, params)


def default_cache_dir() -> Path:
    """~/.cache/animax/jax, or under $XDG_CACHE_HOME."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "animax" / "jax"


def enable_compile_cache(path=None) -> Path | None:
    """JAX's persistent compilation cache in `path` (default: $ANIMAX_COMPILE_CACHE, else
    `default_cache_dir()`; "none" turns it off): a second process with the same program and
    backend loads the executable instead of compiling it. Returns the folder, or None when off."""
    path = os.environ.get("ANIMAX_COMPILE_CACHE") if path is None else path
    if path is not None and str(path).lower() == "none":
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    folder = Path(path) if path is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # Every program animax compiles is worth keeping: the defaults skip those under a second.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None):
    """`jax.distributed.initialize` when more than one process is asked for.

    Each argument falls back to the environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES,
    JAX_PROCESS_ID). With no coordinator at all this is a single-process run and nothing
    happens. Call before anything touches the devices.
    """
    coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    num_processes = num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "1"))
    process_id = process_id if process_id is not None else int(os.environ.get("JAX_PROCESS_ID", "0"))
    if not coordinator_address or num_processes == 1:
        return
    jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id)


def gather_ints(value: int, name: str) -> list[int]:
    """Every process's `value`, in process order ([value] in a single-process run), once all the
    processes have come to the barrier `name`. The wait is on jax.distributed's key-value store,
    with a day's timeout: its collectives give up after 30 s, and one host's share of a run can
    take much longer than another's (a process that dies ends the wait sooner, by heartbeat)."""
    if jax.process_count() == 1:
        return [int(value)]
    from jax.experimental import multihost_utils
    from orbax.checkpoint import multihost

    multihost.get_barrier_sync_fn()(key=name, timeout_ms=BARRIER_TIMEOUT_S * 1000)
    return [int(v) for v in multihost_utils.process_allgather(np.int32(value))]
