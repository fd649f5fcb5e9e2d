"""Checkpoint conversion: exact against PyTorch forwards, safe against payloads, fully accounted."""

import collections
import json
import os
import pickle
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import smplx.lbs as smplx_lbs
import torch

import convert_weights
from animax import load_model, load_smal
from animax.saved_model import read_config
from helpers.animer_lightning import discriminator_shapes
from helpers.nn_reference import assert_matches_animer, f32_tol, rel_err
from helpers.torch_reference import (
    random_state,
    register_tensors,
    torch_class_head_shapes,
    torch_head,
    torch_head_shapes,
    torch_vit,
    torch_vit_shapes,
)

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32

WIDTH, DEPTH, HEADS, MLP = 192, 2, 3, 768          # a ViT-Ti/16 backbone, 2 blocks
HEAD = dict(dim=64, depth=2, heads=2, dim_head=32, mlp_dim=64)


class CfgNode(dict):
    """Pickles like yacs' CfgNode: a dict subclass with instance flags."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.__dict__["__immutable__"] = False


def _with_fake_yacs(fn):
    """Runs fn() while a fake `yacs.config` module exists, so CfgNode pickles under yacs' name."""
    module = types.ModuleType("yacs.config")
    CfgNode.__module__, module.CfgNode = "yacs.config", CfgNode
    sys.modules.update({"yacs": types.ModuleType("yacs"), "yacs.config": module})
    try:
        return fn()
    finally:
        sys.modules.pop("yacs"), sys.modules.pop("yacs.config")
        CfgNode.__module__ = __name__


def animer_state(seed=0):
    """A random AniMer state dict with the exact key names, plus the keys AniMer keeps beside."""
    sd = {f"backbone.{k}": v for k, v in random_state(torch_vit_shapes(WIDTH, DEPTH, MLP, 192), seed).items()}
    head = torch_head_shapes(**HEAD, context_dim=WIDTH)
    sd.update({f"smal_head.{k}": v for k, v in random_state(head, seed + 1, scale=0.1).items()})
    sd.update({f"class_token_head.head.{k}": v
               for k, v in random_state(torch_class_head_shapes(WIDTH, 64, 32), seed + 2).items()})
    sd.update({"smal_head.init_pose": torch.zeros(1, 210), "smal_head.init_betas": torch.zeros(1, 41),
               "smal_head.init_cam": torch.tensor([[0.9, 0.0, 0.0]]),
               "smal.shapedirs": torch.zeros(10, 3, 41), "smal.v_template": torch.zeros(10, 3),
               "shape_prior_loss.betas_prec": torch.zeros(5, 41, 41),
               "pose_prior_loss.mean_pose": torch.zeros(105), "initialized": torch.tensor(True)})
    sd.update({f"discriminator.{k}": v for k, v in random_state(discriminator_shapes(), seed + 3).items()})
    return sd


def write_lightning_ckpt(path, sd):
    cfg = CfgNode({"MODEL": CfgNode({"SMAL_HEAD": CfgNode({
        "IEF_ITERS": 1, "TRANSFORMER_DECODER": CfgNode({"heads": HEAD["heads"], "dim_head": HEAD["dim_head"]})})})})
    ckpt = {"epoch": 3, "global_step": 100, "pytorch-lightning_version": "2.1.0", "state_dict": sd,
            "hyper_parameters": {"cfg": cfg}}
    _with_fake_yacs(lambda: torch.save(ckpt, path))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("convert")
    sd = animer_state()
    write_lightning_ckpt(tmp / "animer.ckpt", sd)
    assert convert_weights.main([str(tmp / "animer.ckpt"), str(tmp / "animax_ckpt")]) == 0
    return sd, tmp


def _images(batch=2, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, 256, 256, 3)).astype(np.float32)


