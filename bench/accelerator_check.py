"""One command that measures a GPU (or TPU) machine for animax: at most ~8 minutes on one H100/H200.

    python bench/accelerator_check.py                  # ViT-H, batch 64, 512 JPEGs; writes
                                                       # bench/results/accelerator_check.json
    python bench/accelerator_check.py --tiny           # the tiny model on CPU, in seconds (the test suite
                                                       # runs this, so the script cannot rot)

Sections (each one row group of the table; a section that fails records its error and the
others go on; past --budget-s the remaining sections are skipped and say so):
  environment   device, JAX/jaxlib, CUDA and cuDNN versions, PyTorch
  pipeline      the ViT-H pipeline forward at --batch: images/s and MFU for bfloat16 (weights cast
                once), float32 at the backend's default precision (TF32 on NVIDIA) and float32
                at HIGHEST; compile time apart
  attention     bfloat16 with cuDNN's fused attention against XLA's products
  infer         infer.py's batch loop (`run_inference`, --arrays-file) on --images 640 x 480
                JPEGs: wall images/s, host thread time per image and stage, device idle share
                (1 - model-only time x batches / wall)
  train         the ViT-H training step at --train-batch, bfloat16, remat none and dots:
                images/s, MFU (3 x forward FLOPs), peak device memory
  parity        float32-HIGHEST outputs on the device against the same step on the CPU
                (batch 2): the largest error relative to each output's scale
  torch         AniMer's ViT-H backbone in PyTorch (tests/helpers/torch_reference.py, from the same
                weights' state dict) on the same GPU, float32 (TF32 off) and bfloat16 autocast,
                beside animax's backbone alone: the side-by-side ratio

MFU = analytic backbone FLOPs (bench/common.backbone_flops, 249.3 GFLOP per image for ViT-H)
x images/s / --peak-tflops (default from the device name: H100/H200 SXM dense 989 TFLOP/s in
bfloat16, 494 in TF32, 67 in float32).

Running it on a lent machine (no package registry there): the machines have Python 3.12 with
JAX 0.11 and the CUDA 13 plugin, flax, optax, orbax and torch. Carry what else animax imports
as pure-Python wheels, fetched here into an ignored folder and named in the run's `carry`:

    pip download --python-version 3.12 --only-binary=:all: --no-deps -d wheels/ \\
        ml-collections tensorflow-datasets array-record grain ...    # what `python -c "import animax.loading"` misses
    # on the machine:  pip install --no-deps wheels/*.whl && python bench/accelerator_check.py

(64 MiB in all; check with `du -sh wheels`.)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "bench"), str(REPO / "tests")]

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from common import RESULTS, backbone_flops, machine_info, time_call  # noqa: E402

# Dense peaks (TFLOP/s) by compute mode, for MFU: NVIDIA's H100/H200 SXM datasheets.
PEAKS = {"H100": {"bfloat16": 989.0, "tf32": 494.0, "float32": 67.0},
         "H200": {"bfloat16": 989.0, "tf32": 494.0, "float32": 67.0}}


class Check:
    """Rows, per-section errors and the time budget of one run."""

    def __init__(self, args):
        self.args, self.rows, self.errors, self.start = args, [], {}, time.perf_counter()

    def section(self, name, fn):
        if time.perf_counter() - self.start > self.args.budget_s:
            self.errors[name] = f"skipped: past the {self.args.budget_s:.0f} s budget"
            return
        t0 = time.perf_counter()
        try:
            for row in fn():
                self.rows.append({"section": name, **row})
        except Exception as e:          # one section's failure must not lose the others' numbers
            self.errors[name] = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        self.rows.append({"section": name, "measure": "section wall time", "value": time.perf_counter() - t0,
                          "unit": "s"})


def peak(kind, mode, override):
    if override:
        return override
    for name, peaks in PEAKS.items():
        if name in kind:
            return peaks[mode]
    return None


def environment(check):
    device = jax.devices()[0]
    rows = [{"measure": "device", "value": f"{device.platform} {device.device_kind} x{jax.device_count()}"},
            {"measure": "jax", "value": jax.__version__}, {"measure": "jaxlib", "value": jax.lib.__version__}]
    with contextlib.suppress(Exception):
        from jax._src.lib import cuda_versions
        rows += [{"measure": "cuDNN", "value": str(cuda_versions.cudnn_get_version())},
                 {"measure": "CUDA runtime", "value": str(cuda_versions.cuda_runtime_get_version())}]
    with contextlib.suppress(ImportError):
        import torch
        rows.append({"measure": "torch", "value": f"{torch.__version__} cuda={torch.cuda.is_available()}"})
    return rows


def shrink(model_config):
    """--tiny: one ViT block and small heads, so each section compiles in seconds on a CPU."""
    model_config.depth = 1
    model_config.smal_head.update(depth=1, dim=32, mlp_dim=32, dim_head=16)
    model_config.head_encoder.update(widths=(4, 8, 8, 8, 8), crop=32)
    model_config.fusion.hidden = 32
    model_config.class_head.update(hidden=32, features=16)


@functools.lru_cache(maxsize=2)
def model_and_variables(config_path, tiny=False):
    """The config's pipeline with random float32 weights (initialised once)."""
    from animax.loading import load_config
    from animax.models import build_model, init_variables
    config = load_config(config_path)
    if tiny:
        shrink(config.model)
    model = build_model(config, scan_blocks=False)
    return model, init_variables(model, 0)


