"""train.py and the training loop as specifications: one_step output, exact resume, SIGTERM,
kill -9 then resume, LoRA training, non-finite steps, initialisation from a checkpoint.

Runs use `small_config()`: the synthetic_tiny config with an even smaller model, so each
compile takes seconds. Subprocess runs share a persistent compilation cache.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from animax.models import vit
from animax.train import loop
from animax.train.writers import read_metrics
from configs import standin
from helpers.nn_reference import U, assert_within

REPO = Path(__file__).resolve().parents[1]
# Command-line form of small_config(), for train.py subprocesses.
SMALL_FLAGS = [
    "--config.model.depth=1", "--config.model.smal_head.dim=32", "--config.model.smal_head.mlp_dim=32",
    "--config.model.smal_head.dim_head=16", "--config.model.head_encoder.widths=(4, 8, 8, 8, 8)",
    "--config.model.head_encoder.crop=32", "--config.model.fusion.hidden=32",
    "--config.model.class_head.hidden=32", "--config.model.class_head.features=16",
    "--config.batch_size=8", "--config.eval_batch_size=8", "--config.data.eval_examples=8",
    "--config.checkpoint.export=False",
    # One schedule length everywhere (it is a constant of the compiled step, and the runs
    # share a compilation cache); runs end with --stop_after_steps instead.
    "--config.num_train_steps=1000", "--config.eval_every_steps=100000", "--config.checkpoint.every_steps=1000",
    "--config.log_every_steps=1", "--config.eval_at_start=False",
]


def small_config(**overrides):
    """synthetic_tiny with a one-block ViT and small heads; `overrides` are dotted config keys."""
    config = standin.get_config("tiny")
    for flag in SMALL_FLAGS:
        key, value = flag.removeprefix("--config.").split("=", 1)
        _set(config, key, eval(value))  # noqa: S307 - literals from SMALL_FLAGS above
    for key, value in overrides.items():
        _set(config, key, value)
    return config


def _set(config, dotted, value):
    *parents, leaf = dotted.split(".")
    for p in parents:
        config = config[p]
    config[leaf] = value


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """A persistent compilation cache for this module's runs, in-process and in subprocesses."""
    path = str(tmp_path_factory.mktemp("jax_cache"))
    saved = {k: getattr(jax.config, k)
             for k in ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs")}
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    yield path
    for k, v in saved.items():
        jax.config.update(k, v)


def train_cli(workdir, *flags, cache, wait=True, **popen):
    """Runs train.py on the small config; returns CompletedProcess (or the Popen when not waiting)."""
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "train.py"), "--config", str(REPO / "configs/standin.py:tiny"),
           "--workdir", str(workdir), *SMALL_FLAGS, *flags]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def checkpoint_steps(workdir):
    ckpt = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.exists() else []


def train_losses(workdir):
    return {r["step"]: r["loss"] for r in read_metrics(Path(workdir) / "metrics.jsonl") if r["split"] == "train"}


def test_one_step_prints_every_term_and_module_gradient(tmp_path, compile_cache):
    result = train_cli(tmp_path, "--mode=one_step", cache=compile_cache)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for term in ("keypoints_3d", "keypoints_2d", "global_orient", "pose", "betas", "shape_prior", "pose_prior",
                 "supcon", "betas_l2", "pose_smoothness", "fused_l2", "total"):
        assert f"\n{term} " in out, term
    for module in ("backbone", "smal_head", "class_token_head", "head_encoder", "fusion"):
        assert f"  {module} " in out, module
    assert "update applied" in out
    assert checkpoint_steps(tmp_path) == []  # one_step writes no checkpoint


def test_resume_is_exact(tmp_path, compile_cache):
    """2N steps straight == N steps, a restart from the checkpoint, N more."""
    config = small_config()
    assert loop.run(config, tmp_path / "straight", stop_after=6) == 0
    assert loop.run(config, tmp_path / "split", stop_after=3) == 0
    assert checkpoint_steps(tmp_path / "split") == [3]
    assert loop.run(config, tmp_path / "split", stop_after=6) == 0
    straight, split = train_losses(tmp_path / "straight"), train_losses(tmp_path / "split")
    assert sorted(straight) == sorted(split) == list(range(1, 7))
    # Bitwise: the same compiled step on the same inputs, the restored state being an exact copy.
    np.testing.assert_array_equal([split[s] for s in range(1, 7)], [straight[s] for s in range(1, 7)])
    final = {name: loop.Trainer(config, tmp_path / name).restore_or_init() for name in ("straight", "split")}
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 final["straight"], final["split"])