def torch_pipeline(sd, images, body):
    """AniMer's forward from the state dict: backbone on the centre columns, head, SMAL (smplx lbs)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2)[:, :, :, 32:-32]
    feature_map, cls = torch_vit(sd, x, HEADS, DEPTH, prefix="backbone.")
    head = torch_head(sd, feature_map, HEAD["depth"], HEAD["heads"], prefix="smal_head.")
    t = lambda a: torch.from_numpy(np.array(a))  # noqa: E731
    verts, _ = smplx_lbs.lbs(head["betas"], head["pose"], t(body.v_template), t(body.shapedirs),
                             t(body.posedirs), t(body.j_regressor), torch.tensor(body.parents),
                             t(body.lbs_weights), pose2rot=False)
    return {"feature_map": feature_map.permute(0, 2, 3, 1), "cls_token": cls, **head, "vertices": verts}


def test_lightning_checkpoint_matches_pytorch_forward(converted):
    sd, tmp = converted
    model, variables = load_model(tmp / "animax_ckpt")
    images = _images()
    out = jax.jit(model.apply)(variables, jnp.asarray(images))
    with torch.no_grad():
        ref = torch_pipeline(sd, images, load_smal())
    assert_matches_animer(out, {k: v.numpy() for k, v in ref.items()}, read_config(tmp / "animax_ckpt")[0].model,
                          ("feature_map", "cls_token", "betas", "pose", "cam", "vertices"))


def test_config_and_report_read_off_the_tensors(converted, capsys):
    sd, tmp = converted
    config = json.loads((tmp / "animax_ckpt" / "config.json").read_text())
    model = config["config"]["model"]
    assert model["variant"] == "Ti/16" and model["depth"] == DEPTH and model["num_heads"] == HEADS
    assert {k: model["smal_head"][k] for k in HEAD} == HEAD
    assert config["info"]["source_kind"] == "AniMer Lightning checkpoint"
    assert all(p.split("/")[1] in ("head_encoder", "fusion") for p in config["info"]["missing"])


def test_round_trip_to_torch_is_exact(converted):
    sd, tmp = converted
    assert convert_weights.main(["--to-torch", str(tmp / "animax_ckpt"), str(tmp / "back.pth")]) == 0
    back = torch.load(tmp / "back.pth", weights_only=True)["state_dict"]
    network = {k: v for k, v in sd.items()
               if k.split(".")[0] in ("backbone", "smal_head", "class_token_head", "discriminator")
               and not k.endswith("num_batches_tracked") and not k.startswith("discriminator.bone_")}
    assert set(back) == set(network)
    for k, v in network.items():
        assert torch.equal(back[k], v), k


def torch_discriminator(sd, pose, betas):
    """AniMer's Discriminator.forward from its state dict: pose [B, 34, 3, 3], betas [B, 41]."""
    w = lambda name: sd[f"discriminator.{name}"].to(pose.dtype)  # noqa: E731
    relu, linear = torch.relu, torch.nn.functional.linear
    x = pose.reshape(-1, 34, 1, 9).permute(0, 3, 1, 2)                     # [B, 9, 34, 1]
    x = relu(torch.nn.functional.conv2d(x, w("D_conv1.weight"), w("D_conv1.bias")))
    x = relu(torch.nn.functional.conv2d(x, w("D_conv2.weight"), w("D_conv2.bias")))
    per_joint = torch.cat([linear(x[:, :, j, 0], w(f"pose_out.{j}.weight"), w(f"pose_out.{j}.bias"))
                           for j in range(34)], 1)
    b = relu(linear(betas, w("betas_fc1.weight"), w("betas_fc1.bias")))
    b = linear(relu(linear(b, w("betas_fc2.weight"), w("betas_fc2.bias"))), w("betas_out.weight"), w("betas_out.bias"))
    a = x.reshape(len(x), -1)
    a = relu(linear(a, w("D_alljoints_fc1.weight"), w("D_alljoints_fc1.bias")))
    a = relu(linear(a, w("D_alljoints_fc2.weight"), w("D_alljoints_fc2.bias")))
    return torch.cat([per_joint, b, linear(a, w("D_alljoints_out.weight"), w("D_alljoints_out.bias"))], 1)