def pipeline_runner(config_path, dtype, precision):
    """A compiled pipeline forward in `dtype` at matmul `precision` ("default" or "highest"), its
    compile seconds and its variables."""
    from animax.runtime import cast_weights
    model, variables = model_and_variables(config_path, TINY[0])
    model = model.clone(model_config=_with_dtype(model.model_config, dtype))
    variables = {**variables, "params": cast_weights(variables["params"], dtype)}
    variables = jax.device_put(variables)
    images = jnp.asarray(np.random.default_rng(0).normal(size=(BATCH[0], 256, 256, 3)), jnp.float32)
    start = time.perf_counter()
    context = jax.default_matmul_precision(precision) if precision != "default" else contextlib.nullcontext()
    with context:
        compiled = jax.jit(model.apply).lower(variables, images).compile()
    return compiled, variables, images, time.perf_counter() - start


BATCH = [64]
TINY = [False]


def _with_dtype(model_config, dtype):
    """The (frozen) model config with another compute dtype."""
    import ml_collections
    config = ml_collections.ConfigDict(model_config.as_configdict() if hasattr(model_config, "as_configdict")
                                       else model_config)
    config.dtype = dtype
    return ml_collections.FrozenConfigDict(config) if hasattr(model_config, "as_configdict") else config


def throughput_rows(label, config_path, dtype, precision, mode, check):
    compiled, variables, images, compile_s = pipeline_runner(config_path, dtype, precision)
    seconds = time_call(lambda: jax.block_until_ready(compiled(variables, images)), warmup=1,
                        repeats=check.args.repeats, min_seconds=0)
    model, _ = model_and_variables(config_path, TINY[0])
    rate = BATCH[0] / seconds
    tflops = backbone_flops(model.model_config) * rate / 1e12
    device_peak = peak(jax.devices()[0].device_kind, mode, check.args.peak_tflops)
    return [{"measure": label, "batch": BATCH[0], "images_per_s": rate, "compile_s": compile_s, "tflops": tflops,
             "mfu_pct": None if device_peak is None else 100 * tflops / device_peak}]


def pipeline(check):
    config = check.args.config
    return (throughput_rows(BF16_ROW, config, "bfloat16", "default", "bfloat16", check)
            + throughput_rows("pipeline float32, default precision (TF32)", config, "float32", "default", "tf32",
                              check)
            + throughput_rows("pipeline float32, HIGHEST", config, "float32", "highest", "float32", check))


BF16_ROW = "pipeline bfloat16 (attention: cuDNN on GPU)"


def attention(check):
    from animax.models import vit
    rows = [dict(row) for row in check.rows if row.get("measure") == BF16_ROW]     # the pipeline section's
    if not rows:
        rows = throughput_rows(BF16_ROW, check.args.config, "bfloat16", "default", "bfloat16", check)
    chosen = vit.attention_implementation
    vit.attention_implementation = lambda dtype: None      # XLA's products everywhere
    try:
        rows += throughput_rows("bfloat16, XLA attention", check.args.config, "bfloat16", "default", "bfloat16",
                                check)
    finally:
        vit.attention_implementation = chosen
    rows[0]["attention"] = chosen(jnp.bfloat16) or "xla"
    return rows


