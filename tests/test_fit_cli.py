"""infer.py --fit-keypoints on a still image: given the bundled example's true 2D keypoints as a
COCO keypoint file, the exported fit lands on them (the network alone misses 3 of 26 at PCK@0.1),
and the network's own prediction stays beside it in OUT/<name>_net/."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

import infer
from animax.data import scenes
from animax.smal import load_smal
from animax.smal.constants import KEYPOINT_NAMES
from examples.make_example import example_scene, keypoint_errors

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "standin_quadruped.png"


@pytest.mark.slow
def test_infer_fits_the_example_to_its_true_keypoints(tmp_path):
    body = load_smal()
    _, _, labels = scenes.render_image(example_scene(body), body)
    truth = np.asarray(labels["keypoints_2d"], np.float64)          # [26, 3]: x, y, visible
    coco = {"images": [{"id": 1, "file_name": EXAMPLE.name}],
            "categories": [{"id": 1, "name": "quadruped", "keypoints": list(KEYPOINT_NAMES)}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                             "keypoints": [float(v) for row in truth for v in (row[0], row[1], 2 * (row[2] > 0))]}]}
    (tmp_path / "keypoints.json").write_text(json.dumps(coco))
    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = infer.main(["--input", str(EXAMPLE), "--out_dir", str(out), "--fit-keypoints",
                           str(tmp_path / "keypoints.json")])
    assert code == 0, err.getvalue()
    fitted = np.load(out / "standin_quadruped" / "keypoints2d.npy")
    network = np.load(out / "standin_quadruped_net" / "keypoints2d.npy")
    fit_errors, net_errors = keypoint_errors(fitted, body), keypoint_errors(network, body)
    visible = ~np.isnan(fit_errors)
    # Exact keypoints, one animal: the fit should place every visible keypoint within PCK@0.05.
    assert np.mean(fit_errors[visible] < 0.05) == 1.0, np.round(fit_errors, 3)
    assert np.nanmedian(fit_errors) < np.nanmedian(net_errors)
    result = json.loads((out / "standin_quadruped" / "result.json").read_text())
    assert result["result"] == "fit" and result["fit"]["stages"]
