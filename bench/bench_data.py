"""Training input throughput: decoded, augmented 256x256 examples per second per worker.

Builds a small Animal3D-format dataset of 640x480 JPEGs (AniMer's horse photo when
../shared/data is present, a synthetic texture otherwise) with masks and boxes of 120-480
pixels, then times each stage of one example on one core and the whole in-process grain
loader (one worker's work). Target: at least 100 examples per second per core. Each row
has wall-clock time and the process's CPU time: on a shared machine the wall clock also
counts time spent waiting for a core, and CPU time is what one worker costs a core. CPU
time is taken over chunks of calls (a batch for the loader): the median chunk, and the
best chunk, the least disturbed by other processes sharing the core's caches.
The device crop (data.device_crop, `animax.image.device_warp`) is timed beside it: the host's
share (the window's plan and copy instead of the warp), and the crop itself jitted on this
machine's JAX device for a batch of `--device-batch` windows of `--window` pixels.
Prints a table and writes bench/results/bench_data.json.

    python bench/bench_data.py [--examples 64] [--batch 32] [--batches 8] [--workers 0 2] [--window 512]
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import report, time_call
from PIL import Image

from animax.data import AugmentConfig, make_loader, open_source, prepare_example
from animax.data.augment import crop_example, sample_augmentation
from animax.data.build import build
from animax.data.loader import decode_example
from animax.image.device_warp import to_window, warp_flops, warp_windows

HORSE = Path(__file__).resolve().parents[2] / "shared" / "data" / "animer_examples" / "000000015956_horse.png"
WIDTH, HEIGHT = 640, 480
TARGET_PER_CORE = 100.0


def source_image(rng):
    """uint8 [480, 640, 3]: the horse photo, or smooth coloured noise with JPEG-like detail."""
    if HORSE.is_file():
        return np.asarray(Image.open(HORSE).convert("RGB").resize((WIDTH, HEIGHT)))
    coarse = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((WIDTH, HEIGHT), Image.BICUBIC)
    return np.clip(np.asarray(coarse, np.float64) + rng.normal(0, 12, (HEIGHT, WIDTH, 3)), 0, 255).astype(np.uint8)


def write_dataset(root: Path, count: int):
    """An Animal3D-format folder of `count` 640x480 JPEG examples with masks."""
    rng = np.random.default_rng(0)
    image = source_image(rng)
    records = []
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(count):
        size = rng.uniform(120, 480)
        x, y = rng.uniform(0, WIDTH - size), rng.uniform(0, HEIGHT - size * 0.8)
        shifted = np.roll(image, (int(rng.integers(HEIGHT)), int(rng.integers(WIDTH))), (0, 1))
        Image.fromarray(shifted).save(root / f"images/{i}.jpg", quality=90)
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        mask[int(y):int(y + size * 0.8), int(x):int(x + size)] = 255
        Image.fromarray(mask).save(root / f"masks/{i}.png")
        keypoints = np.stack([rng.uniform(x, x + size, 26), rng.uniform(y, y + size * 0.8, 26), np.ones(26)], -1)
        records.append({"img_path": f"images/{i}.jpg", "mask_path": f"masks/{i}.png",
                        "bbox": [x, y, size, size * 0.8], "keypoint_2d": keypoints.tolist(),
                        "keypoint_3d": rng.normal(0, 0.3, (26, 3)).tolist(), "pose": rng.normal(0, 0.2, 105).tolist(),
                        "shape": rng.normal(0, 1, 41).tolist(), "trans": [0, 0, 10], "supercategory": 2})
    (root / "train.json").write_text(json.dumps({"data": records}))


def cpu_seconds(fn, chunks, calls_per_chunk):
    """(median, best) CPU seconds of this process (all its threads) per call of fn, over chunks."""
    per_call = []
    for _ in range(chunks):
        start = time.process_time()
        for _ in range(calls_per_chunk):
            fn()
        per_call.append((time.process_time() - start) / calls_per_chunk)
    return float(np.median(per_call)), min(per_call)


def loader_seconds(source, batch, batches, workers, window=0):
    """(wall, median CPU, best CPU) seconds per example of the grain loader over `batches`
    batches after a warm-up batch; CPU is this process's. window: the device crop's."""
    iterator = iter(make_loader([source], batch_size=batch, seed=0, worker_count=workers, device_crop_window=window))
    next(iterator)
    wall = time.perf_counter()
    median, best = cpu_seconds(lambda: next(iterator), batches, 1)
    return (time.perf_counter() - wall) / (batch * batches), median / batch, best / batch


def device_crop_row(examples, decoded, augmentations, window, batch):
    """The device crop of `batch` windows, jitted on the default JAX device: ms per example."""
    import jax

    rows = [crop_example(decoded[i], examples[i], augmentations[i], window_size=window) for i in range(batch)]
    keys = ("window", "window_affine", "window_edges", "gain")
    arrays = [jax.device_put(np.stack([r[k] for r in rows])) for k in keys]
    has_mask = jax.device_put(np.ones(batch, np.float32))
    crop = jax.jit(warp_windows)
    wall = time_call(lambda: jax.block_until_ready(crop(*arrays, has_mask)), warmup=2, repeats=20)
    return {"stage": f"device crop, jitted on {jax.devices()[0].platform}, batch {batch} x {window} px",
            "wall_ms": 1e3 * wall / batch, "per_s_wall": batch / wall}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0],
                        help="loader worker processes to time (0 = in-process: one worker's rate)")
    parser.add_argument("--window", type=int, default=512, help="the device crop's window side")
    parser.add_argument("--device-batch", type=int, default=8)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_dataset(tmp / "src", args.examples)
        build("animal3d", tmp / "src", tmp / "data", progress=False)
        source = open_source("animal3d", "train", tmp / "data")
        examples = [source[i] for i in range(len(source))]
        decoded = [decode_example(e) for e in examples]
        rng = np.random.default_rng(0)
        augmentations = [sample_augmentation(rng, AugmentConfig()) for _ in examples]
        counter = iter(range(10**9))

        def one(fn):
            return lambda: fn(next(counter) % len(examples))

        stages = {
            "read record (array_record)": one(lambda i: source[i]),
            "decode JPEG + mask PNG": one(lambda i: decode_example(examples[i])),
            "augment + crop (RGB + mask warp)": one(lambda i: crop_example(decoded[i], examples[i], augmentations[i])),
            "whole example (decode + augment + crop)": one(lambda i: prepare_example(examples[i], augmentations[i])),
            "augment + window for the device crop": one(
                lambda i: crop_example(decoded[i], examples[i], augmentations[i], window_size=args.window)),
            "whole example, device crop (decode + augment + window)": one(
                lambda i: prepare_example(examples[i], augmentations[i], window_size=args.window)),
        }
        rows = []
        for stage, fn in stages.items():
            wall = time_call(fn, warmup=len(examples) // 4, repeats=2 * len(examples))
            cpu, best = cpu_seconds(fn, 16, 8)
            rows.append({"stage": stage, "wall_ms": 1e3 * wall, "cpu_ms": 1e3 * cpu, "best_cpu_ms": 1e3 * best,
                         "per_s_wall": 1.0 / wall, "per_cpu_s": 1.0 / cpu, "best_per_cpu_s": 1.0 / best})
        rows.append(device_crop_row(examples, decoded, augmentations, args.window, args.device_batch))
        for workers, window in [(w, 0) for w in args.workers] + [(0, args.window)]:
            wall, cpu, best = loader_seconds(source, args.batch, args.batches, workers, window)
            row = {"stage": (f"grain loader, {workers} worker processes" if workers else
                             "grain loader, in-process (one worker)") + (", device crop" if window else ""),
                   "wall_ms": 1e3 * wall, "per_s_wall": 1.0 / wall}
            if not workers:  # with worker processes this process only gathers their batches
                row.update(cpu_ms=1e3 * cpu, best_cpu_ms=1e3 * best, per_cpu_s=1.0 / cpu, best_per_cpu_s=1.0 / best)
            rows.append(row)
        image_note = "AniMer horse photo" if HORSE.is_file() else "synthetic texture"
        load = os.getloadavg()[0]
        windows = [crop_example(d, e, a, window_size=args.window) for d, e, a in zip(decoded, examples, augmentations)]
        identity = to_window(np.eye(3)[:2], (0, 0))         # a host crop's map
        host_cropped = np.mean([np.array_equal(w["window_affine"], identity) for w in windows])
        report("bench_data", rows, ["stage", "wall_ms", "cpu_ms", "best_cpu_ms", "per_s_wall", "per_cpu_s",
                                    "best_per_cpu_s"],
               extra={"images": f"{args.examples} JPEGs 640x480 q90 ({image_note}), boxes 120-480 px",
                      "target_per_core": TARGET_PER_CORE, "load_average": load, "cpus": os.cpu_count(),
                      "device_crop": {"window": args.window, "share_cropped_on_host": float(host_cropped),
                                      "flops_per_crop": warp_flops(), "share_of_vith": warp_flops() / 249.3e9}})
        print(f"device crop: {100 * host_cropped:.0f}% of the windows were host crops (region past {args.window} "
              f"pixels); {warp_flops() / 1e6:.1f} MFLOP a crop, {warp_flops() / 249.3e9:.1e} of ViT-H's 249.3 GFLOP")
        loader = next(r for r in rows if r["stage"] == "grain loader, in-process (one worker)")
        print(f"one worker: {loader['per_cpu_s']:.0f} examples per CPU-second (best batch "
              f"{loader['best_per_cpu_s']:.0f}), {loader['per_s_wall']:.0f} per wall-clock second; target "
              f"{TARGET_PER_CORE:.0f} per core; load average {load:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
