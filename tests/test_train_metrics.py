"""Evaluation metrics (animax.train.metrics): retrieval, PCK and AUC, PA-MPJPE/PA-MPVPE, by hand and
against AniMer's evaluator."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from animax.train import metrics
from helpers.nn_reference import U, f32_tol

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32


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
