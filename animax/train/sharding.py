"""Device mesh, shardings, and global batches from per-process data (multi-host start-up:
`animax.runtime.initialize_distributed`).

The mesh has two axes, `data` and `fsdp`, sized by `config.mesh` (data = -1: all the devices
fsdp leaves). FSDP is data parallelism whose parameters are split too, so the batch axis is
sharded over both axes (every device sees its own examples); parameters and optimizer state
are either replicated (fsdp = 1) or split over `fsdp` along their largest axis that the
fsdp size divides. Leaves under `mesh.fsdp_min_bytes` (biases, norm scales; big_vision's rule
uses 4 MiB) and leaves with no such axis stay replicated; XLA gathers split ones per use.
With `mesh.zero1` the optimizer state (AdamW's two moments: twice the parameters) is split
over both axes, all the devices, whatever fsdp says of the parameters (ZeRO stage 1): each
device updates its share of the moments and XLA all-gathers the updated parameters.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def make_mesh(mesh_config, devices=None) -> Mesh:
    """A ('data', 'fsdp') mesh over `devices` (default: all devices of all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    fsdp = mesh_config.fsdp
    data = mesh_config.data if mesh_config.data > 0 else len(devices) // fsdp
    if data * fsdp != len(devices):
        raise ValueError(f"mesh data={mesh_config.data} x fsdp={fsdp} does not cover the {len(devices)} devices")
    if len(devices) == len(jax.devices()):
        grid = mesh_utils.create_device_mesh((data, fsdp), devices, allow_split_physical_axes=True)
    else:
        grid = np.asarray(devices).reshape(data, fsdp)
    return Mesh(grid, ("data", "fsdp"))


def fsdp_spec(shape, fsdp_size: int, nbytes: int = 0, min_bytes: int = 0, axes="fsdp") -> P:
    """PartitionSpec splitting the largest axis that `fsdp_size` divides over the mesh axis (or
    axes, a tuple) `axes`; replicated if none, or if the leaf's `nbytes` are under `min_bytes`."""
    if fsdp_size == 1 or nbytes < min_bytes:
        return P()
    candidates = [(size, axis) for axis, size in enumerate(shape) if size % fsdp_size == 0]
    if not candidates:
        return P()
    _, axis = max(candidates)
    return P(*([None] * axis), axes)


def state_shardings(mesh: Mesh, abstract_tree, min_bytes: int = 0, all_devices: bool = False):
    """NamedShardings for a tree of arrays or ShapeDtypeStructs (parameters, optimizer state):
    split over `fsdp`, or with `all_devices` over data x fsdp (ZeRO-1's optimizer state)."""
    axes, size = (BATCH_AXES, mesh.size) if all_devices else ("fsdp", mesh.shape["fsdp"])

    def sharding(x):
        nbytes = int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize
        return NamedSharding(mesh, fsdp_spec(np.shape(x), size, nbytes, min_bytes, axes))

    return jax.tree.map(sharding, abstract_tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis over data x fsdp, the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def global_batch(mesh: Mesh, local_batch: dict) -> dict:
    """Global arrays from this process's slice of the batch (numpy, equal-sized on every process).

    Process p's rows land on p's devices; on one process this is a sharded `device_put`.
    """
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