def test_sigterm_saves_and_exits_cleanly_and_kill9_resumes(tmp_path, compile_cache):
    # SIGTERM: a clean exit with a checkpoint at the step it stopped.
    run = train_cli(tmp_path / "term", cache=compile_cache, wait=False)
    _wait_for(lambda: "step/s" in _peek(tmp_path / "term") or train_losses(tmp_path / "term"), run)
    run.send_signal(signal.SIGTERM)
    out, _ = run.communicate(timeout=120)
    assert run.returncode == 0, out
    assert "SIGTERM: saved step" in out
    saved = int(out.split("SIGTERM: saved step ")[1].split()[0])
    assert checkpoint_steps(tmp_path / "term") == [saved]

    # kill -9 while training and checkpointing every 2 steps: the rerun resumes from a complete one.
    run = train_cli(tmp_path / "kill", "--config.checkpoint.every_steps=2", cache=compile_cache, wait=False)
    _wait_for(lambda: len(checkpoint_steps(tmp_path / "kill")) and max(checkpoint_steps(tmp_path / "kill")) >= 4, run)
    run.kill()
    run.communicate()
    complete = max(checkpoint_steps(tmp_path / "kill"))
    result = train_cli(tmp_path / "kill", "--config.checkpoint.every_steps=2", f"--stop_after_steps={complete + 2}",
                       cache=compile_cache)
    assert result.returncode == 0, result.stdout + result.stderr
    resumed = int(result.stdout.split("resumed from step ")[1].split()[0])
    assert resumed >= complete
    assert max(checkpoint_steps(tmp_path / "kill")) == complete + 2
    # The log holds each step once: records past the checkpoint were dropped and rewritten.
    steps = [r["step"] for r in read_metrics(tmp_path / "kill" / "metrics.jsonl") if r["split"] == "train"]
    assert steps == list(range(1, complete + 3))


def _peek(workdir):
    path = Path(workdir) / "metrics.jsonl"
    return path.read_text() if path.exists() else ""


def _wait_for(condition, process, timeout=240):
    start = time.time()
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"run ended early: {process.stdout.read()}")
        if time.time() - start > timeout:
            process.kill()
            raise AssertionError("timed out")
        time.sleep(0.2)


def test_lora_trains_adapters_and_heads_leaving_base_weights(tmp_path, compile_cache):
    # Scanned blocks, as ViT-H training runs them; the export is read back unrolled.
    config = small_config(trainable="lora", **{"optim.warmup_steps": 0, "optim.learning_rate": 1e-2,
                                               "model.scan_blocks": True})
    trainer = loop.Trainer(config, tmp_path, stop_after=2)
    initial = jax.device_get(trainer.restore_or_init())
    assert trainer.train() == 0
    final = jax.device_get(trainer.restore_or_init())
    assert int(final.step) == 2
    jax.tree.map(np.testing.assert_array_equal, initial.params["backbone"], final.params["backbone"])
    assert not np.allclose(initial.params["smal_head"]["deccam"]["kernel"],
                           final.params["smal_head"]["deccam"]["kernel"])
    name = "backbone.blocks.attn.qkv"
    assert not np.allclose(initial.lora[name]["b"], final.lora[name]["b"])
    # The export holds the merged kernels: base + (alpha / r) a @ b, readable by load_model.
    from animax.saved_model import load_model

    trainer.export()
    trainer.checkpointer.close()
    _, exported = load_model(tmp_path / "export")
    qkv = final.params["backbone"]["blocks"]["attn"]["qkv"]["kernel"]
    a, b, scale = final.lora[name]["a"], final.lora[name]["b"], config.lora.alpha / config.lora.rank
    merged = qkv + scale * np.einsum("...ir,...ro->...io", a, b)
    exported_blocks = vit.stack_blocks(exported["params"]["backbone"])["blocks"]
    # Each side (this one, the export's) rounds the rank-r sum, the scaling and the addition: per
    # element at most U (|merged| + (r + 2) scale |a| @ |b|) (first order, worst case); 2 sides, x2.
    bound = 4 * U * (np.abs(merged) + (config.lora.rank + 2) * scale * np.einsum("...ir,...ro->...io", abs(a), abs(b)))
    assert_within(exported_blocks["attn"]["qkv"]["kernel"], merged, bound)
    assert not np.allclose(merged, qkv)