def infer(check):
    from bench_infer_cli import write_images

    from animax.predict.inputs import expand_inputs, plan_jobs
    from animax.predict.predictor import Predictor, prepare
    from animax.predict.run import ImageRunOptions, run_inference
    from animax.runtime import default_dtype
    model, variables = model_and_variables(check.args.config, TINY[0])
    model = model.clone(model_config=_with_dtype(model.model_config, default_dtype()))
    predictor = Predictor(model, variables, BATCH[0])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        write_images(folder, check.args.images)
        jobs, _ = plan_jobs(expand_inputs([folder])[0])
        from PIL import Image
        image = np.asarray(Image.open(folder / "image_000.jpg").convert("RGB"))
        animals = [prepare(image, (0, 0, 640, 480))] * predictor.batch_size
        predictor.compile((512, 768))
        compile_s = predictor.compile_s
        model_s = time_call(lambda: predictor.predict_animals(animals), warmup=1, repeats=check.args.repeats,
                            min_seconds=0) / predictor.batch_size
        options = ImageRunOptions(Path(tmp) / "out", ("arrays",), Path(tmp) / "run.npz", check.args.workers,
                                  progress=False)
        info = {"weights": "random"}
        start = time.perf_counter()
        summary = run_inference(predictor, jobs, info, options)
        wall = time.perf_counter() - start
    if summary.failures:
        raise RuntimeError(summary.failures[0])
    n = len(jobs)
    host = sum(summary.stage_s[k] for k in ("window", "submit", "fetch", "export"))
    rows = [{"measure": "infer end to end", "images": n, "images_per_s": n / wall, "compile_s": compile_s,
             "model_only_ms": 1e3 * model_s, "device_idle_pct": 100 * max(0.0, 1 - model_s * n / wall)},
            {"measure": "host ms/image outside decode and device", "value": 1e3 * host / n, "unit": "ms"}]
    rows += [{"measure": f"  {stage} (thread ms/image)", "value": 1e3 * s / n, "unit": "ms"}
             for stage, s in summary.stage_s.items()]
    return rows


def train(check):
    from animax.train import input as input_lib
    from animax.train.loop import Trainer
    from configs import animal3d, standin
    rows = []
    for remat in check.args.remat:
        if check.args.tiny:        # one block and small heads: the code path, compiled in seconds
            config = standin.get_config("tiny")
            shrink(config.model)
        else:
            config = animal3d.get_config()
            config.init.kind = "scratch"
            config.data.name = "synthetic_inline"
        config.batch_size = check.args.train_batch
        config.model.dtype = "bfloat16"
        config.model.remat = remat
        with tempfile.TemporaryDirectory() as workdir:
            trainer = Trainer(config, workdir)
            source = input_lib.train_source(config, trainer.body)
            batch = trainer.batch(next(source), input_lib.TRAIN_KEYS)
            start = time.perf_counter()
            compiled = trainer.compiled_train_step(trainer.abstract_state, batch)
            compile_s = time.perf_counter() - start
            state = trainer.restore_or_init()
            times = []
            for _ in range(1 + check.args.repeats):
                t0 = time.perf_counter()
                state, metrics = compiled(state, batch, trainer.smal)
                jax.block_until_ready(metrics)
                times.append(time.perf_counter() - t0)
            input_lib.close_train_source(source)
            trainer.checkpointer.close()
        step = float(np.median(times[1:]))
        rate = config.batch_size / step
        tflops = 3 * backbone_flops(config.model) * rate / 1e12
        device_peak = peak(jax.devices()[0].device_kind, "bfloat16", check.args.peak_tflops)
        stats = jax.devices()[0].memory_stats() or {}
        analysis = compiled.memory_analysis()
        planned = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes - analysis.alias_size_in_bytes
                   + analysis.temp_size_in_bytes) / 2**30
        rows.append({"measure": f"train step bfloat16 remat={remat}", "batch": config.batch_size,
                     "images_per_s": rate, "compile_s": compile_s, "tflops": tflops,
                     "mfu_pct": None if device_peak is None else 100 * tflops / device_peak,
                     "peak_gib": stats.get("peak_bytes_in_use", 0) / 2**30 or None, "planned_gib": planned})
    return rows


def parity(check):
    """float32-HIGHEST on the default device against the CPU, batch 2."""
    from animax.runtime import exact_matmuls
    model, variables = model_and_variables(check.args.config, TINY[0])
    images = np.random.default_rng(1).normal(size=(2, 256, 256, 3)).astype(np.float32)
    outputs = {}
    devices = [("device", jax.devices()[0]), ("cpu", jax.devices("cpu")[0])]
    if devices[0][1] == devices[1][1]:       # a CPU-only machine: one run stands for both
        devices = devices[:1]
    for name, device in devices:
        placed = jax.device_put((variables, images), device)
        with exact_matmuls():
            out = jax.jit(model.apply)(*placed)
        outputs[name] = jax.tree.map(np.asarray, out)
    rows = []
    for key in ("feature_map", "betas", "pose", "cam", "vertices", "keypoints_2d", "fused_features"):
        a, b = outputs["device"][key], outputs.get("cpu", outputs["device"])[key]
        rows.append({"measure": f"f32 HIGHEST vs CPU: {key}", "value": float(np.abs(a - b).max() / np.abs(b).max()),
                     "unit": "max err / max |cpu|"})
    return rows


