"""Training losses (animax.train.losses) as specifications, several against AniMer's own (no model compiles)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from animax.train import losses
from helpers.nn_reference import U, f32_tol

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32


def test_keypoint_losses_follow_animer():
    rng = np.random.default_rng(0)
    pred3, gt3 = rng.normal(size=(2, 26, 3)), np.concatenate([rng.normal(size=(2, 26, 3)), rng.random((2, 26, 1))], -1)
    # Root-relative (keypoint 0), confidence-weighted L1, summed over everything.
    expected = np.sum(gt3[..., 3:] * np.abs((pred3 - pred3[:, :1]) - (gt3[..., :3] - gt3[:, :1, :3])))
    # A float32 sum of 2 x 26 x 3 terms >= 0.
    np.testing.assert_allclose(losses.keypoints_3d_loss(pred3, gt3), expected, rtol=f32_tol(2 * 26 * 3))
    # A common translation does not change it.
    np.testing.assert_allclose(losses.keypoints_3d_loss(pred3 + 5.0, gt3), expected, rtol=1e-5)
    pred2, gt2 = rng.normal(size=(2, 26, 2)), np.concatenate([rng.normal(size=(2, 26, 2)), rng.random((2, 26, 1))], -1)
    np.testing.assert_allclose(losses.keypoints_2d_loss(pred2, gt2),
                               np.sum(gt2[..., 2:] * np.abs(pred2 - gt2[..., :2])), rtol=f32_tol(2 * 26 * 2))


def test_parameter_losses_count_only_samples_with_ground_truth():
    pred, gt = jnp.ones((3, 4)), jnp.zeros((3, 4))
    assert losses.masked_squared_error(pred, gt, jnp.array([1.0, 0.0, 1.0])) == 8.0
    # Priors: mean over the samples they apply to, 0 when none.
    assert losses.masked_mean(jnp.array([2.0, 4.0, 9.0]), jnp.array([1.0, 1.0, 0.0])) == 3.0
    assert losses.masked_mean(jnp.array([2.0]), jnp.array([0.0])) == 0.0


def test_the_raw_6d_root_loss_has_no_saddle_where_the_matrix_loss_does():
    """Predicted facing right (identity), truth facing left (180 degrees about up): the matrix
    loss is at its maximum, 8, yet gives the raw 6D output no gradient (Gram-Schmidt keeps only a
    radial one, which normalisation removes); the 6D loss's gradient is x0 - gt (x2)."""
    from animax.geometry import rot6d_to_rotmat
    right = jnp.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0])               # columns 1, 2 of the identity
    left = jnp.asarray(Rotation.from_euler("z", 180, degrees=True).as_matrix(), jnp.float32)[None, None]

    def terms(six_d):
        outputs = {"pose": rot6d_to_rotmat(six_d.reshape(1, 1, 6)), "pose_6d_iters": six_d.reshape(1, 1, 6)}
        error = lambda key, gt: losses.masked_squared_error(outputs[key], gt, jnp.ones(1))  # noqa: E731
        return (error("pose", left),
                losses.masked_squared_error(outputs["pose_6d_iters"][-1], jnp.concatenate(
                    [left[:, 0, :, 0], left[:, 0, :, 1]], -1), jnp.ones(1)))

    matrix_loss, six_d_loss = terms(right)
    np.testing.assert_allclose(matrix_loss, 8.0, rtol=4 * U)
    np.testing.assert_allclose(jax.grad(lambda x: terms(x)[0])(right), 0.0, atol=16 * U)
    np.testing.assert_allclose(jax.grad(lambda x: terms(x)[1])(right), 2 * (right - jnp.array(
        [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0])), atol=16 * U)
    assert six_d_loss == 8.0


def _supcon_reference(features, labels, temperature=0.1, base_temperature=0.07):
    """AniMer's SupConLoss (two identical views, 'all' anchors), in float64 numpy."""
    f = np.concatenate([features, features]).astype(np.float64)
    lab = np.concatenate([labels, labels])
    n = len(f)
    logits = f @ f.T / temperature
    logits -= logits.max(1, keepdims=True)
    logits_mask = 1 - np.eye(n)
    mask = (lab[:, None] == lab[None]).astype(float) * logits_mask
    log_prob = logits - np.log((np.exp(logits) * logits_mask).sum(1, keepdims=True))
    pos = np.where(mask.sum(1) < 1e-6, 1, mask.sum(1))
    return np.mean(-(temperature / base_temperature) * (mask * log_prob).sum(1) / pos)


def test_supcon_matches_animer():
    rng = np.random.default_rng(1)
    features, labels = rng.normal(size=(6, 8)) * 0.3, np.array([0, 1, 0, 2, 1, 0])
    expected = _supcon_reference(features, labels)
    # Logits (8-term dots / T), log-sum-exp over 12, mean over 12; the logits' absolute error
    # counts against the loss, scaled by T / base_temperature.
    cond = np.abs(features @ features.T).max() / 0.1 / abs(expected) * (0.1 / 0.07)
    np.testing.assert_allclose(losses.supcon_loss(jnp.asarray(features, jnp.float32), jnp.asarray(labels)),
                               expected, rtol=f32_tol(8, 1, 12, 12, 1, cond=cond))


