"""The shipped demo model (animax/assets/standin_demo): it loads as infer.py's default and finds
the bundled example's keypoints, whose truth examples/make_example.py knows. This guards the
committed file against silent breakage (a changed layout, config key or body model)."""

import contextlib
import io
from pathlib import Path

import numpy as np

import infer
from animax.image.io import load_image
from animax.loading import SHIPPED_MODEL, SHIPPED_MODEL_NAME, load_model_or_random
from animax.predict.predictor import Predictor
from examples.make_example import keypoint_errors

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "standin_quadruped.png"
# Share of the example's visible keypoints within PCK@0.1 (a tenth of sqrt(mask area)) that the
# shipped model must reach: what it measured (bench/bench_standin_demo.py, docs/training.md)
# less two keypoints of margin for another CPU's float32 rounding.
MIN_EXAMPLE_PCK = 0.80     # measured 0.885 (23 of 26), bench_standin_demo.py; 21 of 26 pass


def test_the_shipped_model_is_committed_and_is_the_default():
    assert (SHIPPED_MODEL / "config.json").is_file()
    info = load_model_or_random().info
    assert info["weights"] == SHIPPED_MODEL_NAME and info["config"] == "standin_demo"


def test_the_shipped_model_finds_the_example_keypoints():
    loaded = load_model_or_random()
    model, variables = loaded.model, loaded.variables
    result = Predictor(model, variables, batch_size=1).predict(load_image(EXAMPLE))[0]
    errors = keypoint_errors(result["keypoints2d"], variables["smal"]["model"])
    visible = errors[~np.isnan(errors)]
    assert np.mean(visible < 0.1) >= MIN_EXAMPLE_PCK, np.round(errors, 3)


def test_infer_without_ckpt_says_which_model_it_runs(tmp_path):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = infer.main(["--input", str(EXAMPLE), "--out_dir", str(tmp_path)])
    assert code == 0
    assert f"no --ckpt given: {SHIPPED_MODEL_NAME}" in stderr.getvalue()
    assert (tmp_path / EXAMPLE.stem / "overlay.png").is_file()
