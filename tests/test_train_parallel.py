"""Sharded training steps equal the single-device step; FSDP and ZeRO-1 really split the state;
two processes joined by jax.distributed, started from a converted checkpoint, take the same step as one.

Each case runs in a fresh interpreter (this file's `__main__`), because the CPU device count
(XLA_FLAGS) and jax.distributed must be set before jax starts. Both are marked slow (1.5 and
about 3.5 minutes on 2 CPU cores, mostly compiling 8-device and 2-process programs).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.processes import finish, free_port

REPO = Path(__file__).resolve().parents[1]


def loss_tol():
    """Relative bound on the loss of another device layout: not bitwise (per-device batch sizes pick
    other kernels, sums run across devices): the whole model's float32 steps and the loss's sums of
    8 x 26 x 3 terms, on both sides."""
    from test_train_loop import small_config

    from helpers.nn_reference import f32_tol, pipeline_steps

    return f32_tol(*pipeline_steps(small_config().model), 8 * 26 * 3, sides=2)


def _worker(args, devices, cache_dir):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "JAX_COMPILATION_CACHE_DIR": cache_dir,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    return subprocess.Popen([sys.executable, __file__, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(process) -> str:
    code, out = finish(process)
    assert code == 0, out
    return out


@pytest.mark.slow
def test_sharded_steps_equal_the_single_device_step_and_fsdp_shards(tmp_path_factory):
    cache = str(tmp_path_factory.mktemp("jax_cache"))
    out = _finish(_worker(["meshes", tmp_path_factory.mktemp("meshes")], 8, cache))
    report = json.loads(out.strip().splitlines()[-1])
    for name in ("data8", "data2_fsdp4", "data8_zero1"):
        assert report[name]["max_param_diff"] < 1e-5, report
        assert abs(report[name]["loss"] - report["single"]["loss"]) < loss_tol() * abs(report["single"]["loss"]), report
    # Per-device bytes about 1/4 of the whole with fsdp = 4 (the few leaves no axis of which
    # 4 divides stay replicated), and the whole on each device without FSDP.
    assert 0.24 < report["data2_fsdp4"]["per_device_fraction"] < 0.3, report
    assert report["data8"]["per_device_fraction"] == 1.0
    # ZeRO-1: the parameters whole on every device, AdamW's moments split 8 ways (the few leaves
    # no axis of which 8 divides stay whole).
    assert report["data8_zero1"]["params_fraction"] == 1.0
    assert 0.124 < report["data8_zero1"]["opt_state_fraction"] < 0.16, report


@pytest.mark.slow
def test_two_processes_start_from_a_converted_checkpoint_and_take_the_same_step_as_one(tmp_path):
    """A checkpoint written by animax.saved_model (as convert_weights.py writes it) initialises a
    2-process run and a 1-process run: every process starts from the checkpoint's parameters,
    and the two runs take the same step."""
    cache = str(tmp_path / "jax_cache")
    _finish(_worker(["convert", tmp_path / "converted"], 1, cache))
    port = free_port()
    workers = [_worker(["process", tmp_path / "two", f"127.0.0.1:{port}", 2, i, tmp_path / "converted"], 1, cache)
               for i in range(2)]
    single = _worker(["process", tmp_path / "one", "", 1, 0, tmp_path / "converted"], 1, cache)
    for w in (*workers, single):
        _finish(w)
    saved = np.load(tmp_path / "converted.npz")
    for initial in (tmp_path / "two" / "initial_0.npz", tmp_path / "two" / "initial_1.npz",
                    tmp_path / "one" / "initial_0.npz"):
        initial = np.load(initial)
        assert set(initial) == set(saved)
        for key in saved:
            np.testing.assert_array_equal(initial[key], saved[key], err_msg=key)
    one, two = np.load(tmp_path / "one" / "step.npz"), np.load(tmp_path / "two" / "step.npz")
    assert set(one) == set(two)
    for key in one:
        rtol = loss_tol() if key == "loss" else 1e-5
        np.testing.assert_allclose(two[key], one[key], rtol=rtol, atol=0 if key == "loss" else 1e-6, err_msg=key)


# ---- workers (run in a subprocess) ----

def _flat(tree):
    import jax
    from jax.experimental import multihost_utils

    leaves = jax.tree_util.tree_leaves_with_path(multihost_utils.process_allgather(tree, tiled=True))
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def _step(trainer, state=None):
    """One train step of a fresh trainer (from `state`, else its initial state) on its first batch:
    (state, metrics)."""
    from animax.train import input as input_lib

    state = trainer.restore_or_init() if state is None else state
    batch = trainer.batch(next(input_lib.train_source(trainer.config, trainer.body)), input_lib.TRAIN_KEYS)
    return trainer.train_step(state, batch, trainer.smal)


def _per_device_fraction(tree):
    import jax

    leaves = jax.tree.leaves(tree)
    whole = sum(x.nbytes for x in leaves)
    return sum(x.addressable_shards[0].data.nbytes for x in leaves) / whole


def _meshes(workdir):
    import jax
    from test_train_loop import small_config

    from animax.train.loop import Trainer

    report, reference = {}, None
    for name, data, fsdp, devices in (("single", 1, 1, jax.devices()[:1]), ("data8", 8, 1, None),
                                      ("data2_fsdp4", 2, 4, None), ("data8_zero1", 8, 1, None)):
        # The tiny model's leaves are all under the 4 MiB default: split every one that divides.
        config = small_config(**{"mesh.data": data, "mesh.fsdp": fsdp, "mesh.fsdp_min_bytes": 0,
                                 "mesh.zero1": name.endswith("zero1")})
        trainer = Trainer(config, Path(workdir) / name,
                          devices=devices)
        state, metrics = _step(trainer)
        params = _flat(state.params)
        reference = reference or params
        report[name] = {"loss": float(metrics["loss"]),
                        "max_param_diff": max(float(np.abs(params[k] - reference[k]).max()) for k in params),
                        "per_device_fraction": _per_device_fraction((state.params, state.opt_state)),
                        "params_fraction": _per_device_fraction(state.params),
                        "opt_state_fraction": _per_device_fraction(state.opt_state)}
    print(json.dumps(report))


def _convert(path):
    """A tiny model's parameters, each one plus one (unlike any fresh initialisation), saved as
    convert_weights.py saves a converted checkpoint; PATH.npz holds them flat for the test."""
    import jax
    from test_train_loop import small_config

    from animax.saved_model import save_model
    from animax.train.loop import Trainer

    config = small_config()
    state = jax.device_get(Trainer(config, Path(path).with_suffix(".run")).restore_or_init())
    params = jax.tree.map(lambda x: x + 1.0, state.params)
    save_model(path, config, {"params": params, "batch_stats": state.batch_stats})
    np.savez(Path(path).with_suffix(".npz"), **_flat(params))


def _process(workdir, coordinator, num_processes, process_id, init_path=None):
    from animax.runtime import initialize_distributed

    initialize_distributed(coordinator or None, int(num_processes), int(process_id))
    import jax
    from test_train_loop import small_config

    from animax.train.loop import Trainer

    init = {"init.kind": "animer", "init.path": init_path} if init_path else {}
    trainer = Trainer(small_config(**init), Path(workdir))
    state = trainer.restore_or_init()
    if init_path:
        np.savez(Path(workdir) / f"initial_{jax.process_index()}.npz", **_flat(state.params))
    state, metrics = _step(trainer, state)
    flat = {**_flat(state.params), "loss": np.asarray(metrics["loss"])}
    if jax.process_index() == 0:
        np.savez(Path(workdir) / "step.npz", **flat)


if __name__ == "__main__":
    {"meshes": _meshes, "process": _process, "convert": _convert}[sys.argv[1]](*sys.argv[2:])
