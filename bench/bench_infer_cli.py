"""infer.py's batch loop end to end vs the model alone, on the same config, in one run.

A folder of generated 640 x 480 JPEGs (default 32) goes through decode, window, submit, wait,
fetch and export exactly as infer.py runs them (`run_inference`, random weights, the stand-in body); the
model alone runs the same Predictor on ready crops at the same batch size. Overhead =
end-to-end seconds per image / model-only seconds per image - 1 (target: under 20% with arrays
only), for `--outputs arrays` and for infer.py's default (every output, the overlay included).
The model is compiled before either is timed. The crop's own share of the jitted step (the
device crop alone on the batch's windows, `animax.image.device_crop.crop_windows`) is timed
apart, with its FLOPs beside ViT-H's.

Host thread time per image outside decoding and the device (window + submit + fetch + export,
each the CPU time of the threads that did it; `wait` is wall time blocked on the device) is the
figure to keep under 2 ms.

    python bench/bench_infer_cli.py [--config configs/animer_vith.py] [--images 32] [--batch-size 8] [--workers 4]

Prints a table and writes bench/results/bench_infer_cli.json.
"""

import argparse
import functools
import os
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from common import report, time_call
from PIL import Image

from animax.image.device_crop import WindowBatch, batch_radius, bucket, crop_flops, crop_windows, dense_crop_flops
from animax.loading import load_model_or_random
from animax.predict.inputs import expand_inputs, plan_jobs
from animax.predict.predictor import Predictor, prepare
from animax.predict.run import ImageRunOptions, run_inference

REPO = Path(__file__).resolve().parents[1]
# (label, --outputs, --arrays-file): arrays in one file, arrays per folder, infer.py's default
VARIANTS = (("--arrays-file", ("arrays",), True), ("--outputs arrays", ("arrays",), False),
            ("default outputs", ("arrays", "mesh", "overlay", "json"), False))


def write_images(folder, count, width=640, height=480):
    """Smooth random colour fields with an animal-sized blob, as JPEG (quality 90)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width] / width
    for k in range(count):
        waves = [sum(np.cos(2 * np.pi * (fx * x + fy * y) + p)
                     for fx, fy, p in rng.uniform([-4, -4, 0], [4, 4, 6.3], (3, 3)))
                 for _ in range(3)]
        image = np.stack(waves, -1)
        image = (image - image.min()) / (image.max() - image.min())
        Image.fromarray(np.round(255 * image).astype(np.uint8)).save(folder / f"image_{k:03d}.jpg", quality=90)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "animer_vith.py"),
                        help="model config (tiny.py shows the host-side cost against a ~10 ms model)")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--variants", type=int, nargs="+", default=[0, 1, 2],
                        help="which of VARIANTS to run (0: --arrays-file, 1: --outputs arrays, 2: default outputs)")
    parser.add_argument("--name", default="bench_infer_cli")
    args = parser.parse_args()

    loaded = load_model_or_random(config=args.config)
    predictor = Predictor(loaded.model, loaded.variables, args.batch_size)
    compile_s = predictor.compile()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        write_images(folder, args.images)
        paths, _ = expand_inputs([folder])
        jobs, _ = plan_jobs(paths)

        image = np.asarray(Image.open(paths[0]).convert("RGB"))
        animals = [prepare(image, (0, 0, image.shape[1], image.shape[0]))] * args.batch_size
        model_s = time_call(lambda: predictor.predict_animals(animals), warmup=2, repeats=10) / args.batch_size

        shape = tuple(bucket(n) for n in animals[0].window.shape)
        windows = WindowBatch(predictor.padded_size, shape)
        for k, animal in enumerate(animals):
            windows.fill(k, animal.window)
        radius = batch_radius(windows.kernel)
        crop_fn = jax.jit(functools.partial(crop_windows, radius=radius))
        arrays = jax.device_put(windows.arrays())
        crop_s = time_call(lambda: crop_fn(**arrays).block_until_ready(), warmup=2, repeats=10) / args.batch_size
        rows = [{"measure": "model only (crop included)", "ms_per_image": 1e3 * model_s, "images_per_s": 1 / model_s},
                {"measure": f"  device crop alone, bucket {shape}", "ms_per_image": 1e3 * crop_s,
                 "share_pct": 100 * crop_s / model_s}]
        overheads = {}
        for k, (label, outputs, one_file) in enumerate(VARIANTS):
            if k not in args.variants:
                continue
            def run(out, jobs):
                options = ImageRunOptions(out, outputs, out.with_suffix(".npz") if one_file else None,
                                          args.workers, progress=False)
                return run_inference(predictor, jobs, loaded.info, options)

            run(Path(tmp) / f"warmup{k}", jobs[: args.batch_size])
            start = time.perf_counter()
            summary = run(Path(tmp) / f"out{k}", jobs)
            end_to_end_s = (time.perf_counter() - start) / len(jobs)
            assert not summary.failures and summary.animals == len(jobs), summary.failures
            overheads[label] = end_to_end_s / model_s - 1
            rows.append({"measure": f"end to end, {label}", "ms_per_image": 1e3 * end_to_end_s,
                         "images_per_s": 1 / end_to_end_s, "overhead_pct": 100 * overheads[label]})
            rows += [{"measure": f"  {stage} ({'wall' if stage == 'wait' else 'thread CPU'})",
                      "ms_per_image": 1e3 * seconds / len(jobs)}
                     for stage, seconds in summary.stage_s.items()]
            host = sum(summary.stage_s[k] for k in ("window", "submit", "fetch", "export"))
            rows.append({"measure": "  host outside decode and device (window+submit+fetch+export)",
                         "ms_per_image": 1e3 * host / len(jobs)})

    report(args.name, rows, ["measure", "ms_per_image", "images_per_s", "overhead_pct", "share_pct"],
           extra={"config": Path(args.config).stem, "images": len(jobs), "batch_size": args.batch_size,
                  "crop_gflop": crop_flops(shape, radius) / 1e9, "dense_crop_gflop": dense_crop_flops(shape) / 1e9,
                  "crop_share_of_vith_pct": 100 * crop_flops(shape, radius) / 249.3e9,
                  "workers": args.workers, "compile_s": compile_s, "overhead": overheads,
                  "cpu_count": os.cpu_count()})
    for label, overhead in overheads.items():
        print(f"{label}: host overhead over the model {100 * overhead:.0f}% (target < 20% with arrays)")


if __name__ == "__main__":
    main()
