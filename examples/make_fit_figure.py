"""Renders docs/images/fit_before_after.png: a held-out synthetic render, the shipped demo
model's mesh over it (left) and the mesh fitted to its true 2D keypoints (2 px noise) and mask
(right).

    python examples/make_fit_figure.py
"""

from pathlib import Path

import numpy as np
from PIL import Image

from animax.data.scenes import SceneSampler, labels, render
from animax.fit import fit, from_predictions
from animax.fit.run import picture_overlay
from animax.loading import load_model_or_random
from animax.predict.predictor import Predictor

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "fit_before_after.png"


def main(index=5):
    loaded = load_model_or_random()
    body = loaded.body
    scene = SceneSampler(body, seed=0, max_yaw=np.radians(45.0)).scene("test", index)
    posed = scene.posed_body(body)
    picture, mask = render(scene, body, posed=posed)
    image = np.round(255 * picture).astype(np.uint8)
    result = Predictor(loaded.model, loaded.variables, batch_size=1).predict(image, [scene.box])[0]
    keypoints = labels(scene, posed, scene.camera)["keypoints_2d"].copy()
    keypoints[:, :2] += np.random.default_rng(0).normal(0.0, 2.0, (len(keypoints), 2))
    fitted = fit(body, keypoints[None, None], (image.shape[1], image.shape[0]), masks=[[mask]],
                 start=from_predictions([result]), progress=False).arrays
    before = picture_overlay(image, result["vertices"], result["cam_t_full"], result["focal_length"], body.faces,
                             result["keypoints2d"])
    after = picture_overlay(image, fitted["vertices"][0, 0], fitted["cam_t_full"][0, 0], result["focal_length"],
                            body.faces, fitted["keypoints2d"][0, 0])
    both = Image.fromarray(np.concatenate([before, after], axis=1))
    both.thumbnail((640, 240))
    both.save(OUT, optimize=True)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
