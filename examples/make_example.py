"""Renders examples/standin_quadruped.png: the stand-in quadruped mid-stride on a ground plane
under a sky, 640 x 480, with animax's own rasteriser. Deterministic; no third-party images,
so the picture carries no licence beyond the project's.

It is one fixed scene of `animax.data.scenes` (the renderer of the synthetic training data),
so `example_scene()` also knows the example's true keypoints:

    python examples/make_example.py [--out examples/standin_quadruped.png]
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from animax.data import scenes
from animax.geometry import full_image_focal_length
from animax.smal import load_smal
from animax.smal.standin import walking_pose

WIDTH, HEIGHT = scenes.IMAGE_SIZE
CAMERA = np.array([3.5, -10.0, 0.6])                 # world = the model frame: x forward, y left, z up
TARGET = np.array([0.0, 0.0, -0.1])
FUR = np.array([0.62, 0.44, 0.30])


def example_scene(body) -> scenes.Scene:
    """The example: the mean shape walking, facing +x, seen from the front right, the whole
    picture as its box (what infer.py uses without boxes)."""
    focal = float(full_image_focal_length(np.array([WIDTH, HEIGHT])))
    camera = scenes.Camera(CAMERA, scenes.look_at(CAMERA, TARGET), focal, (WIDTH / 2, HEIGHT / 2), WIDTH, HEIGHT)
    return scenes.Scene(betas=np.zeros(body.num_betas), pose=walking_pose(body.num_joints).astype(np.float64),
                        offset=np.zeros(3), camera=camera, look=scenes.Look(fur=tuple(FUR)),
                        box=np.array([0.0, 0.0, WIDTH, HEIGHT]))


def keypoint_errors(keypoints2d, body=None) -> np.ndarray:
    """Distances of predicted keypoints [26, 2] (picture pixels) from the example's true ones, as
    fractions of sqrt(the animal's mask area), PCK's normalisation (AniMer's); NaN where a true
    keypoint is hidden. PCK@0.1 is the share of the others below 0.1."""
    body = load_smal() if body is None else body
    _, mask, labels = scenes.render_image(example_scene(body), body)
    truth = labels["keypoints_2d"]
    errors = np.linalg.norm(np.asarray(keypoints2d)[:, :2] - truth[:, :2], axis=-1) / np.sqrt(mask.sum())
    return np.where(truth[:, 2] > 0, errors, np.nan)


def make_example():
    """(uint8 RGB [480, 640, 3], labels: `animax.data.scenes.labels`, pixels of the picture)."""
    body = load_smal()
    image, _, labels = scenes.render_image(example_scene(body), body)
    return image, labels


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "standin_quadruped.png"))
    args = parser.parse_args()
    Image.fromarray(make_example()[0]).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
