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
