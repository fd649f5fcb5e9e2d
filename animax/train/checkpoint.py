"""Training checkpoints: orbax CheckpointManager over WORKDIR/checkpoints.

Each step directory holds
    state/   the TrainState (parameters, LoRA, batch stats, optimizer state, step, rng,
             non-finite counters), restored straight into the run's shardings
    data/    process_<i>.json: every process's data-iterator state (each reads its own slice)
Kept: the latest checkpoint, plus the best `keep_best` by `best_metric` among those saved
right after an evaluation. Saves are asynchronous (the arrays are copied off the devices
before `save` returns; writing goes on in the background) and atomic: a step directory
appears only when complete, so a run killed mid-save resumes from the previous one.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

CHECKPOINT_DIR = "checkpoints"


class ProcessJsonHandler(ocp.CheckpointHandler):
    """One small JSON document per process (the data iterators' states differ per process)."""

    def save(self, directory, args: "ProcessJsonSave"):
        text = json.dumps(args.item, default=_encode_bytes)
        (Path(directory) / f"process_{jax.process_index()}.json").write_text(text)

    def restore(self, directory, args: "ProcessJsonRestore" = None):
        text = (Path(directory) / f"process_{jax.process_index()}.json").read_text()
        return json.loads(text, object_hook=_decode_bytes)


@ocp.args.register_with_handler(ProcessJsonHandler, for_save=True)
@dataclasses.dataclass
class ProcessJsonSave(ocp.args.CheckpointArgs):
    item: Any


@ocp.args.register_with_handler(ProcessJsonHandler, for_restore=True)
@dataclasses.dataclass
class ProcessJsonRestore(ocp.args.CheckpointArgs):
    pass


def _encode_bytes(value):
    """Iterator states may hold bytes (grain's do, in some versions): JSON as base64."""
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode()}
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _decode_bytes(obj):
    return base64.b64decode(obj["__bytes__"]) if set(obj) == {"__bytes__"} else obj


class Checkpointer:
    """Saves and restores (state, data-iterator state) in WORKDIR/checkpoints; see the module docstring."""

    def __init__(self, workdir, config):
        ckpt = config.checkpoint
        metric, higher_is_better = ckpt.best_metric, ckpt.best_mode == "max"
        policy = checkpoint_managers.AnyPreservationPolicy(policies=[
            checkpoint_managers.LatestN(n=1),
            checkpoint_managers.BestN(get_metric_fn=lambda m: m[metric], reverse=not higher_is_better,
                                      n=ckpt.keep_best, keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, enable_async_checkpointing=ckpt.async_save, create=True,
            cleanup_tmp_directories=True)
        self.directory = Path(workdir).absolute() / CHECKPOINT_DIR
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, state, data_state: dict, metrics: dict | None = None) -> None:
        """Starts saving the state at its step (returns once the arrays are off the devices)."""
        step = int(jax.device_get(state.step))
        if step in self.manager.all_steps():
            return
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        data=ProcessJsonSave(data_state)),
                          metrics=metrics, force=True)

    def restore(self, abstract_state, shardings, step: int | None = None):
        """(state, data state) of `step` (default: the latest), placed with `shardings`."""
        step = self.manager.latest_step() if step is None else step
        target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                              abstract_state, shardings)
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                      data=ProcessJsonRestore()))
        return restored["state"], restored["data"]

    def wait(self) -> None:
        """Blocks until background saves are written."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
