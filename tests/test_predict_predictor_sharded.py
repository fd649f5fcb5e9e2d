"""The Predictor splits its batch over all local devices: on 8 forced CPU devices its results
equal one device's. Runs in a subprocess, since the device count is fixed when JAX starts."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
import jax, numpy as np
from animax.loading import load_model_or_random
from animax.predict.predictor import Predictor, prepare
assert len(jax.local_devices()) == 8
loaded = load_model_or_random(random_weights=True)
model, variables = loaded.model, loaded.variables
rng = np.random.default_rng(0)
images = [rng.integers(0, 256, (120 + 8 * k, 160, 3), dtype=np.uint8) for k in range(5)]
boxes = [(5.0, 10.0, 150.0, 100.0 + k) for k in range(5)]
animals = [prepare(image, box) for image, box in zip(images, boxes)]
sharded = Predictor(model, variables, batch_size=6)            # padded to 8, one crop per device
single = Predictor(model, variables, batch_size=6, devices=jax.local_devices()[:1])
assert sharded.padded_size == 8 and single.padded_size == 6
sharded.compile()
compiled, = sharded._compiled.values()
spread = len(compiled.input_shardings[0][2].device_set)              # the box centres' sharding
a, b = sharded.predict_animals(animals), single.predict_animals(animals)
head = ("head_box", "head_features", "fused_features")
def worst(keys):
    return max(float(np.max(np.abs(x[k] - y[k])) / (1e-3 + np.max(np.abs(y[k])))) for x, y in zip(a, b) for k in keys)
print(json.dumps({"body": worst([k for k in a[0] if k not in head]), "head": worst(head), "spread": spread,
                  "count": len(a)}))
"""


def test_eight_devices_give_one_devices_results():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["spread"] == 8 and result["count"] == 5
    # Same arithmetic per crop; only XLA's blocking of the per-device batch (1 vs 6 rows) may
    # reorder float32 sums: a few ulp (2^-23 = 1.2e-7) per op through 4 blocks, measured 7e-6 of
    # each output's scale, bound 1e-4 (a misplaced slice is off by O(1)). The head crop is then
    # resampled where those keypoints land: a 1e-3 px shift on these random-noise images
    # (pixel-to-pixel steps of up to ~4 normalised units) moves the head features by ~1e-4 of
    # their scale; bound 2e-3.
    assert result["body"] < 1e-4 and result["head"] < 2e-3, result
