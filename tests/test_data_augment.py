"""Augmentation: every annotation follows the pixels through the crop, and flips mirror the animal."""

import numpy as np
import pytest

from animax.data.augment import Augmentation, AugmentConfig, camera_frame_map, crop_example, sample_augmentation
from animax.data.mirror import BODY_REFLECTION, JOINT_MIRROR, KEYPOINT_MIRROR, transform_pose
from animax.geometry import axis_angle_to_rotmat
from animax.image.crop import IMAGE_MEAN, IMAGE_STD, crop_transform, invert_affine, normalize
from animax.smal import load_smal, smal_forward
from animax.smal.constants import JOINT_NAMES, KEYPOINT_NAMES
from conftest import shared_file
from nn_reference import U
from test_data_fixtures import dot_colors, dot_image, find_dot

# Six keypoints with well separated dot colours, left/right pairs among them.
TRACKED = [KEYPOINT_NAMES.index(n) for n in
           ("left_eye", "right_eye", "left_front_paw", "right_front_paw", "nose", "tail_base")]


def _dotted_example(width=320, height=240, seed=0):
    """An image with a dot per tracked keypoint, and its stored-example arrays."""
    rng = np.random.default_rng(seed)
    keypoints = np.zeros((26, 3), np.float32)
    keypoints[TRACKED, :2] = rng.uniform([70, 60], [width - 70, height - 60], (len(TRACKED), 2))
    keypoints[TRACKED, 2] = 1.0
    points = np.full((26, 2), np.nan)
    points[TRACKED] = keypoints[TRACKED, :2]
    image = dot_image(width, height, points[TRACKED], radius=3.5, seed=seed)
    example = {"bbox": np.array([40, 30, width - 40, height - 30], np.float32), "keypoints_2d": keypoints,
               "keypoints_3d": np.zeros((26, 4), np.float32), "pose": np.zeros((35, 3), np.float32)}
    return image, example


def test_keypoints_and_mask_stay_on_their_dots_through_every_augmentation():
    image, example = _dotted_example()
    # The mask (fourth channel) is a disc around the nose: it must follow the nose's dot.
    nose = KEYPOINT_NAMES.index("nose")
    ys, xs = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    disc = (xs - example["keypoints_2d"][nose, 0]) ** 2 + (ys - example["keypoints_2d"][nose, 1]) ** 2 <= 64
    pixels = np.concatenate([image, 255 * disc[..., None].astype(np.uint8)], -1)
    colors = dict(zip(TRACKED, dot_colors(len(TRACKED)).astype(np.float64)))
    config = AugmentConfig(rotation_rate=1.0, flip_rate=0.5)
    rng = np.random.default_rng(0)
    draws = [sample_augmentation(rng, config) for _ in range(12)]
    draws += [Augmentation(scale=1.3, rotation_deg=60.0, flip=True), Augmentation(scale=0.5),
              Augmentation(scale=2.5)]          # 2.5: a downsampling crop
    assert any(d.flip for d in draws) and any(not d.flip for d in draws)
    x1, y1, x2, y2 = example["bbox"]
    for augmentation in draws:
        out = crop_example(pixels, example, augmentation)
        # Image lengths (a dataset's PCK scale) scale by the crop's zoom: 256 / the square box's side.
        np.testing.assert_allclose(out["zoom"], 256 / (max(x2 - x1, y2 - y1) * augmentation.scale), rtol=1e-6)
        rgb = out["image"] * IMAGE_STD + IMAGE_MEAN
        for k in TRACKED:
            # After a flip, keypoint k of the mirrored animal is the dot of its mirror partner.
            source = KEYPOINT_MIRROR[k] if augmentation.flip else k
            expected = (out["keypoints_2d"][k, :2] + 0.5) * 256
            if not (8 < expected).all() or not (expected < 248).all():
                continue                        # cut off by the crop border
            found = find_dot(rgb, colors[source] * np.array(augmentation.color))
            np.testing.assert_allclose(found, expected, atol=1.5, err_msg=f"{augmentation}, keypoint {k}")
            if source == nose:
                ys, xs = np.nonzero(out["mask"] > 0.5)
                np.testing.assert_allclose([xs.mean(), ys.mean()], expected, atol=1.5)


