"""Training steps side by side with PyTorch: step time, images/s, FLOP/s and peak memory.

Cases (each a full optimizer step: forward, backward, AdamW, on a synthetic batch):
    synthetic_tiny   configs/standin.py:tiny as is (batch 8), one batch over and over
    synthetic_tiny_loop, synthetic_tiny_loop_noprefetch
                     the same, but every step takes a new batch from the training source, as
                     train.py does: with batches made ahead on a thread (data.prefetch 2) and without
    vith             AniMer's ViT-H/16 model (configs/animal3d.py: the whole pipeline with its
                     losses), one row per --remat policy (animax.models.vit.REMAT_POLICIES)
    vith_backbone    animax's ViT-H/16 backbone alone doing the torch_vith rows' work (the same loss,
                     optax AdamW with the same settings, the state donated): like for like
                     with PyTorch, one row per --remat policy
    torch_vith       AniMer's ViT-H/16 backbone in PyTorch, written from its state dict as the
                     inference benchmark does, a loss on its feature map, backward, torch AdamW;
                     without and with torch.utils.checkpoint per block
    torch_animer     the same with AniMer's SMAL head and class-token head on top (its trained
                     network; the vith rows' like for like, less SMAL skinning, the head
                     encoder and fusion, which animax adds)
Every row runs in its own process under `/usr/bin/time -v`, so `peak_rss_gib` is that case's
alone. animax rows add the compiled step's memory analysis: arguments (the train state and
the batch), outputs, the part of them aliased to donated arguments, and temporaries; their
`device_peak_gib` = arguments + outputs - aliased + temporaries is what an accelerator must
hold. With --memory_batches B1 B2 each animax policy is also compiled (not run) at those
batches; the device peak is linear in the batch, which gives `max_batch`: the largest batch
whose peak fits in --memory_gib (PyTorch's: from its peak RSS at the two batches). Model FLOPs
are the backbone's, counted analytically (common.backbone_flops: training = 3 x forward; remat's
recomputation not counted). With --peak_tflops (the device's dense peak for the compute dtype)
the table adds the model FLOPs utilisation. Writes bench/results/bench_train.json.

    python bench/bench_train.py                                          # synthetic_tiny only
    python bench/bench_train.py --cases vith torch_vith --vith_batch 1 --remat none full dots --steps 2
    python bench/bench_train.py --cases vith --remat none full dots --dtype bfloat16 --vith_batch 8 \
        --memory_batches 8 16 --memory_gib 80 --compile_only          # estimates for an 80 GB GPU
"""

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)]

from common import backbone_flops, report  # noqa: E402

GIB = 2.0**30


def case_config(name, args, batch=None, remat="none"):
    from configs import animal3d, standin

    if name.startswith("synthetic_tiny"):
        config = standin.get_config("tiny")
        if name.endswith("noprefetch"):
            config.data.prefetch = 0
        return config
    config = animal3d.get_config()
    config.init.kind = "scratch"
    config.data.name = "synthetic_inline"
    config.batch_size = batch or args.vith_batch
    config.model.dtype = args.dtype
    config.model.remat = remat
    return config


def memory_analysis(compiled) -> dict:
    """The compiled step's buffers (GiB) and the device peak they imply."""
    m = compiled.memory_analysis()
    sizes = {"argument_gib": m.argument_size_in_bytes, "output_gib": m.output_size_in_bytes,
             "alias_gib": m.alias_size_in_bytes, "temp_gib": m.temp_size_in_bytes}
    sizes = {k: v / GIB for k, v in sizes.items()}
    sizes["device_peak_gib"] = sizes["argument_gib"] + sizes["output_gib"] - sizes["alias_gib"] + sizes["temp_gib"]
    return sizes


