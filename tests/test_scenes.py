"""The stand-in scene renderer (animax/data/scenes.py) and the in-memory source built on it."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from animax.data import scenes
from animax.geometry import axis_angle_to_rotmat
from animax.image.crop import crop, normalize, square_box
from animax.smal import load_smal, smal_forward
from animax.train.synthetic import SyntheticQuadrupeds
from examples.make_example import example_scene, make_example

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def body():
    return load_smal(None)


@pytest.fixture(scope="module")
def sampler(body):
    return scenes.SceneSampler(body, seed=3)


def _pinhole(points, camera):
    """Independent projection: float64 pinhole with the camera's intrinsics."""
    return camera.focal * points[:, :2] / points[:, 2:] + np.asarray(camera.principal_point)


def test_the_bundled_example_is_one_scene(body):
    """examples/make_example.py draws the committed picture through the scene renderer."""
    image, labels = make_example()
    committed = np.asarray(Image.open(EXAMPLES / "standin_quadruped.png").convert("RGB")).astype(int)
    # float64 shading rounded to 8 bits: another CPU's last-bit differences can move a pixel
    # sitting on a rounding boundary by one level, nothing more.
    difference = np.abs(image.astype(int) - committed)
    assert difference.max() <= 1 and np.mean(difference > 0) < 1e-3
    assert labels["keypoints_2d"][:, 2].all()                   # every keypoint inside the picture


def test_labels_are_the_body_model_seen_by_the_camera(body, sampler):
    """keypoints_2d = the body model, posed with the camera-frame pose and moved by trans,
    projected by a pinhole; keypoints_3d = that body model output without trans."""
    for index in range(4):
        scene = sampler.scene("train", index)
        image, mask, labels = scenes.render_image(scene, body)
        out = smal_forward(body, np.asarray(scene.betas, np.float32)[None],
                           axis_angle_to_rotmat(labels["pose"], xp=np)[None].astype(np.float32))
        model_points = np.asarray(out["keypoints_3d"][0], np.float64)
        # float32 body model over coordinates of ~1 m: a few hundred roundings at most.
        np.testing.assert_allclose(labels["keypoints_3d"], model_points, atol=1e-5)
        pixels = _pinhole(model_points + labels["trans"], scene.camera)
        visible = labels["keypoints_2d"][:, 2] > 0
        # 1e-5 m at ~3000 px per metre of focal over depth: ~0.03 px.
        np.testing.assert_allclose(labels["keypoints_2d"][visible, :2], pixels[visible], atol=0.05)
        on_body = [mask[int(round(y)), int(round(x))] for x, y in pixels[visible]
                   if 0 <= round(x) < mask.shape[1] and 0 <= round(y) < mask.shape[0]]
        assert np.mean(on_body) > 0.8                          # keypoints lie on the drawn body


def test_the_crop_render_is_the_picture_cropped(body, sampler):
    """render_crop draws through the box's camera what animax.image.crop makes of the whole
    picture: the same keypoints (an exact affine map), the same silhouette up to resampling."""
    for index in range(3):
        scene = sampler.scene("train", index)
        image, mask, labels = scenes.render_image(scene, body)
        direct = scenes.render_crop(scene, body)
        center, size = square_box(scene.box)
        rgba = np.concatenate([image, 255 * mask[..., None].astype(np.uint8)], -1)
        cropped, src_from_dst = crop(rgba, center, size)
        linear = src_from_dst[:, :2]
        crop_pixels = (labels["keypoints_2d"][:, :2] - src_from_dst[:, 2]) @ np.linalg.inv(linear).T
        np.testing.assert_allclose(direct["keypoints_2d"][:, :2], crop_pixels / 256 - 0.5, atol=1e-4)
        inside = (np.abs(direct["keypoints_2d"][:, :2]) <= 0.5 + 0.5 / 256).all(-1)
        np.testing.assert_array_equal(direct["keypoints_2d"][:, 2] > 0, inside)
        resampled = cropped[..., 3] > 0.5
        iou = (resampled & (direct["mask"] > 0)).sum() / (resampled | (direct["mask"] > 0)).sum()
        assert iou > 0.9


def test_the_examples_training_crop_is_what_inference_crops(body):
    """The bundled example through the training source's render and through infer.py's crop of
    the committed PNG: the whole-picture box of a 640 x 480 photo reaches 80 px past its top and
    bottom, where the crop has its zero border, and the training crop must show the same."""
    from animax.image.io import load_image
    from animax.predict.predictor import prepare, whole_image_box

    rendered = scenes.render_crop(example_scene(body), body)["image"]
    photo = load_image(EXAMPLES / "standin_quadruped.png")
    inferred = np.asarray(prepare(photo, whole_image_box(photo)).crop)
    border = np.zeros((1, 1, 3), np.float32)
    np.testing.assert_array_equal(inferred[:30], np.broadcast_to(normalize(border), inferred[:30].shape))
    np.testing.assert_array_equal(rendered[:30], inferred[:30])
    # Inside the picture the two differ only where a 640-pixel render, blurred and resampled,
    # meets a direct 256-pixel one: along edges (silhouette, horizon), by a few 8-bit levels.
    difference = np.abs(rendered - inferred)
    assert np.median(difference) < 1.0 / 255 / 0.229 and difference.mean() < 0.01


