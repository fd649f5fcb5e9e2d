"""Losses, metrics, LoRA, optimizer labels and FSDP placement as specifications (no model compiles)."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from animax.train import losses, lora, metrics, optim
from animax.train.sharding import fsdp_spec
from configs import standin
from helpers.nn_reference import U, f32_tol


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


def _average_precision(ranked_hits):
    """AP of one ranking, from its definition: mean over the hits of (hits so far / rank)."""
    ranks = [r for r, hit in enumerate(ranked_hits, 1) if hit]
    return np.mean([k / r for k, r in enumerate(ranks, 1)])


def test_retrieval_top1_and_map_by_hand():
    # Five unit vectors in the plane: cosine similarity falls with the angle between them.
    angles = np.radians([0.0, 10.0, 30.0, 100.0, 105.0])
    features = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = np.array([0, 0, 1, 1, -1])
    scores = metrics.retrieval(features, labels)
    # Query 0 ranks 1, 2, 3, 4 (labels 0, 1, 1, -1): hit at rank 1 -> AP 1.
    # Query 1 ranks 0, 2, 3, 4 -> hit at rank 1 -> AP 1.
    # Query 2 ranks 1, 0, 3, 4 (angles 20, 30, 70, 75 away): positive 3 at rank 3 -> AP 1/3, top-1 miss.
    # Query 3 ranks 4, 2, 1, 0 (5, 70, 90, 100 away): positive 2 at rank 2 -> AP 1/2, top-1 miss.
    # Point 4 has an unknown label: it is a candidate, never a query.
    assert scores["queries"] == 4
    assert scores["top1"] == 0.5
    np.testing.assert_allclose(scores["map"], (1 + 1 + 1 / 3 + 1 / 2) / 4, rtol=1e-12)
    np.testing.assert_allclose(scores["chance"], 1 / 4, rtol=1e-12)


def test_retrieval_matches_the_definition_on_random_features():
    rng = np.random.default_rng(5)
    features, labels = rng.normal(size=(40, 6)), rng.integers(0, 4, 40)
    labels[:3] = -1
    labels[3] = 9                                     # alone in its class: not a query
    scores = metrics.retrieval(features, labels)
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    top1, ap = [], []
    for q in range(40):
        if labels[q] < 0 or (labels == labels[q]).sum() < 2:
            continue
        others = sorted((j for j in range(40) if j != q), key=lambda j: -unit[q] @ unit[j])
        hits = [labels[j] == labels[q] for j in others]
        top1.append(hits[0])
        ap.append(_average_precision(hits))
    assert scores["queries"] == len(ap) == 36
    np.testing.assert_allclose([scores["top1"], scores["map"]], [np.mean(top1), np.mean(ap)], rtol=1e-12)
    assert metrics.retrieval(features[:3], labels[:3]) == {}


def test_pose_smoothness_is_zero_for_equal_rotations_and_gt_accepts_axis_angle():
    same = jnp.broadcast_to(jnp.asarray(Rotation.from_rotvec([0.1, 0.2, 0.3]).as_matrix(), jnp.float32), (2, 35, 3, 3))
    assert float(losses.pose_smoothness(same)) < 1e-10
    aa = np.random.default_rng(2).normal(size=(2, 35, 3)) * 0.5
    # Rodrigues: entries <= 1 from a few float32 roundings (~8 U), x4.
    np.testing.assert_allclose(losses.gt_rotations(jnp.asarray(aa, jnp.float32)),
                               Rotation.from_rotvec(aa.reshape(-1, 3)).as_matrix().reshape(2, 35, 3, 3), atol=32 * U)


def test_pck_counts_hits_within_a_tenth_of_the_mask_scale():
    gt = np.zeros((1, 4, 3), np.float32)
    gt[..., 2] = [1, 1, 1, 0]                      # the last keypoint is not labelled
    mask = np.zeros((1, 256, 256), np.float32)
    mask[:, :100, :100] = 1                        # sqrt(area) = 100 px -> threshold 10 px
    pred = np.zeros((1, 4, 2), np.float32)
    pred[0, :, 0] = np.array([5, 9.9, 10.1, 50]) / 256   # in crop-normalised units
    value, weight = metrics.pck(pred, gt, mask, np.ones(1), np.ones(1), 0.1)
    np.testing.assert_allclose(value, [2 / 3], rtol=1e-6)
    assert weight[0] == 1


def test_scaled_pck_divides_by_the_datasets_own_length():
    # Horse-10's PCK@0.3 with a nose-to-eye distance of 20 crop pixels: hits within 6 pixels.
    gt = np.zeros((2, 3, 3), np.float32)
    gt[..., 2] = [[1, 1, 1], [1, 1, 0]]
    pred = gt[..., :2].copy()
    pred[:, :, 0] += np.array([5.9, 6.1, 1.0]) / 256
    value, weight = metrics.scaled_pck(pred, gt, np.array([20.0, 20.0], np.float32), np.ones(2), 0.3)
    np.testing.assert_allclose(value, [2 / 3, 1 / 2], rtol=1e-6)
    np.testing.assert_array_equal(weight, [1, 1])
    _, weight = metrics.scaled_pck(pred, gt, np.array([20.0, 0.0], np.float32), np.ones(2), 0.3)
    np.testing.assert_array_equal(weight, [1, 0])              # no scale: not counted


def test_pck_without_a_mask_uses_the_labelled_keypoints_box():
    gt = np.zeros((1, 4, 3), np.float32)
    gt[0, :, :2] = np.array([[0, 0], [64, 0], [64, 144], [250, 250]]) / 256 - 0.5
    gt[0, :, 2] = [1, 1, 1, 0]                     # box of the labelled ones: 64 x 144 px -> threshold 9.6 px
    pred = gt[..., :2].copy()
    pred[0, :, 0] += np.array([5, 9.5, 9.7, 0]) / 256
    value, _ = metrics.pck(pred, gt, np.zeros((1, 256, 256), np.float32), np.zeros(1), np.ones(1), 0.1)
    np.testing.assert_allclose(value, [2 / 3], rtol=1e-6)


def _animer_pck_auc(pred, gt, mask, thresholds=(0.10, 0.15)):
    """AniMer's Evaluator.compute_pck / compute_auc (amr/utils/evaluate_metric.py) in float64 NumPy:
    crop pixels, distance / sqrt(mask area) below t, confidence-weighted over the visible count,
    the batch mean; AUC the trapezoid integral of that mean over 100 thresholds in [0, 1]."""
    pred_px = (pred + 0.5) * 256
    conf, gt_px = gt[..., 2], (gt[..., :2] + 0.5) * 256
    area = mask.reshape(len(mask), -1).sum(-1)[:, None]
    dist = np.linalg.norm(pred_px - gt_px, axis=-1)

    def batch_pck(t):
        hits = (dist / np.sqrt(area) < t).astype(float)
        return np.mean((hits * conf).sum(-1) / conf.sum(-1))

    curve_t = np.linspace(0.0, 1.0, 100)
    auc = np.trapezoid([batch_pck(t) for t in curve_t], curve_t) / np.trapezoid(np.ones(100), curve_t)
    return [batch_pck(t) for t in thresholds], auc, dist / np.sqrt(area)


def test_pck_at_both_thresholds_and_auc_match_animer():
    # Random predictions around the truth, some keypoints invisible; seeds whose normalised
    # distances all keep 1e-4 from every threshold, so float32 rounding cannot flip a hit.
    for seed in range(100):
        rng = np.random.default_rng(seed)
        gt = np.concatenate([rng.uniform(-0.4, 0.4, (6, 26, 2)), rng.random((6, 26, 1)) < 0.7], -1)
        pred = gt[..., :2] + rng.normal(scale=0.08, size=(6, 26, 2))
        mask = np.zeros((6, 256, 256))
        for b, side in enumerate(rng.integers(60, 250, 6)):
            mask[b, :side, :side] = 1
        pcks, auc, scaled = _animer_pck_auc(pred, gt, mask)
        edges = np.concatenate([np.linspace(0, 1, 100), [0.10, 0.15]])
        if np.abs(scaled[..., None] - edges).min() > 1e-4:
            break
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    args = (f32(pred), f32(gt), f32(mask), jnp.ones(6), jnp.ones(6))
    for threshold, expected in zip((0.10, 0.15), pcks):
        value, weight = metrics.pck(*args, threshold)
        # Hit fractions k / n and their mean: a few float32 roundings.
        np.testing.assert_allclose(np.mean(value), expected, rtol=16 * U)
        np.testing.assert_array_equal(weight, 1.0)
    value, _ = metrics.pck_auc(*args)
    # The trapezoid sum of 100 hit fractions: ~100 roundings of values <= 1.
    np.testing.assert_allclose(np.mean(value), auc, rtol=f32_tol(100, 26, 6))


def test_pck_and_auc_give_no_weight_to_samples_without_visible_keypoints():
    gt = np.zeros((2, 26, 3), np.float32)
    gt[0, :, 2] = 1.0                              # sample 1 has no visible keypoint (AniMer: NaN)
    mask = np.ones((2, 256, 256), np.float32)
    for value, weight in (metrics.pck(gt[..., :2], gt, mask, np.ones(2), np.ones(2)),
                          metrics.pck_auc(gt[..., :2], gt, mask, np.ones(2), np.ones(2))):
        np.testing.assert_array_equal(weight, [1.0, 0.0])
        assert np.all(np.isfinite(value))
    # Exact predictions: every threshold above 0 hits, the curve is 1 but at t = 0 (a strict <).
    auc, _ = metrics.pck_auc(gt[..., :2], gt, mask, np.ones(2), np.ones(2))
    np.testing.assert_allclose(auc[0], 1.0 - 0.5 / 99, rtol=f32_tol(100))


def _animer_similarity_transform(s1, s2):
    """AniMer's compute_similarity_transform (amr/utils/evaluate_metric.py), batched, float64 NumPy."""
    x1, x2 = s1 - s1.mean(1, keepdims=True), s2 - s2.mean(1, keepdims=True)
    k = np.einsum("bni,bnj->bij", x1, x2)
    u, _, vt = np.linalg.svd(k)
    v = np.swapaxes(vt, 1, 2)
    z = np.tile(np.eye(3), (len(s1), 1, 1))
    z[:, -1, -1] *= np.sign(np.linalg.det(u @ vt))
    r = v @ z @ np.swapaxes(u, 1, 2)
    scale = np.trace(r @ k, axis1=1, axis2=2) / (x1 ** 2).sum((1, 2))
    t = s2.mean(1) - scale[:, None] * np.einsum("bij,bj->bi", r, s1.mean(1))
    return scale[:, None, None] * np.einsum("bij,bnj->bni", r, s1) + t[:, None]


