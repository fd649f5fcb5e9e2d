"""infer.py's batch loop end to end vs the model alone, on the same config, in one run.

A folder of generated 640 x 480 JPEGs (default 32) goes through decode, preprocess, model and
export exactly as infer.py runs them (`run_inference`, random weights, the stand-in body); the
model alone runs the same Predictor on ready crops at the same batch size. Overhead =
end-to-end seconds per image / model-only seconds per image - 1 (target: under 20% with arrays
only), for `--outputs arrays` and for infer.py's default (every output, the overlay included).
The model is compiled before either is timed.

    python bench/bench_infer_cli.py [--config configs/animer_vith.py] [--images 32] [--batch-size 8] [--workers 4]

Prints a table and writes bench/results/bench_infer_cli.json.
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from common import report, time_call
from PIL import Image

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

        rows = [{"measure": "model only", "ms_per_image": 1e3 * model_s, "images_per_s": 1 / model_s}]
        overheads = {}
        for k, (label, outputs, one_file) in enumerate(VARIANTS):
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
            rows += [{"measure": f"  {stage} (thread time)", "ms_per_image": 1e3 * seconds / len(jobs)}
                     for stage, seconds in summary.stage_s.items()]

    report("bench_infer_cli", rows, ["measure", "ms_per_image", "images_per_s", "overhead_pct"],
           extra={"config": Path(args.config).stem, "images": len(jobs), "batch_size": args.batch_size,
                  "workers": args.workers, "compile_s": compile_s, "overhead": overheads,
                  "cpu_count": os.cpu_count()})
    for label, overhead in overheads.items():
        print(f"{label}: host overhead over the model {100 * overhead:.0f}% (target < 20% with arrays)")


if __name__ == "__main__":
    main()
