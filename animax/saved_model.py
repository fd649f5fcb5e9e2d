"""Model checkpoints: an orbax directory of arrays with `config.json` beside it.

    DIR/config.json   {"config": <the full ml_collections config>, "info": {...provenance...}}
    DIR/state/        orbax PyTree checkpoint of {"params": ..., "batch_stats": ...} and, converted
                      from an AniMer checkpoint, {"discriminator": ...} (training only:
                      `load_discriminator` reads it; `load_model` leaves it out)

The ViT blocks are stored unscanned (`blocks_{i}`, PyTorch's layout) whatever the config's
`scan_blocks`: every leaf is then one layer's tensor, which keeps saving within a small
memory margin (orbax holds a whole leaf per write) and the files independent of the layout.

Written by the converter and by training's export; read by `load_model`.
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from animax.files import AtomicFolder
from animax.models import abstract_variables, build_model, vit
from animax.models.discriminator import COLLECTION as DISCRIMINATOR
from animax.models.discriminator import init_discriminator
from animax.models.pipeline import Pipeline

CONFIG_FILE = "config.json"
STATE_DIR = "state"


def save_model(path, config: ml_collections.ConfigDict, variables, info: dict | None = None) -> None:
    """Writes params and batch_stats with the config, atomically (`animax.files.AtomicFolder`)."""
    with AtomicFolder(Path(path).absolute()) as tmp:
        state = {k: variables[k] for k in ("params", "batch_stats", DISCRIMINATOR) if k in variables}
        backbone = state["params"].get("backbone", {})
        if "blocks" in backbone:
            state["params"] = {**state["params"], "backbone": vit.unstack_blocks(backbone)}
        # Synchronous, at most ~1 GB in flight: conversion of ViT-H stays near one copy of the weights.
        with ocp.Checkpointer(ocp.StandardCheckpointHandler(save_concurrent_gb=0.25)) as checkpointer:
            checkpointer.save(tmp / STATE_DIR, args=ocp.args.StandardSave(state))
        (tmp / CONFIG_FILE).write_text(json.dumps({"config": config.to_dict(), "info": info or {}}, indent=2,
                                                  default=_json_default))


def _json_default(value):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_config(path) -> tuple[ml_collections.ConfigDict, dict]:
    """(config, info) of a checkpoint directory."""
    config_file = Path(path) / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{path}: not an animax checkpoint (no {CONFIG_FILE})")
    data = json.loads(config_file.read_text())
    return ml_collections.ConfigDict(data["config"]), data.get("info", {})


def load_model(path, smal=None, dtype=None) -> tuple[Pipeline, dict]:
    """Loads a converted or trained checkpoint directory.

    smal: a SMALModel, a SMAL file (.pkl/.npz), or None for the config's body model (the
    built-in stand-in when the config names none; the first of a training run's several).
    dtype: compute dtype override ("float32"/"bfloat16"); parameters stay float32.
    Returns (model, variables) with variables = {"params", "batch_stats", "smal"}.
    """
    config, _ = read_config(path)
    if dtype is not None:
        config.model.dtype = jnp.dtype(dtype).name
    if smal is None and config.get("smal"):
        smal = config.smal.split(",")[0].strip()     # inference takes one body model; --smal picks others
    # Inference runs the ViT blocks unrolled, the stored layout.
    model = build_model(config, smal=smal, scan_blocks=False)
    abstract = abstract_variables(model)
    state = _restore(path, {k: abstract[k] for k in ("params", "batch_stats") if k in abstract})
    return model, {**state, "smal": {"model": model.body_model}}


def load_discriminator(path):
    """The discriminator parameters a converted AniMer checkpoint directory holds, or None."""
    with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as checkpointer:
        stored = checkpointer.metadata(Path(path).absolute() / STATE_DIR).item_metadata.tree
    if DISCRIMINATOR not in stored:
        return None
    return _restore(path, {DISCRIMINATOR: jax.eval_shape(init_discriminator, jax.random.PRNGKey(0))})[DISCRIMINATOR]


def _restore(path, target: dict) -> dict:
    """The collections of `target` (abstract arrays) from the stored state, as device arrays on
    this process's first local device (jax.devices()[0] belongs to process 0 alone: another
    process of a multi-host run cannot address it); the other stored collections are not read."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), target)
    args = ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
                                  partial_restore=True)
    with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as checkpointer:
        return dict(checkpointer.restore(Path(path).absolute() / STATE_DIR, args=args))