def animax_case(name, args, batch=None, remat="none", compile_only=False) -> dict:
    import jax

    from animax.train import input as input_lib
    from animax.train.loop import Trainer

    config = case_config(name, args, batch, remat)
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(config, workdir)
        source = input_lib.train_source(config, trainer.body)
        fresh = "_loop" in name
        batch_arrays = trainer.batch(next(source), input_lib.TRAIN_KEYS)
        # Compiled from the state's shapes (compile_only builds no state); as in Trainer.train,
        # the compiler's and the initialisation's freed host memory is released before a step runs.
        start = time.perf_counter()
        compiled = trainer.compiled_train_step(trainer.abstract_state, batch_arrays)
        row = {"compile_s": time.perf_counter() - start, **memory_analysis(compiled)}
        times = []
        if not compile_only:
            state = trainer.restore_or_init()
            state, metrics = compiled(state, batch_arrays, trainer.smal)   # warm-up
            jax.block_until_ready(metrics)
            for _ in range(args.steps):
                t0 = time.perf_counter()
                if fresh:
                    batch_arrays = trainer.batch(next(source), input_lib.TRAIN_KEYS)
                state, metrics = compiled(state, batch_arrays, trainer.smal)
                jax.block_until_ready(metrics)
                times.append(time.perf_counter() - t0)
        input_lib.close_train_source(source)
        trainer.checkpointer.close()
    row.update(case=name, side="animax", batch=config.batch_size, dtype=config.model.dtype,
               remat=str(config.model.remat))
    if times:
        row["step_s"] = sorted(times)[len(times) // 2]
        flops = 3 * backbone_flops(config.model) * config.batch_size
        row.update(images_per_s=config.batch_size / row["step_s"], achieved_tflops=flops / row["step_s"] / 1e12)
    return row


def backbone_case(args, batch, remat="none", compile_only=False) -> dict:
    """animax's ViT-H backbone alone: torch_case's step in JAX (scanned blocks, as training runs)."""
    import jax
    import jax.numpy as jnp
    import optax

    from animax.models import vit
    from animax.train.loop import release_freed_host_memory

    model = vit.Model("H/16", scan_blocks=True, remat=remat, dtype=args.dtype)
    images = jax.random.normal(jax.random.PRNGKey(1), (batch, 256, 192, 3))
    tx = optax.adamw(1e-6, weight_decay=1e-4)

    def init():
        params = model.init(jax.random.PRNGKey(0), images)["params"]
        return params, tx.init(params)

    def step(params, opt_state, images):
        def loss(p):
            out = model.apply({"params": p}, images)
            tokens = jnp.concatenate([out["cls_token"][:, None], out["patch_tokens"]], axis=1)
            return jnp.mean(jnp.square(tokens))
        grads = jax.grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    # Compiled and initialised as Trainer.train does: freed host memory released before a step.
    abstract = jax.eval_shape(init)
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(*abstract, images).compile()
    row = {"compile_s": time.perf_counter() - start, **memory_analysis(compiled)}
    release_freed_host_memory()
    times = []
    if not compile_only:
        params, opt_state = jax.jit(init)()
        release_freed_host_memory()
        params, opt_state = compiled(params, opt_state, images)    # warm-up
        jax.block_until_ready(params)
        for _ in range(args.steps):
            t0 = time.perf_counter()
            params, opt_state = compiled(params, opt_state, images)
            jax.block_until_ready(params)
            times.append(time.perf_counter() - t0)
    row.update(case="vith_backbone", side="animax", batch=batch, dtype=args.dtype, remat=remat)
    if times:
        from configs import animal3d
        row["step_s"] = sorted(times)[len(times) // 2]
        flops = 3 * backbone_flops(animal3d.get_config().model) * batch
        row.update(images_per_s=batch / row["step_s"], achieved_tflops=flops / row["step_s"] / 1e12)
    return row


def torch_case(args, batch, checkpointing, with_heads=False) -> dict:
    """AniMer's ViT-H backbone forward + backward + AdamW in PyTorch (float32, CPU threads as set);
    with_heads: AniMer's trained network, the SMAL head and the class-token head on top."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    from configs import animal3d
    from helpers.torch_reference import (
        random_state,
        torch_block,
        torch_class_head_shapes,
        torch_head,
        torch_head_shapes,
        torch_vit_shapes,
    )

    width, depth, heads, mlp = 1280, 32, 16, 5120
    shapes = torch_vit_shapes(width, depth, mlp, 192)
    if with_heads:   # AniMer's sizes (configs/animal3d.py): head 1024 wide, 6 layers; class head 4096 -> 256
        shapes.update({f"smal_head.{k}": v for k, v in torch_head_shapes(1024, 6, 8, 64, 1024, width).items()})
        shapes.update({f"class_head.{k}": v for k, v in torch_class_head_shapes(width, 4096, 256).items()})
    state = random_state(shapes)
    params = {k: v.requires_grad_() for k, v in state.items() if v.is_floating_point() and "running" not in k}
    optimizer = torch.optim.AdamW(params.values(), lr=1e-6, weight_decay=1e-4)
    images = torch.randn(batch, 3, 256, 192)

    def class_head(x):
        for i in (0, 3, 6):
            x = F.linear(x, params[f"class_head.{i}.weight"])
            n = i + 1
            x = F.batch_norm(x, state[f"class_head.{n}.running_mean"], state[f"class_head.{n}.running_var"],
                             params.get(f"class_head.{n}.weight"), params.get(f"class_head.{n}.bias"),
                             training=batch > 1)     # torch refuses batch statistics of one sample
            x = F.relu(x) if i != 6 else x
        return x

    def step():
        x = F.conv2d(images, params["patch_embed.proj.weight"], params["patch_embed.proj.bias"], stride=16, padding=2)
        x = x.flatten(2).transpose(1, 2) + params["pos_embed"][:, 1:] + params["pos_embed"][:, :1]
        x = torch.cat([params["cls_token"].expand(batch, -1, -1), x], dim=1)
        for i in range(depth):
            if checkpointing:
                x = checkpoint(torch_block, params, f"blocks.{i}.", x, heads, use_reentrant=False)
            else:
                x = torch_block(params, f"blocks.{i}.", x, heads)
        x = F.layer_norm(x, (width,), params["last_norm.weight"], params["last_norm.bias"], 1e-6)
        loss = x.square().mean()
        if with_heads:
            feature_map = x[:, 1:].transpose(1, 2).reshape(batch, width, 16, 12)
            smal = torch_head(params, feature_map, 6, 8, prefix="smal_head.")
            loss = loss + sum(v.square().mean() for v in smal.values()) + class_head(x[:, 0]).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()                                   # warm-up (AdamW allocates its moments here)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    step_s = sorted(times)[len(times) // 2]
    flops = 3 * backbone_flops(animal3d.get_config().model) * batch
    return {"case": "torch_animer" if with_heads else "torch_vith", "side": "pytorch",
            "batch": batch, "dtype": "float32",
            "remat": "checkpoint" if checkpointing else "none", "step_s": step_s, "images_per_s": batch / step_s,
            "achieved_tflops": flops / step_s / 1e12}


def worker(spec) -> dict:
    if spec["case"] in ("torch_vith", "torch_animer"):
        return torch_case(spec["args"], spec["batch"], spec["checkpointing"], spec["case"] == "torch_animer")
    if spec["case"] == "vith_backbone":
        return backbone_case(spec["args"], spec.get("batch") or spec["args"].vith_batch, spec.get("remat", "none"),
                             spec.get("compile_only", False))
    return animax_case(spec["case"], spec["args"], spec.get("batch"), spec.get("remat", "none"),
                       spec.get("compile_only", False))


def run_isolated(spec) -> dict:
    """One case in its own process under /usr/bin/time -v: its row plus its peak RSS."""
    payload = json.dumps({**spec, "args": vars(spec["args"])})
    run = subprocess.run(["/usr/bin/time", "-v", sys.executable, __file__, "--worker", payload],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"case {spec['case']} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    row = json.loads(run.stdout.strip().splitlines()[-1])
    rss_kib = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", run.stderr).group(1))
    return {**row, "peak_rss_gib": rss_kib * 1024 / GIB}


def max_batch(points, budget_gib):
    """The largest batch whose device peak, linear through two (batch, peak) points, fits the budget."""
    (b1, p1), (b2, p2) = points
    per_image = (p2 - p1) / (b2 - b1)
    return int((budget_gib - (p1 - per_image * b1)) // per_image) if per_image > 0 else None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["synthetic_tiny"],
                        choices=["synthetic_tiny", "synthetic_tiny_loop", "synthetic_tiny_loop_noprefetch", "vith",
                                 "vith_backbone", "torch_vith", "torch_animer"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case (median reported)")
    parser.add_argument("--vith_batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="ViT-H compute dtype")
    parser.add_argument("--remat", nargs="+", default=["none"], choices=["none", "full", "dots"],
                        help="ViT-H activation recomputation policies, one row each")
    parser.add_argument("--memory_batches", nargs=2, type=int, metavar=("B1", "B2"),
                        help="also compile each ViT-H policy at these batches for max_batch")
    parser.add_argument("--memory_gib", type=float, default=24.0, help="device memory budget for max_batch")
    parser.add_argument("--compile_only", action="store_true",
                        help="ViT-H: compile and report memory, run no step (estimates for another device)")
    parser.add_argument("--peak_tflops", type=float, default=None, help="device peak, for MFU")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        spec = json.loads(args.worker)
        spec["args"] = argparse.Namespace(**spec["args"])
        print(json.dumps(worker(spec)))
        return
    rows = []
    for name in args.cases:
        if name in ("vith", "vith_backbone"):
            for remat in args.remat:
                row = run_isolated({"case": name, "args": args, "remat": remat, "compile_only": args.compile_only})
                if args.memory_batches:
                    points = [(b, run_isolated({"case": name, "args": args, "remat": remat, "batch": b,
                                                "compile_only": True})["device_peak_gib"])
                              for b in args.memory_batches]
                    row["max_batch"] = max_batch(points, args.memory_gib)
                rows.append(row)
        elif name in ("torch_vith", "torch_animer"):
            for checkpointing in (False, True):
                row = run_isolated({"case": name, "args": args, "batch": args.vith_batch,
                                    "checkpointing": checkpointing})
                if args.memory_batches:    # PyTorch's peak is its process's RSS, measured at both batches
                    points = [(b, run_isolated({"case": name, "args": args, "batch": b,
                                                "checkpointing": checkpointing})["peak_rss_gib"])
                              for b in args.memory_batches]
                    row["max_batch"] = max_batch(points, args.memory_gib)
                rows.append(row)
        else:
            rows.append(run_isolated({"case": name, "args": args}))
    if args.peak_tflops:
        for row in rows:
            if "achieved_tflops" in row:
                row["mfu"] = row["achieved_tflops"] / args.peak_tflops
    columns = ["case", "side", "batch", "dtype", "remat", "compile_s", "step_s", "images_per_s", "achieved_tflops",
               "peak_rss_gib", "argument_gib", "temp_gib", "alias_gib", "device_peak_gib", "max_batch"]
    report("bench_train", rows, columns + (["mfu"] if args.peak_tflops else []), extra={"args": vars(args)})


if __name__ == "__main__":
    main()