def torch_side(check):
    import torch

    from animax.convert.animer import to_torch_state_dict
    from animax.models import vit
    from animax.runtime import cast_weights
    from helpers.torch_reference import torch_vit
    if not torch.cuda.is_available() and not check.args.tiny:
        raise RuntimeError("torch has no CUDA device here")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, variables = model_and_variables(check.args.config, TINY[0])
    cfg = model.model_config
    state = {k: torch.from_numpy(np.array(v)).to(device)
             for k, v in to_torch_state_dict(_full_config(check), variables).items()
             if k.startswith("backbone.")}
    heads = cfg.num_heads or vit.decode_variant(cfg.variant)["num_heads"]
    depth = cfg.depth or vit.decode_variant(cfg.variant)["depth"]
    batch = BATCH[0]
    images = torch.from_numpy(np.random.default_rng(0).normal(size=(batch, 3, 256, 192)).astype(np.float32)).to(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    rows = []

    def timed(fn):
        def call():
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
        with torch.inference_mode():
            return time_call(call, warmup=1, repeats=check.args.repeats, min_seconds=0)

    torch_f32 = timed(lambda: torch_vit(state, images, heads, depth, prefix="backbone."))

    def autocast():
        with torch.autocast(device, dtype=torch.bfloat16):
            torch_vit(state, images, heads, depth, prefix="backbone.")
    torch_bf16 = timed(autocast)
    backbone = vit.Model(cfg.variant, **{k: cfg[k] for k in ("depth", "num_heads") if cfg[k]})
    params = variables["params"]["backbone"]
    jax_images = jnp.asarray(images.cpu().numpy().transpose(0, 2, 3, 1))
    for dtype, precision, torch_s in (("float32", "highest", torch_f32), ("bfloat16", "default", torch_bf16)):
        net = backbone.clone(dtype=jnp.dtype(dtype))
        placed = jax.device_put({"params": cast_weights(params, dtype)})
        context = jax.default_matmul_precision(precision) if precision != "default" else contextlib.nullcontext()
        with context:
            compiled = jax.jit(net.apply).lower(placed, jax_images).compile()
        seconds = time_call(lambda: jax.block_until_ready(compiled(placed, jax_images)), warmup=1,
                            repeats=check.args.repeats, min_seconds=0)
        rows.append({"measure": f"backbone {dtype}: animax / PyTorch images/s", "batch": batch,
                     "images_per_s": batch / seconds, "torch_images_per_s": batch / torch_s,
                     "value": torch_s / seconds, "unit": "ratio"})
    return rows


def _full_config(check):
    from animax.loading import load_config
    config = load_config(check.args.config)
    if check.args.tiny:
        shrink(config.model)
    return config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny model, small batches, few images (CPU)")
    parser.add_argument("--config", help="model config (default: configs/animer_vith.py; --tiny: configs/tiny.py)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 4))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--remat", nargs="+", default=["none", "dots"])
    parser.add_argument("--peak-tflops", type=float, help="override the device's dense peak (all modes)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="skip the sections left after this")
    parser.add_argument("--sections", nargs="+",
                        default=["environment", "pipeline", "attention", "infer", "train", "parity", "torch"])
    parser.add_argument("--out", default=str(RESULTS / "accelerator_check.json"))
    args = parser.parse_args(argv)
    if args.tiny:
        args.batch, args.train_batch, args.images, args.repeats, args.remat = 2, 2, 6, 1, ["none"]
        args.workers = 2
    args.config = args.config or str(REPO / "configs" / ("tiny.py" if args.tiny else "animer_vith.py"))
    BATCH[0], TINY[0] = args.batch, args.tiny
    check = Check(args)
    sections = {"environment": lambda: environment(check), "pipeline": lambda: pipeline(check),
                "attention": lambda: attention(check), "infer": lambda: infer(check), "train": lambda: train(check),
                "parity": lambda: parity(check), "torch": lambda: torch_side(check)}
    for name in args.sections:
        check.section(name, sections[name])
    columns = ["section", "measure", "batch", "images_per_s", "compile_s", "tflops", "mfu_pct", "value", "unit"]
    for row in check.rows:
        print("  ".join(f"{k}={_fmt(row[k])}" for k in columns + [c for c in row if c not in columns] if k in row))
    for name, error in check.errors.items():
        print(f"{name}: {error}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine_info(), "args": vars(args), "rows": check.rows,
                               "errors": check.errors, "wall_s": time.perf_counter() - check.start}, indent=2,
                              default=str))
    print(f"wrote {out} in {time.perf_counter() - check.start:.0f} s")
    return 1 if check.errors else 0


def _fmt(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    sys.exit(main())
