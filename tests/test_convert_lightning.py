"""AniMer checkpoints as AniMer's training writes them (hydra + omegaconf + Lightning), converted
exactly, from the file and from the release folder, with payloads anywhere refused."""

import json
import os
import shutil
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import omegaconf
import pytest
import pytorch_lightning as pl
import torch

import convert_weights
from animax import load_model
from animax.convert.torch_reader import LazyTensor, read_torch_checkpoint
from animax.saved_model import read_config
from helpers import animer_lightning as al
from helpers.nn_reference import assert_matches_animer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A hydra-composed tiny AniMer run: (module, run folder, its last.ckpt)."""
    tmp = tmp_path_factory.mktemp("animer_run")
    cfg = al.compose(al.write_config_tree(tmp / "configs"), al.TINY + al.FROZEN)
    model, ckpt = al.train_and_save(cfg, tmp / "run")
    return model, tmp / "run", ckpt


def _images(seed=0):
    return np.random.default_rng(seed).normal(size=(2, 256, 256, 3)).astype(np.float32)


def assert_matches_module(out_dir, module):
    model, variables = load_model(out_dir)
    images = _images()
    out = jax.jit(model.apply)(variables, jnp.asarray(images))
    with torch.no_grad():
        ref = module(torch.from_numpy(images).permute(0, 3, 1, 2))
    ref = {k: (v.permute(0, 2, 3, 1) if k == "feature_map" else v).numpy() for k, v in ref.items()}
    assert_matches_animer(out, ref, read_config(out_dir)[0].model)


def test_real_checkpoint_holds_what_animer_training_writes(run):
    """The fixture is the real thing: Lightning's keys, a pickled DictConfig, AdamW state."""
    _, _, ckpt = run
    with zipfile.ZipFile(ckpt) as z:
        pickle_bytes = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    for name in (b"omegaconf.dictconfig", b"DictConfig", b"ListConfig", b"AnyNode", b"ContainerMetadata"):
        assert name in pickle_bytes
    raw = read_torch_checkpoint(ckpt)
    assert {"state_dict", "hyper_parameters", "optimizer_states", "lr_schedulers", "callbacks", "loops", "epoch",
            "global_step", "hparams_name", "pytorch-lightning_version"} <= set(raw)
    assert {"exp_avg", "exp_avg_sq", "step"} <= set(raw["optimizer_states"][0]["state"][0])
    keys = set(raw["state_dict"])
    assert "initialized" in keys and any(k.startswith("smal.") for k in keys)
    assert any(k.startswith("discriminator.") for k in keys)
    # Plain data, not omegaconf objects: nothing of omegaconf was needed to read it.
    cfg = raw["hyper_parameters"]["cfg"]
    assert cfg["MODEL"]["SMAL_HEAD"]["TRANSFORMER_DECODER"]["heads"] == 2
    assert cfg["MODEL"]["IMAGE_MEAN"] == [0.485, 0.456, 0.406]
    assert cfg["MODEL"]["SMAL_HEAD"]["TRANSFORMER_DECODER"]["context_dim"] == "${MODEL.CONTEXT_DIM}"


def test_checkpoint_file_alone_converts_exactly_with_the_pickled_config(run, tmp_path, capsys):
    module, _, ckpt = run
    alone = tmp_path / "animer.ckpt"
    shutil.copy(ckpt, alone)  # no .hydra/ beside it: the config comes from the pickle
    assert convert_weights.main([str(alone), str(tmp_path / "out")]) == 0
    report = capsys.readouterr().out
    assert "model config: hyper_parameters.cfg" in report and "PROBLEM" not in report
    model = json.loads((tmp_path / "out" / "config.json").read_text())["config"]["model"]
    # heads and dim_head are in no tensor shape: only the config gives 2 x 32 (not 8 x 8).
    assert (model["smal_head"]["heads"], model["smal_head"]["dim_head"]) == (2, 32)
    assert_matches_module(tmp_path / "out", module)


def release_folder(folder, ckpt):
    """AniMer's release layout around a checkpoint: FOLDER/checkpoints/checkpoint.ckpt."""
    (folder / "checkpoints").mkdir(parents=True)
    shutil.copy(ckpt, folder / "checkpoints" / "checkpoint.ckpt")
    return folder