def test_non_finite_steps_are_skipped_then_stop_the_run(tmp_path, monkeypatch, compile_cache):
    from animax.train import input as input_lib

    real = input_lib.train_source

    def poisoned(config, body):
        source = real(config, body)
        synthetic = getattr(source, "source", source)   # under the data.prefetch reader
        original = synthetic.examples
        synthetic.examples = lambda indices: {**original(indices),
                                              "image": np.full((8, 256, 256, 3), np.nan, np.float32)}
        return source

    monkeypatch.setattr(input_lib, "train_source", poisoned)
    config = small_config(max_nonfinite_steps=3)
    trainer = loop.Trainer(config, tmp_path)
    before = jax.device_get(trainer.restore_or_init())
    assert trainer.train() == 1
    trainer.checkpointer.close()
    assert checkpoint_steps(tmp_path) == []   # nothing was saved after the (initial) good state
    state = jax.device_get(loop.Trainer(config, tmp_path).restore_or_init())
    jax.tree.map(np.testing.assert_array_equal, before.params, state.params)


def test_init_from_a_converted_checkpoint(tmp_path, compile_cache):
    from animax.saved_model import save_model

    config = small_config()
    source = jax.device_get(loop.Trainer(config, tmp_path / "a").restore_or_init())
    marked = jax.tree.map(lambda x: x + 1.0, source.params)
    save_model(tmp_path / "converted", config, {"params": marked, "batch_stats": source.batch_stats})
    for kind, modules in (("backbone", {"backbone"}), ("animer", set(marked))):
        state = jax.device_get(loop.Trainer(small_config(**{"init.kind": kind,
                                                            "init.path": str(tmp_path / "converted")}),
                                            tmp_path / kind).restore_or_init())
        for module in marked:
            same = jax.tree.leaves(jax.tree.map(np.array_equal, state.params[module], marked[module]))
            assert all(same) == (module in modules), (kind, module)


def test_a_misspelt_config_override_is_one_error_line(tmp_path):
    result = train_cli(tmp_path / "run", "--config.optim.learnin_rate=1", cache=str(tmp_path / "cache"))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: bad config override") and "learning_rate" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def built_root(tmp_path_factory):
    """Two built datasets in one root: animal3d (3D labels, train 5 / test 2) and coco_keypoints (2D, train 4)."""
    from test_data_fixtures import write_animal3d, write_coco

    from animax.data.build import build

    root = tmp_path_factory.mktemp("datasets")
    write_animal3d(root / "a3d")
    write_coco(root / "coco")
    for name, folder in (("animal3d", "a3d"), ("coco_keypoints", "coco")):
        build(name, root / folder, root / "data", progress=False)
    return root / "data"


def test_data_mixture_reads_both_sets_by_weight_and_resumes_exactly(built_root):
    from animax.train import input as input_lib

    config = small_config(**{"data.name": "animal3d", "data.root": str(built_root), "data.worker_count": 0,
                             "data.prefetch": 0, "data.mixture": "animal3d:1.0,coco_keypoints:0.5"})
    source = input_lib.train_source(config, None)
    batches = [next(source) for _ in range(6)]
    counts = np.bincount(np.concatenate([b["dataset"] for b in batches]), minlength=2)
    # The mixture's table holds every record of both; 48 draws keep close to 2 : 1.
    assert counts.sum() == 48 and 0.5 < counts[0] / 48 < 0.85
    resumed = input_lib.train_source(config, None)
    probe = input_lib.train_source(config, None)
    for _ in range(3):
        next(probe)
    resumed.set_state(probe.get_state())
    for expected in batches[3:]:
        got = next(resumed)
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    with pytest.raises(ValueError, match="DATASET:WEIGHT"):
        input_lib.mixture(small_config(**{"data.mixture": "animal3d"}))


def test_device_crop_trains_and_evaluates_from_the_loaders_windows(built_root, tmp_path):
    """data.device_crop: the loaders send uint8 windows, and the train and eval steps crop them
    on the device (`step.with_image`, which the overlays' preview step calls too)."""
    from animax.train import input as input_lib

    config = small_config(**{"data.name": "animal3d", "data.root": str(built_root), "data.worker_count": 0,
                             "data.prefetch": 0, "data.device_crop": True, "data.device_crop_window": 256,
                             "eval_at_start": True, "eval_overlays": 0})
    trainer = loop.Trainer(config, tmp_path, stop_after=1)
    local = next(iter(input_lib.eval_batches(config, trainer.body)))
    assert local["window"].dtype == np.uint8 and "image" not in local
    assert trainer.train() == 0
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert {r["split"] for r in records} == {"train", "eval"}
    assert all(np.isfinite(r["loss"]) for r in records if r["split"] == "train")
    assert all(0.0 <= r["pck@0.1"] <= 1.0 for r in records if r["split"] == "eval")