def _descriptor_reference(features, labels, temperature=0.1):
    """Single-view SupCon (Khosla et al. 2020, L_out) on unit vectors, anchor by anchor in float64."""
    f = features / np.linalg.norm(features, axis=1, keepdims=True)
    per_anchor = []
    for i in range(len(f)):
        others = [j for j in range(len(f)) if j != i]
        positives = [j for j in others if labels[j] == labels[i] and labels[i] >= 0]
        if not positives:
            continue
        log_denominator = np.log(sum(np.exp(f[i] @ f[j] / temperature) for j in others))
        per_anchor.append(np.mean([f[i] @ f[p] / temperature - log_denominator for p in positives]))
    return -np.mean(per_anchor) if per_anchor else 0.0


def test_descriptor_loss_is_single_view_supcon_on_unit_features():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(8, 16)) * 3.0
    # Label 2 has one member (no positive), -1 is unknown: neither anchors.
    labels = np.array([0, 1, 0, 2, 1, 0, -1, 1])
    expected = _descriptor_reference(features, labels)
    # Logits |.| <= 1 / T = 10 from 16-term dots of unit vectors, a log-sum-exp over 7, a mean over 6.
    got = losses.descriptor_loss(jnp.asarray(features, jnp.float32), jnp.asarray(labels))
    np.testing.assert_allclose(got, expected, rtol=f32_tol(16, 7, 6, cond=10 / abs(expected)))
    # Scale-free, and nothing to contrast without a positive pair.
    np.testing.assert_allclose(losses.descriptor_loss(jnp.asarray(features * 50, jnp.float32), jnp.asarray(labels)),
                               got, rtol=f32_tol(16, 7, 6, cond=10 / abs(expected)))
    assert float(losses.descriptor_loss(jnp.asarray(features, jnp.float32), jnp.arange(8))) == 0.0
    # Perfectly separated classes score lower than shuffled ones.
    separated = np.eye(16)[labels.clip(0)] + 0.01 * rng.normal(size=(8, 16))
    assert float(losses.descriptor_loss(jnp.asarray(separated, jnp.float32), jnp.asarray(labels))) < float(got)


def test_pose_smoothness_is_zero_for_equal_rotations_and_gt_accepts_axis_angle():
    same = jnp.broadcast_to(jnp.asarray(Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix(), jnp.float32), (2, 35, 3, 3))
    assert float(losses.pose_smoothness(same)) < 1e-10
    aa = np.random.default_rng(2).normal(size=(2, 35, 3)) * 0.5
    # Rodrigues: entries <= 1 from a few float32 roundings (~8 U), x4.
    np.testing.assert_allclose(losses.gt_rotations(jnp.asarray(aa, jnp.float32)),
                               Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix().reshape(2, 35, 3, 3), atol=32 * U)


def test_source_keypoints_loss_predicts_smal_keypoints_and_vertex_sets(tmp_path):
    """A map with a part on the mesh: its prediction is the projected mean of its vertices."""
    from animax.data.keypoint_maps import load_keypoint_map

    (tmp_path / "mine.py").write_text(
        "import ml_collections\n"
        "def get_config():\n"
        "    c = ml_collections.ConfigDict()\n"
        "    c.name = 'mine'\n"
        "    c.keypoints = ('Nose', 'Fetlock', 'Girth')\n"
        "    c.to_smal = {'Nose': 'nose'}\n"
        "    c.to_vertices = {'Fetlock': (3, 5)}\n"
        "    return c\n")
    table = load_keypoint_map(tmp_path / "mine.py").prediction_table()
    np.testing.assert_array_equal(table[3], [True, True, False])   # Girth: no prediction
    rng = np.random.default_rng(11)
    outputs = {"keypoints_2d": jnp.asarray(rng.normal(size=(2, 26, 2)) * 0.1, jnp.float32),
               "vertices": jnp.asarray(rng.normal(size=(2, 8, 3)) * 0.3, jnp.float32),
               "cam_t": jnp.asarray([[0.1, 0.0, 20.0], [0.0, -0.2, 25.0]], jnp.float32)}
    gt = np.concatenate([rng.normal(size=(2, 3, 2)) * 0.1, np.ones((2, 3, 1))], -1).astype(np.float32)
    pred = np.asarray(losses.source_keypoint_predictions(outputs, table))
    from animax.smal import KEYPOINT_NAMES
    np.testing.assert_array_equal(pred[:, 0], outputs["keypoints_2d"][:, KEYPOINT_NAMES.index("nose")])
    # The crop camera (REFERENCE.md): focal 1000 on a 256-pixel crop, in crop-normalised units.
    fetlock = np.asarray(outputs["vertices"], np.float64)[:, [3, 5]].mean(1) + np.asarray(outputs["cam_t"], np.float64)
    np.testing.assert_allclose(pred[:, 1], 1000 / 256 * fetlock[:, :2] / fetlock[:, 2:], rtol=f32_tol(2, 3, 3))
    expected = np.abs(pred[:, :2] - gt[:, :2, :2]).sum()          # Girth weighs nothing
    np.testing.assert_allclose(losses.source_keypoints_loss(outputs, jnp.asarray(gt), table), expected,
                               rtol=f32_tol(12))