def test_pa_mpjpe_and_pa_mpvpe_match_animer():
    rng = np.random.default_rng(8)
    gt3 = rng.normal(size=(4, 26, 3))
    pred3 = gt3 + rng.normal(scale=0.1, size=gt3.shape)
    conf = np.ones((4, 26, 1))
    conf[2] = 0.0                                  # no 3D ground truth: weight 0
    gt4 = np.concatenate([gt3, conf], -1)
    # AniMer (eval_3d): both centred on keypoint 7, the prediction aligned, mean distance x 1000.
    centred = lambda x: x - x[:, 7:8]
    aligned = _animer_similarity_transform(centred(pred3), centred(gt3))
    expected = np.linalg.norm(aligned - centred(gt3), axis=-1).mean(-1) * 1000
    value, weight = metrics.pa_mpjpe(jnp.asarray(pred3, jnp.float32), jnp.asarray(gt4, jnp.float32), jnp.ones(4))
    np.testing.assert_array_equal(weight, [1, 1, 0, 1])
    # A 3x3 SVD of 26-point sums, then residuals ~10x smaller than the points they come from.
    np.testing.assert_allclose(value, expected, rtol=f32_tol(26, 3, 3, 3, 26, cond=10.0))
    # PA-MPVPE: all vertices, uncentred, the prediction aligned to the ground-truth mesh.
    gt_v = rng.normal(size=(3, 400, 3))
    pred_v = 1.3 * gt_v @ Rotation.random(random_state=9).as_matrix().T + 0.2 + rng.normal(scale=0.05, size=gt_v.shape)
    expected = np.linalg.norm(_animer_similarity_transform(pred_v, gt_v) - gt_v, axis=-1).mean(-1) * 1000
    value, weight = metrics.pa_mpvpe(jnp.asarray(pred_v, jnp.float32), jnp.asarray(gt_v, jnp.float32),
                                     jnp.ones((3, 400)), jnp.asarray([1.0, 0.0, 1.0]), jnp.ones(3))
    np.testing.assert_array_equal(weight, [1, 0, 1])
    # The same steps over 400 points; |points| ~ 2.2 against residuals ~ 0.09: cond ~ 25.
    np.testing.assert_allclose(value, expected, rtol=f32_tol(400, 3, 3, 3, 400, cond=30.0))


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