def test_eval_mode_reports_every_dataset_in_animer_layout(built_root, tmp_path, capsys):
    """--mode eval over two built datasets: one AniMer table each; PA-MPJPE / PA-MPVPE only where
    the set has 3D ground truth (AniMer prints 0 for the others, animax n/a)."""
    config = small_config(**{"data.name": "animal3d", "data.root": str(built_root), "data.worker_count": 0,
                             "data.eval_sets": "animal3d:test,coco_keypoints:train"})
    assert loop.run(config, tmp_path / "run", mode="eval") == 0
    out = capsys.readouterr().out
    tables = [t.split("Dataset evaluate finish")[0] for t in out.split("-------- Evaluate ")[1:]]
    assert [t.splitlines()[0] for t in tables] == ["animal3d:test dataset ------------",
                                                    "coco_keypoints:train dataset ------------"]
    for table, has_3d in zip(tables, (True, False)):
        rows = dict(line.split(": ", 1) for line in table.splitlines() if ": " in line)
        assert list(rows) == ["Avg PA-MPJPE", "Avg PA-MPVPE", "AUC", "PCK@0.1", "PCK@0.15"]
        assert all(0.0 <= float(rows[k]) <= 1.0 for k in ("AUC", "PCK@0.1", "PCK@0.15"))
        assert float(rows["PCK@0.1"]) <= float(rows["PCK@0.15"])
        for key in ("Avg PA-MPJPE", "Avg PA-MPVPE"):
            assert (rows[key] != "n/a") == has_3d and (not has_3d or float(rows[key]) > 0), (key, rows[key])


def _event_images(folder):
    """{tag: [(step, uint8 image)]} read back from tensorboardX event files: TFRecord framing
    (length, crc, Event proto, crc) and each image summary's PNG bytes."""
    import io
    import struct

    from PIL import Image
    from tensorboardX.proto import event_pb2

    images = {}
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("image"):
                    pixels = np.asarray(Image.open(io.BytesIO(value.image.encoded_image_string)))
                    images.setdefault(value.tag, []).append((event.step, pixels))
    return images


def test_evaluation_logs_a_grid_of_validation_overlays(tmp_path):
    from animax.train import input as input_lib
    from animax.train.writers import MetricWriter
    from animax.viz.overlay import overlay_image

    config = small_config(eval_overlays=2)
    trainer = loop.Trainer(config, tmp_path)
    state = trainer.restore_or_init()
    grid = trainer.overlay_grid(state)
    assert grid.shape == (2 * 256, 3 * 256, 3) and grid.dtype == np.uint8
    # Row 1 is infer.py's overlay of the second held-out example under the same weights.
    local = next(iter(input_lib.eval_batches(config, trainer.body)))
    variables = {"params": state.params, "batch_stats": state.batch_stats, "smal": trainer.smal}
    out = jax.device_get(trainer.model.apply(variables, local["image"][1:2]))
    expected = overlay_image(local["image"][1], out["vertices"][0], out["cam_t"][0], np.asarray(trainer.body.faces),
                             out["keypoints_2d"][0], out["head_box"][0])
    # Other batch shapes, so float32 vertices differ in the last bits: a few edge pixels may flip.
    assert np.mean(np.any(grid[256:] != expected, axis=-1)) < 0.01
    writer = MetricWriter(tmp_path)
    writer.image(7, "eval/overlays", grid)
    writer.close()
    (step, logged), = _event_images(tmp_path / "tensorboard")["eval/overlays"]
    assert step == 7
    np.testing.assert_array_equal(logged, grid)


