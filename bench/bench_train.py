"""Training-step speed: step time, images/s and achieved FLOP/s of the jitted train step.

Cases (each a full optimizer step: forward, losses, backward, AdamW, on a synthetic batch):
    synthetic_tiny   configs/synthetic_tiny.py as is (batch 8), one batch over and over
    synthetic_tiny_loop, synthetic_tiny_loop_noprefetch
                     the same, but every step takes a new batch from the training source, as
                     train.py does: with batches made ahead on a thread (data.prefetch 2) and without
    vith             AniMer's ViT-H/16 model (configs/animal3d.py), batch and dtype from the flags;
                     on a CPU use --vith_batch 1 --remat (memory) and expect tens of seconds a step
Model FLOPs are the backbone's, counted analytically (common.backbone_flops: matmuls,
attention and patch embedding; training: 3 x forward; recomputation under remat not
counted), since XLA's cost analysis counts a scanned block once; for ViT-H the heads add
under 2%. With
--peak_tflops (the device's dense peak for the compute dtype, e.g. 989 for an H100 SXM in
bfloat16) the table adds the model FLOPs utilisation. Writes bench/results/bench_train.json.

    python bench/bench_train.py                               # synthetic_tiny only
    python bench/bench_train.py --cases synthetic_tiny vith --vith_batch 1 --remat --steps 2
    python bench/bench_train.py --cases vith --vith_batch 32 --dtype bfloat16 --peak_tflops 989   # H100
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from animax.train import input as input_lib  # noqa: E402
from animax.train.loop import Trainer  # noqa: E402
from common import backbone_flops, report  # noqa: E402
from configs import animal3d, synthetic_tiny  # noqa: E402


def case_config(name, args):
    if name.startswith("synthetic_tiny"):
        config = synthetic_tiny.get_config()
        if name.endswith("noprefetch"):
            config.data.prefetch = 0
        return config
    config = animal3d.get_config()
    config.init.kind = "scratch"
    config.data.name = "synthetic_inline"
    config.batch_size = args.vith_batch
    config.model.dtype = args.dtype
    config.model.remat = args.remat
    return config


def bench(name, args):
    config = case_config(name, args)
    with tempfile.TemporaryDirectory() as workdir:
        trainer = Trainer(config, workdir)
        state = trainer.restore_or_init()
        source = input_lib.train_source(config, trainer.body)
        fresh = "_loop" in name
        batch = trainer.batch(next(source), input_lib.TRAIN_KEYS)
        start = time.perf_counter()
        compiled = trainer.train_step.lower(state, batch, trainer.smal).compile()
        compile_s = time.perf_counter() - start
        state, metrics = compiled(state, batch, trainer.smal)   # warm-up
        jax.block_until_ready(metrics)
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            if fresh:
                batch = trainer.batch(next(source), input_lib.TRAIN_KEYS)
            state, metrics = compiled(state, batch, trainer.smal)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t0)
        input_lib.close_train_source(source)
        trainer.checkpointer.close()
    step_s = sorted(times)[len(times) // 2]
    flops = 3 * backbone_flops(config.model) * config.batch_size   # forward + backward
    row = {"case": name, "batch": config.batch_size, "dtype": config.model.dtype, "remat": config.model.remat,
           "compile_s": compile_s, "step_s": step_s, "images_per_s": config.batch_size / step_s,
           "backbone_gflop_per_step": flops / 1e9, "achieved_tflops": flops / step_s / 1e12}
    if args.peak_tflops:
        row["mfu"] = row["achieved_tflops"] / args.peak_tflops
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["synthetic_tiny"],
                        choices=["synthetic_tiny", "synthetic_tiny_loop", "synthetic_tiny_loop_noprefetch", "vith"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case (median reported)")
    parser.add_argument("--vith_batch", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="ViT-H compute dtype")
    parser.add_argument("--remat", action="store_true", help="ViT-H: recompute block activations")
    parser.add_argument("--peak_tflops", type=float, default=None, help="device peak, for MFU")
    args = parser.parse_args()
    rows = [bench(name, args) for name in args.cases]
    columns = ["case", "batch", "dtype", "remat", "compile_s", "step_s", "images_per_s", "backbone_gflop_per_step",
               "achieved_tflops"] + (["mfu"] if args.peak_tflops else [])
    report("bench_train", rows, columns, extra={"args": vars(args)})


if __name__ == "__main__":
    main()