def test_pa_mpjpe_ignores_similarity_transforms():
    rng = np.random.default_rng(3)
    gt = rng.normal(size=(2, 26, 3))
    rot = Rotation.random(2, random_state=4).as_matrix()
    pred = 1.7 * np.einsum("bij,bnj->bni", rot, gt) + 0.3
    gt4 = np.concatenate([gt, np.ones((2, 26, 1))], -1).astype(np.float32)
    error, weight = metrics.pa_mpjpe(jnp.asarray(pred, jnp.float32), gt4, jnp.ones(2))
    assert np.all(np.asarray(error) < 1e-2) and np.all(weight == 1)   # mm, for unit-scale inputs
    noisy, _ = metrics.pa_mpjpe(jnp.asarray(pred + rng.normal(size=pred.shape) * 0.01, jnp.float32), gt4, jnp.ones(2))
    assert np.all(np.asarray(noisy) > 1.0)


def test_lora_merge_starts_at_the_base_weights_and_adds_a_low_rank_update():
    params = {"backbone": {"blocks": {"attn": {"qkv": {"kernel": jnp.ones((2, 6, 18))},
                                               "proj": {"kernel": jnp.ones((2, 6, 6))}},
                                      "mlp": {"fc1": {"kernel": jnp.ones((2, 6, 24))}}}}}
    factors = lora.init_lora(params, 2, jax.random.PRNGKey(0))
    assert set(factors) == {"backbone.blocks.attn.qkv", "backbone.blocks.attn.proj"}
    assert factors["backbone.blocks.attn.qkv"]["a"].shape == (2, 6, 2)
    jax.tree.map(np.testing.assert_array_equal, lora.merge(params, factors, 2.0), params)
    factors["backbone.blocks.attn.qkv"]["b"] = jax.random.normal(jax.random.PRNGKey(1), (2, 2, 18))
    merged = lora.merge(params, factors, 2.0)
    delta = merged["backbone"]["blocks"]["attn"]["qkv"]["kernel"] - params["backbone"]["blocks"]["attn"]["qkv"]["kernel"]
    assert np.linalg.matrix_rank(np.asarray(delta[0])) == 2
    np.testing.assert_array_equal(merged["backbone"]["blocks"]["mlp"]["fc1"]["kernel"], 1.0)