def test_discriminator_converts_and_matches_pytorch(converted):
    from animax.models.discriminator import Discriminator
    from animax.saved_model import load_discriminator

    sd, tmp = converted
    params = load_discriminator(tmp / "animax_ckpt")
    rng = np.random.default_rng(3)
    pose = torch.from_numpy(rng.normal(size=(3, 34, 3, 3)).astype(np.float32))
    betas = torch.from_numpy(rng.normal(size=(3, 41)).astype(np.float32))
    got = Discriminator().apply({"params": params}, jnp.asarray(pose.numpy()), jnp.asarray(betas.numpy()))
    with torch.no_grad():
        expected = torch_discriminator(sd, pose.double(), betas.double()).numpy()
    # The longest path: 9 -> 32 -> 32 -> 1088 -> 1024 -> 1024 -> 1 products, float32 against float64.
    assert got.shape == (3, 36)
    assert rel_err(got, expected) < f32_tol(9, 1, 32, 1, 1088, 1, 1024, 1, 1024)
    # No discriminator in a plain converted model: load_model leaves it out.
    _, variables = load_model(tmp / "animax_ckpt")
    assert "discriminator" not in variables


def write_mmcv_checkpoint(path, sd):
    """A ViTPose `backbone.pth` as mmcv 1.x's `save_checkpoint` composes it (ViTPose trains with
    mmcv 1.3.9, which does not install beside current torch): `meta` of the run, the model's
    `state_dict()`, and `optimizer.state_dict()` of a real AdamW step."""
    model = register_tensors(torch.nn.Module(), sd)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)  # lr 0: the weights stay sd's
    sum(p.square().sum() for p in model.parameters()).backward()
    optimizer.step()
    meta = {"mmcv_version": "1.3.9", "time": "Thu Apr 14 10:21:07 2022", "env_info": "sys.platform: linux\n",
            "config": "model = dict(type='TopDown', backbone=dict(type='ViT', embed_dim=1280))\n",
            "seed": 0, "exp_name": "ViTPose_huge_coco_256x192.py", "epoch": 210, "iter": 137130,
            "hook_msgs": {"last_ckpt": "work_dirs/epoch_210.pth", "best_score": np.float64(0.791)}}
    state = collections.OrderedDict((k, v.detach().cpu()) for k, v in model.state_dict().items())
    torch.save({"meta": meta, "state_dict": state, "optimizer": optimizer.state_dict()}, path)


def test_vitpose_backbone_converts_with_animer_cls_init(tmp_path, capsys):
    sd = {f"backbone.{k}": v for k, v in random_state(torch_vit_shapes(WIDTH, DEPTH, MLP, 192)).items()
          if k != "cls_token"}
    sd["keypoint_head.final_layer.weight"] = torch.zeros(17, WIDTH, 1, 1)
    write_mmcv_checkpoint(tmp_path / "backbone.pth", sd)
    assert convert_weights.main([str(tmp_path / "backbone.pth"), str(tmp_path / "out")]) == 0
    report = capsys.readouterr().out
    assert "ViTPose backbone" in report and "AniMer's init N(0, 1e-6)" in report
    assert "ViTPose keypoint head" in report
    optimizer_line = next(line for line in report.splitlines() if line.startswith("optimizer "))
    assert f" {3 * len(sd)} " in optimizer_line and "never read" in optimizer_line  # step, exp_avg, exp_avg_sq
    model, variables = load_model(tmp_path / "out")
    cls = np.asarray(variables["params"]["backbone"]["cls_token"])
    assert cls.shape == (1, 1, WIDTH) and 0 < np.abs(cls).max() < 1e-5
    sd["backbone.cls_token"] = torch.from_numpy(cls.copy())
    images = _images(1)
    out = jax.jit(model.apply)(variables, jnp.asarray(images))
    with torch.no_grad():
        fmap, tok = torch_vit(sd, torch.from_numpy(images).permute(0, 3, 1, 2)[:, :, :, 32:-32], HEADS, DEPTH,
                              prefix="backbone.")
    assert_matches_animer(out, {"feature_map": fmap.permute(0, 2, 3, 1).numpy(), "cls_token": tok.numpy()},
                          read_config(tmp_path / "out")[0].model, ("feature_map", "cls_token"))