def test_scenes_are_reproducible_and_splits_differ(body):
    a, b = scenes.SceneSampler(body, seed=3), scenes.SceneSampler(body, seed=3)
    first, again = a.scene("train", 7), b.scene("train", 7)
    np.testing.assert_array_equal(first.pose, again.pose)
    np.testing.assert_array_equal(first.box, again.box)
    assert first.look == again.look
    assert not np.array_equal(a.scene("test", 7).pose, first.pose)
    assert not np.array_equal(scenes.SceneSampler(body, seed=4).scene("train", 7).pose, first.pose)
    # The families' mean shapes belong to the world: another seed keeps them.
    np.testing.assert_array_equal(a.family_betas, scenes.SceneSampler(body, seed=4).family_betas)


def test_headings_stay_within_max_yaw_of_side_on(body):
    """max_yaw keeps the body within that angle of facing right (heading 0) or left (pi), both
    sides drawn; from 90 degrees on, any heading, with the very draws of the default sampler."""
    limited = scenes.SceneSampler(body, seed=3, max_yaw=np.radians(30.0))
    headings = np.array([limited._pose(np.random.default_rng(i))[0, 2] for i in range(200)])
    from_side = np.abs((headings + np.pi / 2) % np.pi - np.pi / 2)   # distance to 0 or pi
    assert from_side.max() <= np.radians(30.0) + 1e-12 and from_side.max() > np.radians(25.0)
    facing_right = np.cos(headings) > 0
    assert 0.35 < facing_right.mean() < 0.65
    wide, default = scenes.SceneSampler(body, seed=3, max_yaw=np.pi / 2), scenes.SceneSampler(body, seed=3)
    np.testing.assert_array_equal(wide.scene("train", 5).pose, default.scene("train", 5).pose)
    assert np.ptp([default._pose(np.random.default_rng(i))[0, 2] for i in range(200)]) > np.radians(340.0)


def test_boxes_frame_the_animal_like_a_detector(body, sampler):
    """Over many scenes: the box holds most of the animal (all of it unless cut), grown by at
    most 2x (plus jitter), and some boxes cut part of it off."""
    held = []
    for index in range(60):
        scene = sampler.scene("train", index)
        pixels = scene.camera.pixels(scene.posed_body(body).vertices)
        x1, y1, x2, y2 = scene.box
        inside = (pixels[:, 0] >= x1) & (pixels[:, 0] <= x2) & (pixels[:, 1] >= y1) & (pixels[:, 1] <= y2)
        held.append(inside.mean())
        extent = pixels.max(0) - pixels.min(0)
        assert (x2 - x1) <= 2.0 * 1.2 * extent[0] and (y2 - y1) <= 2.0 * 1.2 * extent[1]
    held = np.array(held)
    assert np.mean(held == 1.0) > 0.6 and np.mean(held < 0.97) > 0.03 and held.min() > 0.4


def test_synthetic_source_is_deterministic_and_resumable(body):
    a = SyntheticQuadrupeds(body, 2, seed=5)
    next(a)
    state = a.get_state()
    second = next(a)
    b = SyntheticQuadrupeds(body, 2, seed=5)
    b.set_state(state)
    resumed = next(b)
    for key in second:
        np.testing.assert_array_equal(second[key], resumed[key])
    assert second["image"].shape == (2, 256, 256, 3) and second["pose"].shape == (2, 35, 3, 3)
    visible = second["keypoints_2d"][..., 2] > 0
    assert np.all(np.abs(second["keypoints_2d"][..., :2][visible]) <= 0.5 + 0.5 / 256)
    # Batch 1 of 2-example batches is examples 2 and 3, rendered as the scenes say.
    expected = scenes.render_crop(scenes.SceneSampler(body, seed=5).scene("train", 3), body)
    np.testing.assert_array_equal(second["image"][1], expected["image"])


def test_synthetic_source_fixed_set_cycles(body):
    source = SyntheticQuadrupeds(body, 3, seed=1, num_examples=4)
    batches = [next(source) for _ in range(4)]            # examples 0 1 2 | 3 0 1 | 2 3 0 | 1 2 3
    np.testing.assert_array_equal(batches[0]["pose"][0], batches[1]["pose"][1])
    np.testing.assert_array_equal(batches[3]["pose"][2], batches[1]["pose"][0])