def test_weight_decay_only_on_kernels_and_frozen_sets():
    trainable = {"params": {"backbone": {"pos_embed": 0, "blocks": {"norm1": {"scale": 0, "bias": 0},
                                                                   "attn": {"qkv": {"kernel": 0, "bias": 0}}}},
                            "smal_head": {"decpose": {"kernel": 0, "bias": 0}}},
                 "lora": {"backbone.blocks.attn.qkv": {"a": 0, "b": 0}}}
    labels = optim.leaf_labels(trainable, "full")
    assert labels["params"]["backbone"]["blocks"]["attn"]["qkv"] == {"kernel": "decay", "bias": "no_decay"}
    assert labels["params"]["backbone"]["pos_embed"] == "no_decay"
    assert labels["params"]["backbone"]["blocks"]["norm1"] == {"scale": "no_decay", "bias": "no_decay"}
    for frozen_set in ("frozen_backbone", "lora"):
        labels = optim.leaf_labels(trainable, frozen_set)
        assert set(jax.tree.leaves(labels["params"]["backbone"])) == {"frozen"}
        assert labels["params"]["smal_head"]["decpose"]["kernel"] == "decay"
        assert labels["lora"]["backbone.blocks.attn.qkv"]["a"] == "no_decay"
    trainable["params"]["fusion"] = {"fc1": {"kernel": 0}}
    labels = optim.leaf_labels(trainable, "descriptor")
    assert labels["params"]["fusion"]["fc1"]["kernel"] == "decay"
    assert set(jax.tree.leaves({k: v for k, v in labels["params"].items() if k != "fusion"})) == {"frozen"}
    assert set(jax.tree.leaves(labels["lora"])) == {"frozen"}