def test_adversarial_stage_trains_the_discriminator_against_the_model(tmp_path):
    """loss.weights.adversarial > 0 (AniMer's stage 1): the model's loss gets the generator term
    of the discriminator as it was, then the discriminator takes its own step on the batch's
    ground truth (real) against the step's predictions (fake)."""
    from animax.models.discriminator import Discriminator
    from animax.train import input as input_lib
    from animax.train.losses import gt_rotations
    from helpers.nn_reference import f32_tol, pipeline_steps

    # A small learning rate keeps AdamW's first (sign-like) step in the first-order regime.
    config = small_config(**{"loss.weights.adversarial": 0.0005, "optim.learning_rate": 1e-5, "optim.warmup_steps": 0})
    trainer = loop.Trainer(config, tmp_path)
    state = trainer.restore_or_init()
    assert {"D_conv1", "pose_out_33", "betas_out", "D_alljoints_out"} <= set(state.discriminator)
    source = input_lib.train_source(config, trainer.body)
    local = next(source)
    input_lib.close_train_source(source)
    before = jax.device_get(state.discriminator)     # the step donates the state
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats, "smal": trainer.smal})
    out = trainer.model.apply(variables, local["image"])
    new_state, metrics = trainer.train_step(state, trainer.batch(local, input_lib.TRAIN_KEYS), trainer.smal)

    score = lambda params, pose, betas: np.asarray(Discriminator().apply({"params": params}, pose[:, 1:], betas))
    fake = score(before, out["pose"], out["betas"])
    real = score(before, np.asarray(gt_rotations(local["pose"])), local["betas"])
    batch = len(local["image"])
    # The predictions of the step and of this apply: the whole pipeline's float32 error, then
    # the discriminator's products (9, 32, 1088, 1024, 1024 terms).
    tol = f32_tol(*pipeline_steps(config.model), 9, 32, 1088, 1024, 1024, sides=2)
    np.testing.assert_allclose(metrics["loss/adversarial"], np.sum((fake - 1) ** 2) / batch, rtol=tol)
    np.testing.assert_allclose(metrics["discriminator/loss"],
                               (np.sum(fake ** 2) + np.sum((real - 1) ** 2)) / batch, rtol=tol)
    # One step lowers the discriminator's loss on this batch: it tells real from fake better.
    after = jax.device_get(new_state.discriminator)
    fake_after = score(after, out["pose"], out["betas"])
    real_after = score(after, np.asarray(gt_rotations(local["pose"])), local["betas"])
    assert np.sum(fake_after ** 2) + np.sum((real_after - 1) ** 2) < np.sum(fake ** 2) + np.sum((real - 1) ** 2)
    assert int(metrics["skipped"]) == 0


def test_horse10_trains_on_all_22_parts_through_a_custom_map(tmp_path, capsys):
    """data.source_keypoints + loss.source_keypoint_map: the 13 Horse-10 parts without a SMAL
    keypoint, placed on the mesh by vertex sets, train beside the 9 that map."""
    from test_data_fixtures import write_dlc_project

    from animax.data.build import build
    from animax.data.keypoint_maps import load_keypoint_map

    write_dlc_project(tmp_path / "dlc")
    build("horse10", tmp_path / "dlc", tmp_path / "data", progress=False)
    horse10 = load_keypoint_map("horse10")
    unmapped = [n for n in horse10.keypoints if n.lower() not in horse10.to_smal]
    (tmp_path / "full.py").write_text(
        "import ml_collections\n"
        "def get_config():\n"
        "    c = ml_collections.ConfigDict()\n"
        "    c.name = 'horse10_full'\n"
        f"    c.keypoints = {horse10.keypoints!r}\n"
        f"    c.to_smal = {dict(horse10.to_smal)!r}\n"
        f"    c.to_vertices = {{{', '.join(f'{n!r}: ({10 * i}, {10 * i + 1})' for i, n in enumerate(unmapped))}}}\n"
        "    return c\n")
    config = small_config(**{"data.name": "horse10", "data.root": str(tmp_path / "data"), "data.worker_count": 0,
                             "data.prefetch": 0, "data.source_keypoints": 22,
                             "loss.source_keypoint_map": str(tmp_path / "full.py"),
                             "loss.weights.source_keypoints_2d": 1.0, "batch_size": 2})
    assert loop.run(config, tmp_path / "run", mode="one_step") == 0
    rows = dict(line.split(None, 1) for line in capsys.readouterr().out.splitlines() if line.strip())
    assert float(rows["source_keypoints_2d"].split()[0]) > 0


@pytest.mark.slow
@pytest.mark.parametrize("config_file, term", [("configs/animer_stage1.py", "adversarial"),
                                               ("configs/animal3d.py", "supcon")])
def test_animer_vith_configs_take_one_step(tmp_path, config_file, term):
    """AniMer's two stages at full ViT-H size: one optimizer step on CPU (batch 1, in-memory
    synthetic data, no checkpoint to load; block recomputation keeps it within CI's memory)."""
    flags = ["--mode=one_step", "--config.init.kind=scratch", "--config.data.name=synthetic_inline",
             "--config.batch_size=1", "--config.data.eval_examples=1", "--config.data.worker_count=0",
             "--config.model.remat=full"]
    result = subprocess.run([sys.executable, str(REPO / "train.py"), "--config", str(REPO / config_file),
                             "--workdir", str(tmp_path), *flags], capture_output=True, text=True, timeout=1200,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    value, weight = (float(v) for v in rows[term].split()[:2])
    assert weight > 0 and np.isfinite(value)
    assert "update applied" in result.stdout