def test_release_folder_converts_exactly_with_the_hydra_yaml(run, tmp_path, capsys):
    module, run_dir, ckpt = run
    release = release_folder(tmp_path / "AniMer", ckpt)
    shutil.copytree(run_dir / ".hydra", release / ".hydra")
    assert convert_weights.main([str(release), str(tmp_path / "out")]) == 0
    report = capsys.readouterr().out
    assert f"model config: {release / '.hydra' / 'config.yaml'}" in report
    assert "note:" not in report  # hydra's YAML and the pickled DictConfig agree
    for group in ("optimizer_states", "callbacks", "loops", "lr_schedulers"):
        assert group in report
    assert_matches_module(tmp_path / "out", module)


def test_yaml_and_pickle_disagreeing_is_said_and_the_yaml_wins(run, tmp_path, capsys):
    _, run_dir, ckpt = run
    release = release_folder(tmp_path / "AniMer", ckpt)
    cfg = omegaconf.OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.TRAIN.BATCH_SIZE = 8
    cfg.MODEL.SMAL_HEAD.IEF_ITERS = 3
    (release / ".hydra").mkdir()
    omegaconf.OmegaConf.save(cfg, release / ".hydra" / "config.yaml")
    assert convert_weights.main([str(release), str(tmp_path / "out")]) == 0
    report = capsys.readouterr().out
    assert "differ at 2 key(s); using the YAML" in report
    assert "TRAIN.BATCH_SIZE: 8 vs 16" in report and "MODEL.SMAL_HEAD.IEF_ITERS: 3 vs 1" in report
    model = json.loads((tmp_path / "out" / "config.json").read_text())["config"]["model"]
    assert model["smal_head"]["ief_iters"] == 3


def test_optimizer_state_is_never_read(run, tmp_path, monkeypatch, capsys):
    _, _, ckpt = run
    raw = read_torch_checkpoint(ckpt)

    def members(tree):
        if isinstance(tree, LazyTensor):
            return {tree.storage.member}
        values = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, (list, tuple)) else ()
        return set().union(*(members(v) for v in values)) if values else set()

    optimizer = members(raw["optimizer_states"])
    weights = members(raw["state_dict"])
    assert len(optimizer) > 2 * len([k for k in raw["state_dict"] if k.startswith("backbone.")])
    read = []
    original = zipfile.ZipFile.open  # the reader reads members through bounded open().read(n)
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **k: read.append(name) or original(self, name, *a, **k))
    assert convert_weights.main([str(ckpt), str(tmp_path / "out")]) == 0
    read = set(read)
    assert read and not read & optimizer
    assert read <= weights | {n for n in read if n.endswith((".pkl", "/byteorder"))}
    report = capsys.readouterr().out
    line = next(line for line in report.splitlines() if line.startswith("optimizer_states"))
    assert f" {len(optimizer)} " in line and "never read" in line


class _Payload:
    """Runs a shell command when unpickled (copies are the object itself, so writing runs nothing)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))

    def __deepcopy__(self, memo):
        return self


class _SaveHook(pl.Callback):
    def __init__(self, edit):
        self.edit = edit

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.edit(checkpoint)

    def state_dict(self):
        return {}


def _hide_in_dictconfig(cfg, payload):
    cfg._set_flag("allow_objects", True)  # omegaconf's own switch for arbitrary objects in a config
    with omegaconf.open_dict(cfg):
        cfg.MODEL.SMAL_HEAD.PAYLOAD = payload
    return []


def _hide_in(place, payload):
    def edit(checkpoint):
        if place == "optimizer_states":
            checkpoint["optimizer_states"][0]["state"][0]["payload"] = payload
        else:
            checkpoint["callbacks"]["payload"] = {"state": [payload]}
    return [_SaveHook(edit)]


@pytest.mark.parametrize("place", ["DictConfig", "optimizer_states", "callbacks"])
def test_payload_anywhere_is_refused_and_nothing_runs(tmp_path, place, capsys):
    marker = tmp_path / "pwned"
    cfg = al.compose(al.write_config_tree(tmp_path / "configs"), al.TINY + al.FROZEN)
    callbacks = (_hide_in_dictconfig(cfg, _Payload(marker)) if place == "DictConfig"
                 else _hide_in(place, _Payload(marker)))
    _, ckpt = al.train_and_save(cfg, tmp_path / "run", callbacks=callbacks)
    assert not marker.exists()
    assert convert_weights.main([str(ckpt), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert str(ckpt) in err and "refusing to load global" in err and "system" in err
    assert not marker.exists() and not (tmp_path / "out").exists()
    # The payload is real: an unrestricted load runs it.
    torch.load(ckpt, weights_only=False)
    assert marker.exists()