def test_optimizer_leaves_frozen_parameters_and_skips_decay_off_kernels():
    config = standin.get_config("tiny")
    config.trainable = "frozen_backbone"
    config.optim.update(warmup_steps=0, learning_rate=0.1, weight_decay=0.5)
    params = {"backbone": {"proj": {"kernel": jnp.ones(3)}}, "smal_head": {"fc": {"kernel": jnp.ones(3), "bias": jnp.ones(3)}}}
    trainable = {"params": params, "lora": {}}
    tx = optim.make_optimizer(config, trainable)
    zero_grads = jax.tree.map(jnp.zeros_like, trainable)
    updates, _ = tx.update(zero_grads, tx.init(trainable), trainable)
    np.testing.assert_array_equal(updates["params"]["backbone"]["proj"]["kernel"], 0.0)   # frozen
    np.testing.assert_array_equal(updates["params"]["smal_head"]["fc"]["bias"], 0.0)      # no decay
    assert np.all(np.asarray(updates["params"]["smal_head"]["fc"]["kernel"]) < 0)         # decayed


def test_fsdp_splits_the_largest_divisible_axis():
    assert fsdp_spec((3, 1280, 3840), 4) == jax.sharding.PartitionSpec(None, None, "fsdp")
    assert fsdp_spec((32, 1280, 5), 4) == jax.sharding.PartitionSpec(None, "fsdp")
    assert fsdp_spec((3, 5), 4) == jax.sharding.PartitionSpec()
    assert fsdp_spec((1280,), 1) == jax.sharding.PartitionSpec()
    # Leaves under the size threshold stay replicated (a ViT-H bias, 5 KiB, against 4 MiB).
    assert fsdp_spec((1280,), 4, nbytes=5120, min_bytes=4 * 2**20) == jax.sharding.PartitionSpec()
    assert fsdp_spec((1280, 3840), 4, nbytes=4 * 1280 * 3840, min_bytes=4 * 2**20) == jax.sharding.PartitionSpec(
        None, "fsdp")


class _Counter:
    """A checkpointable source of batches 0, 1, 2, ... that fails at `fail_at` and ends at `stop`."""

    def __init__(self, stop=None, fail_at=None):
        self.next, self.stop, self.fail_at = 0, stop, fail_at

    def __iter__(self):
        return self

    def __next__(self):
        if self.next == self.fail_at:
            raise ValueError(f"bad record {self.next}")
        if self.next == self.stop:
            raise StopIteration
        self.next += 1
        return self.next - 1

    def get_state(self):
        return {"next": self.next}

    def set_state(self, state):
        self.next = state["next"]


def test_prefetch_reports_the_state_of_the_batches_handed_out_not_those_read_ahead():
    from animax.train.prefetch import Prefetch

    source = _Counter()
    ahead = Prefetch(source, depth=3)
    assert [next(ahead) for _ in range(4)] == [0, 1, 2, 3]
    assert ahead.get_state() == {"next": 4}
    deadline = time.monotonic() + 10
    while source.next <= 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert 4 < source.next <= 4 + 3 + 1     # the reader runs ahead: `depth` queued, one in hand
    state = ahead.get_state()
    ahead.set_state({"next": 10})           # rewinds: the batches read ahead are dropped
    assert next(ahead) == 10
    resumed = Prefetch(_Counter(), depth=3)
    resumed.set_state(state)
    assert [next(resumed) for _ in range(3)] == [4, 5, 6]
    ahead.close()
    resumed.close()


def test_prefetch_ends_with_its_source_and_raises_its_errors_in_order():
    from animax.train.prefetch import Prefetch

    assert list(Prefetch(_Counter(stop=5), depth=2)) == [0, 1, 2, 3, 4]
    failing = Prefetch(_Counter(fail_at=2), depth=2)
    assert [next(failing), next(failing)] == [0, 1]
    with pytest.raises(ValueError, match="bad record 2"):
        next(failing)