def test_flip_swaps_left_and_right():
    image, example = _dotted_example()
    plain = crop_example(image, example, Augmentation())
    flipped = crop_example(image, example, Augmentation(flip=True))
    left, right = KEYPOINT_NAMES.index("left_eye"), KEYPOINT_NAMES.index("right_eye")
    mirror_x = np.array([-1.0, 1.0])
    # The animal's left eye shows up mirrored, where the mirrored animal has its right eye.
    # Float64 affine maps, then one float32 rounding each: <= U |x| <= 3e-8 apart.
    np.testing.assert_allclose(flipped["keypoints_2d"][right, :2], plain["keypoints_2d"][left, :2] * mirror_x,
                               atol=1e-6)
    np.testing.assert_allclose(flipped["keypoints_2d"][left, :2], plain["keypoints_2d"][right, :2] * mirror_x,
                               atol=1e-6)
    # The crop mirrors about its centre x = 128 (pixel centres, as the keypoints' kp / 256 - 0.5):
    # flipped column j is plain column 256 - j. Mirrored taps, float32 bilinear weights and sums
    # of 0..255 values, normalised by 255 * std: ~4 U 255 / 57 ~ 1e-6, x10.
    np.testing.assert_allclose(flipped["image"][:, 1:], plain["image"][:, :0:-1], atol=1e-5)


def test_mirror_partners():
    assert KEYPOINT_NAMES[KEYPOINT_MIRROR[KEYPOINT_NAMES.index("left_back_knee")]] == "right_back_knee"
    assert KEYPOINT_NAMES[KEYPOINT_MIRROR[KEYPOINT_NAMES.index("nose")]] == "nose"
    assert JOINT_NAMES[JOINT_MIRROR[JOINT_NAMES.index("LLegBack2")]] == "RLegBack2"
    assert JOINT_NAMES[JOINT_MIRROR[JOINT_NAMES.index("REar")]] == "LEar"
    assert JOINT_NAMES[JOINT_MIRROR[JOINT_NAMES.index("Tail3")]] == "Tail3"
    np.testing.assert_array_equal(KEYPOINT_MIRROR[KEYPOINT_MIRROR], np.arange(26))


@pytest.fixture(scope="module")
def standin():
    return load_smal()


@pytest.mark.parametrize("augmentation", [Augmentation(rotation_deg=35.0), Augmentation(flip=True),
                                          Augmentation(rotation_deg=-50.0, flip=True)])
def test_transformed_pose_poses_the_transformed_body(standin, augmentation):
    """The body posed by the transformed parameters is the transformed body: its keypoints
    are the camera-frame map of the original ones, mirror partners swapped after a flip."""
    rng = np.random.default_rng(4)
    betas = rng.normal(0, 0.5, (1, standin.num_betas)).astype(np.float32)
    pose = axis_angle_to_rotmat(rng.normal(0, 0.3, (35, 3)), xp=np)
    src_from_dst = crop_transform((100.0, 80.0), 150.0, 256, augmentation.rotation_deg, augmentation.flip)
    camera_map = camera_frame_map(invert_affine(src_from_dst))

    def root_relative_keypoints(rotations):
        out = smal_forward(standin, betas, rotations[None].astype(np.float32))
        return np.asarray(out["keypoints_3d"][0] - out["joints"][0, :1])

    expected = root_relative_keypoints(pose) @ camera_map.T
    if augmentation.flip:
        expected = expected[KEYPOINT_MIRROR]
    actual = root_relative_keypoints(transform_pose(pose, camera_map, augmentation.flip))
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_smal_pose_prior_is_mirror_symmetric_in_the_body_frame():
    """The released symmetric pose prior confirms SMAL's sagittal plane: the mirror partner's
    axis-angle is (-x, y, -z), i.e. conjugation by BODY_REFLECTION = diag(1, -1, 1). Exactly
    for the body, legs and tail; the file's ears are only roughly symmetric."""
    from animax.smal.io import load_pickle
    mean = np.asarray(load_pickle(shared_file("smal_priors",
                      "walking_toy_symmetric_pose_prior_with_cov_35parts.pkl"))["mean_pose"]).reshape(35, 3)
    mirrored = mean[JOINT_MIRROR] * np.diag(BODY_REFLECTION) * np.linalg.det(BODY_REFLECTION)
    ears = [JOINT_NAMES.index("LEar"), JOINT_NAMES.index("REar")]
    body = [j for j in range(35) if j not in ears]
    np.testing.assert_allclose(mirrored[body], mean[body], atol=1e-6)
    np.testing.assert_allclose(mirrored[ears], mean[ears], atol=0.03)


