"""Renders examples/standin_quadruped.png: the stand-in quadruped mid-stride on a ground plane
under a sky, 640 x 480, with animax's own rasteriser. Deterministic; no third-party images,
so the picture carries no licence beyond the project's.

    python examples/make_example.py [--out examples/standin_quadruped.png]
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from animax.geometry import axis_angle_to_rotmat
from animax.image.raster import render
from animax.smal import load_smal, smal_forward
from animax.smal.__main__ import walking_pose

WIDTH, HEIGHT = 640, 480
FOCAL = 1000.0 / 256 * max(WIDTH, HEIGHT)           # AniMer's full-image focal length
CAMERA = np.array([3.5, -10.0, 0.6])                 # model frame: x forward, y left, z up
TARGET = np.array([0.0, 0.0, -0.1])
FUR = np.array([0.62, 0.44, 0.30])
SKY_TOP, SKY_HORIZON = np.array([0.35, 0.55, 0.85]), np.array([0.80, 0.88, 0.95])
GRASS_NEAR, GRASS_FAR = np.array([0.30, 0.45, 0.20]), np.array([0.55, 0.62, 0.45])


def look_at(camera, target):
    """Rows right, down, forward of a level camera at `camera` looking at `target` (z up)."""
    forward = (target - camera) / np.linalg.norm(target - camera)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(forward, right), forward])


def background(rotation, ground_z):
    """Sky above the horizon, the plane z = ground_z below it, a soft checker for depth cues."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    rays_cam = np.stack([(cols - WIDTH / 2) / FOCAL, (rows - HEIGHT / 2) / FOCAL, np.ones_like(rows)], -1)
    rays = rays_cam @ rotation                                   # model frame directions
    down = rays[..., 2] < -1e-6
    distance = np.where(down, (ground_z - CAMERA[2]) / np.where(down, rays[..., 2], -1.0), 0.0)
    hit = CAMERA + distance[..., None] * rays
    fade = np.clip(distance / 40.0, 0.0, 1.0)[..., None]
    checker = ((np.floor(hit[..., 0] / 2) + np.floor(hit[..., 1] / 2)) % 2)[..., None] * 0.03 * (1 - fade)
    ground = (1 - fade) * GRASS_NEAR + fade * GRASS_FAR + checker
    # Contact shadow: darker ground close under the body.
    shadow = np.exp(-((hit[..., 0] / 0.9) ** 2 + (hit[..., 1] / 0.35) ** 2))[..., None]
    ground *= 1.0 - 0.45 * shadow
    height = np.clip(rays[..., 2] / 0.5, 0.0, 1.0)[..., None]
    sky = (1 - height) * SKY_HORIZON + height * SKY_TOP
    return np.where(down[..., None], ground, sky)


def make_example():
    """uint8 RGB [480, 640, 3]."""
    body = load_smal()
    pose = axis_angle_to_rotmat(walking_pose(body.num_joints))[None]
    vertices = np.asarray(smal_forward(body, np.zeros((1, body.num_betas), np.float32), pose)["vertices"][0],
                          np.float64)
    rotation = look_at(CAMERA, TARGET)
    shaded, mask = render((vertices - CAMERA) @ rotation.T, body.faces, FOCAL, (WIDTH / 2, HEIGHT / 2),
                          HEIGHT, WIDTH, color=FUR)
    picture = np.where(mask[..., None], shaded, background(rotation, vertices[:, 2].min()))
    return np.round(255 * np.clip(picture, 0, 1)).astype(np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "standin_quadruped.png"))
    args = parser.parse_args()
    Image.fromarray(make_example()).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
