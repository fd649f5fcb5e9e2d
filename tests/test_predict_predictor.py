"""The Predictor (animax.predict.predictor) against the CLI's batch run, and its mapping of crop
results to image pixels."""

import numpy as np
import pytest

from animax.image.io import load_image
from animax.loading import random_model
from animax.predict.predictor import Predictor
from configs import tiny
from helpers.infer_cli import BATCH, MULTI_BOXES_XYWH
from helpers.nn_reference import U, assert_within, f32_tol, pipeline_steps, rel_err

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32


@pytest.fixture(scope="module")
def predictor():
    return Predictor(*random_model(None), batch_size=BATCH)  # the built-in demo model, as infer.py uses


def test_predictor_matches_the_cli_and_maps_to_image_pixels(batch_run, predictor):
    image = load_image(batch_run.folder / "multi.png")
    boxes = [(x, y, x + w, y + h) for x, y, w, h in MULTI_BOXES_XYWH[:2]]
    results = predictor.predict(image, boxes)
    assert len(results) == 2
    # The same model and batch size, but these boxes sit in other batch rows than in the CLI's
    # batches: float32 results of the whole pipeline need not be bitwise equal.
    tol = f32_tol(*pipeline_steps(tiny.get_config().model), sides=2)  # the demo model is configs/tiny.py's
    for k, result in enumerate(results):
        folder = batch_run.out / f"multi_{k}"
        for name in ("keypoints2d", "vertices", "cam_t_full", "fused_features"):
            assert rel_err(result[name], np.load(folder / f"{name}.npy")) < tol, name
        # Crop-normalised keypoints span the square box: (k + 0.5) * size + top-left corner
        # (computed in float64, stored as float32: one rounding).
        x1, y1, x2, y2 = boxes[k]
        size = max(x2 - x1, y2 - y1)
        top_left = np.array([(x1 + x2) / 2, (y1 + y2) / 2]) - size / 2
        expected = (result["keypoints2d_crop"].astype(np.float64) + 0.5) * size + top_left
        np.testing.assert_allclose(result["keypoints2d"], expected, rtol=2 * U, atol=U * np.abs(expected).max())
        # REFERENCE.md's crop -> full-image camera, F = 1000 / 256 * max(W, H).
        s, tx, ty = result["cam"].astype(np.float64)
        focal, bs = 1000 / 256 * 200, size * s + 1e-9
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        expected = [2 * (cx - 100) / bs + tx, 2 * (cy - 75) / bs + ty, 2 * focal / bs]
        # float32 in the model: ~5 roundings of terms of these sizes (the box centre's too), x3.
        scale = np.abs([2 * (cx + 100) / bs, 2 * (cy + 75) / bs, 2 * focal / bs]) + np.abs([tx, ty, 0])
        assert_within(result["cam_t_full"], expected, 16 * U * np.array(scale))
    # The whole image is the default box; more boxes than a batch run in several batches.
    assert predictor.predict(image)[0]["box"].tolist() == [0, 0, 200, 150]
    assert len(predictor.predict(image, [boxes[0]] * (BATCH + 1))) == BATCH + 1