def test_missing_and_mismatched_keys_fail_with_the_documented_messages(tmp_path, capsys):
    sd = animer_state()
    del sd["smal_head.deccam.bias"]
    sd["backbone.blocks.1.mlp.fc2.bias"] = torch.zeros(7)
    sd["backbone.mystery.weight"] = torch.zeros(3)
    write_lightning_ckpt(tmp_path / "bad.ckpt", sd)
    assert convert_weights.main([str(tmp_path / "bad.ckpt"), str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert "missing params/smal_head/deccam/bias (initialised: random init)" in captured.out
    assert "shape mismatch backbone.blocks.1.mlp.fc2.bias: checkpoint (7,), model expects (192,)" in captured.out
    assert "unknown key backbone.mystery.weight" in captured.out
    assert "nothing written" in captured.err and not (tmp_path / "out").exists()
    assert convert_weights.main([str(tmp_path / "bad.ckpt"), str(tmp_path / "out"), "--allow-partial"]) == 0
    assert (tmp_path / "out" / "config.json").exists()


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_a_payload_is_refused_and_leaves_no_trace(tmp_path, capsys):
    marker = tmp_path / "pwned"
    sd = animer_state()
    torch.save({"state_dict": sd, "hyper_parameters": {"x": _Payload(marker)}}, tmp_path / "evil.ckpt",
               pickle_protocol=2)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert convert_weights.main([str(tmp_path / "evil.ckpt"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "refusing to load global" in err and "system" in err
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_not_a_zip_checkpoint_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "old.pth").write_bytes(pickle.dumps({"a": 1}))
    assert convert_weights.main([str(tmp_path / "old.pth"), str(tmp_path / "out")]) == 1
    assert "not a zip-format PyTorch checkpoint" in capsys.readouterr().err


@pytest.mark.slow
def test_full_size_vith_conversion_matches_pytorch(tmp_path):
    """ViT-H/16 at AniMer's size (2.5 GB of float32): convert in a subprocess, compare features."""
    sd = {f"backbone.{k}": v for k, v in random_state(torch_vit_shapes(1280, 32, 5120, 192)).items()}
    head = torch_head_shapes(dim=1024, depth=6, heads=8, dim_head=64, mlp_dim=1024, context_dim=1280)
    sd.update({f"smal_head.{k}": v for k, v in random_state(head, 1, scale=0.02).items()})
    sd.update({f"class_token_head.head.{k}": v
               for k, v in random_state(torch_class_head_shapes(1280, 4096, 256), 2).items()})
    torch.save({"state_dict": sd}, tmp_path / "vith.ckpt")
    run = subprocess.run([sys.executable, "convert_weights.py", str(tmp_path / "vith.ckpt"), str(tmp_path / "out")],
                         capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert run.returncode == 0, run.stderr
    model, variables = load_model(tmp_path / "out")
    images = _images(1)
    out = jax.jit(model.apply)(variables, jnp.asarray(images))
    with torch.no_grad():
        x = torch.from_numpy(images).permute(0, 3, 1, 2)[:, :, :, 32:-32]
        fmap, cls = torch_vit(sd, x, 16, 32, prefix="backbone.")
        ref = torch_head(sd, fmap, 6, 8, prefix="smal_head.")
    ref = {"feature_map": fmap.permute(0, 2, 3, 1).numpy(), "cls_token": cls.numpy(),
           **{k: v.numpy() for k, v in ref.items()}}
    assert_matches_animer(out, ref, read_config(tmp_path / "out")[0].model)