def test_3d_keypoints_rotate_with_the_2d_crop():
    """Projecting the augmented 3D keypoints gives the augmented 2D keypoints up to a scale and
    shift (a weak-perspective camera), never a residual rotation or reflection."""
    rng = np.random.default_rng(5)
    points = rng.normal(0, 0.3, (26, 3))
    translation = np.array([0.2, -0.1, 8.0])
    focal, center = 1000.0, np.array([160.0, 120.0])
    camera_xyz = points + translation
    pixels = focal * camera_xyz[:, :2] / camera_xyz[:, 2:] + center
    example = {"bbox": np.array([60, 20, 260, 220], np.float32),
               "keypoints_2d": np.concatenate([pixels, np.ones((26, 1))], 1).astype(np.float32),
               "keypoints_3d": np.concatenate([points, np.ones((26, 1))], 1).astype(np.float32),
               "pose": np.zeros((35, 3), np.float32)}
    image = np.zeros((240, 320, 3), np.uint8)
    for augmentation in (Augmentation(rotation_deg=40.0), Augmentation(rotation_deg=-25.0, flip=True)):
        out = crop_example(image, example, augmentation)
        camera_map = camera_frame_map(invert_affine(crop_transform(
            (160, 120), 200, 256, augmentation.rotation_deg, augmentation.flip)))
        moved = out["keypoints_3d"][:, :3] + camera_map @ translation
        projected = moved[:, :2] / moved[:, 2:]
        target = out["keypoints_2d"][:, :2]
        # Least-squares scale + shift from projected to target; the residual must vanish, up to
        # the float32 rounding of the stored keypoints (float64 maths otherwise): ~2 U |target|, x8.
        a = np.concatenate([projected.reshape(-1, 1), np.tile(np.eye(2), (26, 1))], 1)
        solution, *_ = np.linalg.lstsq(a, target.reshape(-1), rcond=None)
        assert solution[0] > 0
        np.testing.assert_allclose(a @ solution, target.reshape(-1), atol=16 * U * np.abs(target).max())


def test_colour_gain_clip_and_normalisation_match_the_direct_formula():
    rng = np.random.default_rng(3)
    crop = rng.uniform(0, 255, (6, 5, 4)).astype(np.float32)
    gain = (1.2, 0.8, 1.15)
    out = normalize(crop, gain)
    rgb = np.minimum(crop[..., :3].astype(np.float64) * gain, 255.0)
    np.testing.assert_allclose(out[..., :3], (rgb - IMAGE_MEAN) / IMAGE_STD, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[..., 3], crop[..., 3] / 255.0, rtol=1e-6)
    assert (rgb == 255.0).any()                  # the clip was exercised
    np.testing.assert_allclose(normalize(crop[..., :3]), (crop[..., :3] - IMAGE_MEAN) / IMAGE_STD, rtol=1e-5, atol=1e-5)
