"""bfloat16 against float32 (the precision policy, animax/runtime.py) on accuracy and outputs.

float32 is the exact mode (every matmul at HIGHEST); bfloat16 casts the weight matrices once
(`runtime.cast_weights`) and computes the network's matmuls in bfloat16 with float32 norms,
softmax, skinning and geometry. On the shipped demo model over held-out synthetic renders
(bench_standin_demo.py's `test` split): PCK@0.1 and PA-MPJPE of each, and how far bfloat16's
vertices, 2D keypoints (crop pixels) and betas move from float32's. With --vith, the same
output differences for a random ViT-H (AniMer's architecture; no accuracy without weights).

    python bench/bench_precision.py [--examples 128] [--vith 2]
Writes bench/results/bench_precision.json.
"""

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import report  # noqa: E402

from animax.loading import SHIPPED_MODEL, load_model_or_random, random_model  # noqa: E402
from animax.runtime import cast_weights, step_precision  # noqa: E402
from animax.saved_model import read_config  # noqa: E402
from animax.train import metrics  # noqa: E402
from animax.train.synthetic import SyntheticQuadrupeds  # noqa: E402

KEYS = ("vertices", "keypoints_2d", "keypoints_3d", "betas", "cam")


def runners(model, variables, batch=8):
    """{dtype: (compiled images [batch, 256, 256, 3] -> outputs, its variables)} under the
    policy's casts and precision."""
    import ml_collections

    out = {}
    for dtype in ("float32", "bfloat16"):
        config = model.model_config.as_configdict()
        config.dtype = dtype
        typed = model.clone(model_config=ml_collections.FrozenConfigDict(config))
        placed = {**variables, "params": cast_weights(variables["params"], dtype)}
        with step_precision(dtype):
            out[dtype] = (jax.jit(typed.apply).lower(placed, jnp.zeros((batch, 256, 256, 3))).compile(), placed)
    return out


def differences(f32, bf16):
    rows = {}
    for key in KEYS:
        a, b = np.asarray(f32[key], np.float64), np.asarray(bf16[key], np.float64)
        scale = 256.0 if key == "keypoints_2d" else 1.0         # crop pixels for the 2D keypoints
        rows[f"{key}_max"] = float(np.abs(a - b).max() * scale)
        rows[f"{key}_mean"] = float(np.abs(a - b).mean() * scale)
    return rows


def demo(count):
    loaded = load_model_or_random(ckpt=str(SHIPPED_MODEL))
    model, variables = loaded.model, loaded.variables
    config, _ = read_config(SHIPPED_MODEL)
    body = variables["smal"]["model"]
    source = SyntheticQuadrupeds(body, 8, seed=config.seed, split="test", num_batches=-(-count // 8),
                                 max_yaw=np.radians(config.data.get("max_yaw_degrees", 180.0)))
    run = runners(model, variables)
    totals = {d: np.zeros(4) for d in run}
    outputs = {d: {k: [] for k in KEYS} for d in run}
    for b in source:
        images = jnp.asarray(b["image"])
        ones = jnp.ones(len(images))
        for dtype, (compiled, placed) in run.items():
            out = compiled(placed, images)
            p, pw = metrics.pck(out["keypoints_2d"], jnp.asarray(b["keypoints_2d"]), jnp.asarray(b["mask"]), ones, ones)
            m, mw = metrics.pa_mpjpe(out["keypoints_3d"], jnp.asarray(b["keypoints_3d"]), ones)
            totals[dtype] += [float(jnp.sum(v)) for v in (p * pw, pw, m * mw, mw)]
            for k in KEYS:
                outputs[dtype][k].append(np.asarray(out[k], np.float32))
    rows = []
    for dtype, t in totals.items():
        rows.append({"model": "shipped demo", "dtype": dtype, "examples": count, "pck@0.1": t[0] / t[1],
                     "pa_mpjpe": t[2] / t[3]})
    joined = {d: {k: np.concatenate(v) for k, v in o.items()} for d, o in outputs.items()}
    rows[-1].update(differences(joined["float32"], joined["bfloat16"]))
    return rows


def vith(count):
    model, variables = random_model(str(REPO / "configs" / "animer_vith.py"))
    images = jnp.asarray(np.random.default_rng(0).normal(size=(count, 256, 256, 3)), jnp.float32)
    out = {dtype: compiled(placed, images) for dtype, (compiled, placed) in runners(model, variables, count).items()}
    return [{"model": "random ViT-H", "dtype": "bfloat16", "examples": count,
             **differences(out["float32"], out["bfloat16"])}]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=128)
    parser.add_argument("--vith", type=int, default=0, help="also a random ViT-H on this many inputs")
    args = parser.parse_args()
    rows = demo(args.examples) + (vith(args.vith) if args.vith else [])
    report("bench_precision", rows, ["model", "dtype", "examples", "pck@0.1", "pa_mpjpe", "vertices_max",
                                     "vertices_mean", "keypoints_2d_max", "keypoints_2d_mean", "betas_max", "cam_max"])


if __name__ == "__main__":
    main()
