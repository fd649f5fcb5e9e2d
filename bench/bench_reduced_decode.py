"""infer.py --reduced-decode: JPEG decode time and the effect on crops and outputs, against a
full decode, on camera-trap-sized photos.

Pictures: AniMer's example photos (../shared/data/animer_examples, when present) enlarged to
4000 x 3000 with sensor-like noise (sigma 3 grey levels, so they keep fine detail), and
generated fields of waves up to 1/8 cycle per pixel (worst case: the reduced decode's block
average removes detail the full decode's crop blur keeps part of). JPEG quality 90. Two boxes
per picture: the whole picture (a 1/8 decode) and a centred box of 1/3 of it (1333 pixels: 1/2).

Per (picture kind, box): decode ms (median), factor, the 256 x 256 crop's difference in grey
levels (mean and 99th percentile of |full - reduced|), and the shipped demo model's outputs:
2D keypoints in picture pixels and as a share of the box side, vertices relative to the mesh's size.

    python bench/bench_reduced_decode.py [--pictures 4]

Prints a table and writes bench/results/bench_reduced_decode.json.
"""

import argparse
import io
import time
from pathlib import Path

import numpy as np
from common import report
from PIL import Image

from animax.image.crop import IMAGE_MEAN, IMAGE_STD
from animax.image.io import FULL_SCALE, load_image, load_reduced
from animax.loading import load_model_or_random
from animax.predict.predictor import Predictor, prepare
from animax.predict.run import largest_reduction

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "animer_examples"
SIZE = (4000, 3000)


def photos(count):
    """AniMer's photos enlarged to SIZE, with noise."""
    rng = np.random.default_rng(0)
    for path in sorted(PHOTOS.glob("*"))[:count]:
        big = np.asarray(Image.open(path).convert("RGB").resize(SIZE, Image.Resampling.LANCZOS), np.float32)
        yield path.stem, np.clip(big + rng.normal(0, 3, big.shape), 0, 255).round().astype(np.uint8)


def waves(count):
    rng = np.random.default_rng(1)
    y, x = np.mgrid[0:SIZE[1], 0:SIZE[0]].astype(np.float32)
    for k in range(count):
        channels = [sum(np.cos(2 * np.pi * (fx * x + fy * y) + p)
                        for fx, fy, p in rng.uniform([-0.125, -0.125, 0], [0.125, 0.125, 6.3], (4, 3)))
                    for _ in range(3)]
        image = np.stack(channels, -1)
        yield f"waves_{k}", np.round(255 * (image - image.min()) / (image.max() - image.min())).astype(np.uint8)


def median_ms(fn, repeats=5):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pictures", type=int, default=4, help="pictures of each kind")
    args = parser.parse_args()
    shipped = load_model_or_random()
    predictor = Predictor(shipped.model, shipped.variables, batch_size=2)
    width, height = SIZE
    third = (width / 3, height / 3, 2 * width / 3, 2 * height / 3)
    rows = []
    for kind, pictures in (("photo x noise", photos(args.pictures)), ("waves", waves(args.pictures))):
        for name, pixels in pictures:
            encoded = io.BytesIO()
            Image.fromarray(pixels).save(encoded, "JPEG", quality=90)
            data = encoded.getvalue()
            full = load_image(io.BytesIO(data))
            full_ms = median_ms(lambda: load_image(io.BytesIO(data)))
            for box_name, box in (("whole", None), ("third", third)):
                boxes = None if box is None else [box]

                def reduced_decode(boxes=boxes):
                    return load_reduced(io.BytesIO(data), lambda w, h: largest_reduction(boxes, w, h))
                reduced, scale = reduced_decode()
                box_px = (0.0, 0.0, float(width), float(height)) if box is None else box
                animals = [prepare(full, box_px, FULL_SCALE), prepare(reduced, box_px, scale)]
                crops = [a.crop * IMAGE_STD + IMAGE_MEAN for a in animals]
                crop_diff = np.abs(crops[0] - crops[1])
                out_full, out_reduced = predictor.predict_animals(animals)
                side = max(box_px[2] - box_px[0], box_px[3] - box_px[1])
                keypoints = np.linalg.norm(out_full["keypoints2d"] - out_reduced["keypoints2d"], axis=-1)
                extent = np.ptp(out_full["vertices"], axis=0).max()
                vertices = np.abs(out_full["vertices"] - out_reduced["vertices"]).max() / extent
                rows.append({"kind": kind, "picture": name, "box": box_name, "factor": scale.factor,
                             "decode_full_ms": full_ms, "decode_reduced_ms": median_ms(reduced_decode),
                             "crop_mean_grey": float(crop_diff.mean()),
                             "crop_p99_grey": float(np.percentile(crop_diff, 99)),
                             "kp_max_px": float(keypoints.max()), "kp_max_pct_box": 100 * float(keypoints.max()) / side,
                             "vertices_max_pct": 100 * float(vertices)})
                print(rows[-1], flush=True)
    columns = ["kind", "picture", "box", "factor", "decode_full_ms", "decode_reduced_ms", "crop_mean_grey",
               "crop_p99_grey", "kp_max_px", "kp_max_pct_box", "vertices_max_pct"]
    report("bench_reduced_decode", rows, columns, {"size": SIZE, "jpeg_quality": 90})


if __name__ == "__main__":
    main()
