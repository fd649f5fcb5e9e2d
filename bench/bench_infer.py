"""The full pipeline (ViT-H/16 AniMer config) in animax vs the same architecture and weights
in PyTorch, side by side in one run.

Reports images/s, compile time, peak memory and achieved GFLOP/s against a measured
float32 matmul peak of this machine. The PyTorch path is AniMer's forward written from the
state dict (tests/helpers/torch_reference.py) with smplx's lbs for the body model; both get the same
random weights (animax's init, exported with the checkpoint converter's key table).

    python bench/bench_infer.py [--config configs/animer_vith.py] [--batches 1 8]
                                [--dtypes float32 bfloat16] [--repeats 3] [--no-torch]
"""

import argparse
import resource
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(Path(__file__).parent)]

from common import backbone_flops, report, time_call  # noqa: E402

from animax.convert.animer import to_torch_state_dict  # noqa: E402
from animax.loading import load_config  # noqa: E402
from animax.models import build_model, init_variables  # noqa: E402


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def matmul_peak_gflops(n=4096):
    """Best float32 GFLOP/s of an n x n matmul in JAX and in PyTorch (the machine's practical peak)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    t_jax = time_call(lambda: f(a).block_until_ready(), warmup=2, repeats=5)
    out = {"jax": 2 * n**3 / t_jax / 1e9}
    try:
        import torch
        b = torch.ones(n, n)
        t_torch = time_call(lambda: b @ b, warmup=2, repeats=5)
        out["torch"] = 2 * n**3 / t_torch / 1e9
    except ImportError:
        pass
    return out


def bench_animax(config, variables, batch, dtype, repeats):
    config.model.dtype = dtype
    model = build_model(config, smal=variables["smal"]["model"])
    images = jnp.asarray(np.random.default_rng(0).normal(size=(batch, 256, 256, 3)), jnp.float32)
    start = time.perf_counter()
    compiled = jax.jit(model.apply).lower(variables, images).compile()
    compile_s = time.perf_counter() - start
    flops = backbone_flops(config.model) * batch
    seconds = time_call(lambda: jax.block_until_ready(compiled(variables, images)), warmup=1,
                        repeats=repeats, min_seconds=0)
    memory = compiled.memory_analysis()
    temp_gib = getattr(memory, "temp_size_in_bytes", 0) / 2**30
    return {"impl": "animax", "batch": batch, "dtype": dtype, "compile_s": compile_s, "s_per_batch": seconds,
            "images_per_s": batch / seconds, "gflop_per_image": flops / batch / 1e9,
            "gflops": flops / seconds / 1e9, "temp_gib": temp_gib, "peak_rss_gib": peak_rss_gib()}


def bench_torch(config, variables, batch, repeats, flops_per_image):
    import torch
    from smplx.lbs import lbs

    from helpers.torch_reference import torch_head, torch_vit

    state = {k: torch.from_numpy(np.array(v)) for k, v in to_torch_state_dict(config, variables).items()}
    body = variables["smal"]["model"]
    t = lambda a: torch.from_numpy(np.array(a))  # noqa: E731
    smal = [t(body.v_template), t(body.shapedirs), t(body.posedirs), t(body.j_regressor),
            torch.tensor(body.parents), t(body.lbs_weights)]
    heads = config.model.num_heads or 16
    depth = config.model.depth or 32

    def forward(images):
        fmap, cls = torch_vit(state, images[:, :, :, 32:-32], heads, depth, prefix="backbone.")
        out = torch_head(state, fmap, config.model.smal_head.depth, config.model.smal_head.heads, prefix="smal_head.")
        verts, _ = lbs(out["betas"], out["pose"], *smal[:5], smal[5], pose2rot=False)
        return verts

    images = torch.from_numpy(np.random.default_rng(0).normal(size=(batch, 3, 256, 256)).astype(np.float32))
    with torch.inference_mode():
        seconds = time_call(lambda: forward(images), warmup=1, repeats=repeats, min_seconds=0)
    return {"impl": "pytorch", "batch": batch, "dtype": "float32", "s_per_batch": seconds,
            "images_per_s": batch / seconds, "gflop_per_image": flops_per_image,
            "gflops": flops_per_image * batch / seconds, "peak_rss_gib": peak_rss_gib()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "animer_vith.py"))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch side")
    parser.add_argument("--name", default="bench_infer", help="results file name")
    args = parser.parse_args()

    config = load_config(args.config)
    peak = matmul_peak_gflops()
    print("matmul peak (float32, 4096^2): " + ", ".join(f"{k} {v:.1f} GFLOP/s" for k, v in peak.items()))
    variables = init_variables(build_model(config))
    rows = []
    for batch in args.batches:
        for dtype in args.dtypes:
            rows.append(bench_animax(config, variables, batch, dtype, args.repeats))
            print(rows[-1])
        if not args.no_torch:
            flops = next(r["gflop_per_image"] for r in rows if r["batch"] == batch)
            rows.append(bench_torch(config, variables, batch, args.repeats, flops))
            print(rows[-1])
    best = max(peak.values())
    for row in rows:
        row["pct_of_matmul_peak"] = 100 * row["gflops"] / best
    report(args.name, rows, ["impl", "batch", "dtype", "images_per_s", "s_per_batch", "compile_s", "gflop_per_image",
                             "gflops", "pct_of_matmul_peak", "temp_gib", "peak_rss_gib"],
           extra={"matmul_peak_gflops": peak, "device": str(jax.devices()[0])})


if __name__ == "__main__":
    main()
