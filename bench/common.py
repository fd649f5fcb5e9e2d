"""Timing and reporting helpers shared by the benchmarks."""

import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def time_call(fn, warmup=3, repeats=20, min_seconds=1.0):
    """Median wall time of fn() in seconds, after warm-up calls; repeats until min_seconds pass."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def backbone_flops(model_config, tokens=16 * 12 + 1):
    """Analytic forward FLOPs per image of the ViT (about 98.5% of the pipeline's) on AniMer's
    256 x 192 crop: 16 x 12 patches + the class token. XLA's cost analysis is not used: it
    counts a scanned block once."""
    from animax.models.vit import decode_variant
    spec = decode_variant(model_config.variant)
    width, mlp = spec["width"], spec["mlp_dim"]
    depth = model_config.depth or spec["depth"]
    per_block = 2 * tokens * width * (3 * width + width + 2 * mlp) + 4 * tokens * tokens * width
    patch_embed = 2 * (tokens - 1) * 3 * spec["patch_size"] ** 2 * width
    return depth * per_block + patch_embed


def machine_info():
    import jax
    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__,
            "jax_devices": [str(d) for d in jax.devices()]}
    try:
        import torch
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    except ImportError:
        pass
    return info


def report(name, rows, columns, extra=None):
    """Prints rows (dicts) as a table and writes them with machine info to bench/results/NAME.json."""
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in columns))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps({"machine": machine_info(), "rows": rows, **(extra or {})}, indent=2))
    print(f"wrote {out}")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
