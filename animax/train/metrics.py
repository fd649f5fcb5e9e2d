"""Validation metrics with AniMer's definitions (amr/utils/evaluate_metric.py).

PCK@t (2D, t = 0.10 and 0.15 as AniMer reports): keypoints in crop pixels ((p + 0.5) *
CROP_SIZE); a keypoint hits when its distance to the ground truth, divided by sqrt(mask area in
pixels), is below t. Per sample, the confidence-weighted hit count over the total confidence;
averaged over samples. Samples without a mask (Horse-10, COCO keypoints) use the area of their
labelled keypoints' bounding box instead (AniMer's data always has masks). AUC: the area under
the PCK curve for t from 0 to 1 (100 thresholds, trapezoid rule), as AniMer's `compute_auc`.
Beside them, a dataset's own protocol where it has one: Horse-10's PCK@0.3 of the horse's
nose-to-eye distance (`pck@0.3_nose_eye`, on the keypoints the SMAL layout shares with it).
PA-MPJPE (3D): both keypoint sets centred on keypoint 7 (AniMer's `pelvis_ind`, the tail
base), the prediction aligned to the ground truth by the best similarity transform
(Procrustes with scale), then the mean per-keypoint Euclidean error x 1000 (mm for metres).
PA-MPVPE (3D): the same over the mesh vertices (uncentred) against the mesh of the
ground-truth SMAL parameters, on samples with shape and pose ground truth; padding vertices
(a batch of body models of different sizes) are left out of the alignment and the mean.

Retrieval (the descriptor, `fused_features`): every held-out image queries all the others by
cosine similarity; top-1 is the share of queries whose nearest other image has their label,
mAP the mean over queries of the average precision of the ranking (the mean, over the
query's positives, of the precision at each positive's rank). Queries with an unknown label
(-1) or no other image of their label are left out; `chance` is the mean share of positives
among a query's candidates (what a random ranking scores in top-1).

PCK, PA-MPJPE and PA-MPVPE return per-sample values and a per-sample weight (1 where the sample counts:
it has visible 2D keypoints / 3D ground truth), so evaluation sums values over batches and
divides by the summed weight; padded samples get weight 0 through `valid`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from animax.geometry import CROP_SIZE

PA_MPJPE_ROOT = 7


def _normalised_pck(pred_2d, gt_2d, length, valid, thresholds):
    """Hits where the crop-pixel distance / length [B] is below each threshold [T],
    confidence-weighted per sample over its visible keypoints -> (pck [B,T], weight [B])."""
    conf = gt_2d[..., 2]
    dist = jnp.linalg.norm((pred_2d - gt_2d[..., :2]) * CROP_SIZE, axis=-1)
    scaled = dist / length[:, None]                                             # [B,K]
    hits = (scaled[:, None, :] < jnp.asarray(thresholds, jnp.float32)[None, :, None]).astype(jnp.float32)
    visible = jnp.sum(conf, axis=-1)
    # AniMer divides by the visible count even when it is 0 (a NaN that poisons its batch mean);
    # such samples get weight 0 here instead.
    weight = valid * (visible > 0)
    return jnp.sum(hits * conf[:, None, :], axis=-1) / jnp.maximum(visible, 1e-9)[:, None], weight


def pck_curve(pred_2d, gt_2d, mask, has_mask, valid, thresholds):
    """pred_2d [B,K,2], gt_2d [B,K,3] crop-normalised + confidence, mask [B,H,W], has_mask [B],
    valid [B], thresholds [T]. Returns (pck [B,T], weight [B]).
    """
    mask_area = jnp.sum(mask.reshape(mask.shape[0], -1).astype(jnp.float32), axis=-1)
    labelled = (gt_2d[..., 2] > 0)[..., None]
    low = jnp.min(jnp.where(labelled, gt_2d[..., :2], jnp.inf), axis=1)
    high = jnp.max(jnp.where(labelled, gt_2d[..., :2], -jnp.inf), axis=1)
    # No labelled keypoint: high - low is -inf, clipped to an empty box.
    box_area = jnp.prod(jnp.clip(high - low, 0.0) * CROP_SIZE, axis=-1)
    area = jnp.where(has_mask > 0, mask_area, box_area)
    return _normalised_pck(pred_2d, gt_2d, jnp.sqrt(jnp.maximum(area, 1.0)), valid, thresholds)


def pck(pred_2d, gt_2d, mask, has_mask, valid, threshold=0.1):
    """PCK at one threshold: (pck [B], weight [B]); arguments as `pck_curve`."""
    values, weight = pck_curve(pred_2d, gt_2d, mask, has_mask, valid, [threshold])
    return values[:, 0], weight


def scaled_pck(pred_2d, gt_2d, scale, valid, threshold):
    """A dataset's own PCK: a labelled keypoint hits when its crop-pixel distance / scale [B]
    (crop pixels; Horse-10: PCK@0.3 of the horse's nose-to-eye distance, Mathis et al., WACV
    2021) is below threshold. Confidence-weighted per sample, as `pck`; weight 0 where the
    sample has no scale or no visible keypoint. Returns (pck [B], weight [B])."""
    values, weight = _normalised_pck(pred_2d, gt_2d, jnp.maximum(scale, 1e-9), valid, [threshold])
    return values[:, 0], weight * (scale > 0)


# AniMer's AUC: the PCK curve at 100 thresholds evenly from 0 to 1, integrated by the trapezoid
# rule and divided by the integral of 1 over the same range (1).
AUC_THRESHOLDS = np.linspace(0.0, 1.0, 100)


def pck_auc(pred_2d, gt_2d, mask, has_mask, valid):
    """(auc [B], weight [B]): the area under the PCK curve (AUC_THRESHOLDS); the mean over
    samples commutes with the integral, so per-sample values average to AniMer's batch AUC."""
    curve, weight = pck_curve(pred_2d, gt_2d, mask, has_mask, valid, AUC_THRESHOLDS)
    norm = np.trapezoid(np.ones_like(AUC_THRESHOLDS), AUC_THRESHOLDS)
    return jnp.trapezoid(curve, jnp.asarray(AUC_THRESHOLDS, jnp.float32), axis=-1) / norm, weight


def similarity_align(source, target, weights=None):
    """The similarity transform of source [B,N,3] closest to target [B,N,3], applied to source.

    Orthogonal Procrustes with scale (Umeyama): R from the SVD of the cross-covariance with the
    reflection fixed, s = trace(R K) / |X1|^2, t = mu2 - s R mu1. weights [B,N] (default 1)
    weigh the points: 0 leaves a point (a padding vertex) out of the fit entirely.
    """
    w = jnp.ones(source.shape[:2], source.dtype) if weights is None else weights.astype(source.dtype)
    w = (w / jnp.maximum(jnp.sum(w, axis=1, keepdims=True), 1e-12))[..., None]   # [B,N,1], sums to 1
    mu1, mu2 = jnp.sum(w * source, axis=1, keepdims=True), jnp.sum(w * target, axis=1, keepdims=True)
    x1, x2 = source - mu1, target - mu2
    k = jnp.einsum("bni,bnj->bij", w * x1, x2)      # [B,3,3] = X1^T W X2
    u, _, vh = jnp.linalg.svd(k)
    v = jnp.swapaxes(vh, -1, -2)
    ut = jnp.swapaxes(u, -1, -2)
    sign = jnp.sign(jnp.linalg.det(v @ ut))
    z = jnp.ones((source.shape[0], 3), source.dtype).at[:, 2].set(sign)
    r = v @ (z[:, :, None] * ut)                    # maps centred source onto centred target
    scale = jnp.trace(r @ k, axis1=-2, axis2=-1) / jnp.maximum(jnp.sum(w * x1 * x1, axis=(1, 2)), 1e-12)
    return scale[:, None, None] * jnp.einsum("bij,bnj->bni", r, x1) + mu2


def pa_mpjpe(pred_3d, gt_3d, valid):
    """pred_3d [B,K,3], gt_3d [B,K,4] (xyz + confidence), valid [B] -> (pa_mpjpe [B], weight [B]).

    A sample counts when any of its 3D keypoints has confidence (it has 3D ground truth);
    all keypoints enter unweighted, as in AniMer.
    """
    pred = pred_3d - pred_3d[:, PA_MPJPE_ROOT:PA_MPJPE_ROOT + 1]
    gt = gt_3d[..., :3] - gt_3d[:, PA_MPJPE_ROOT:PA_MPJPE_ROOT + 1, :3]
    aligned = similarity_align(pred, gt)
    error = jnp.linalg.norm(aligned - gt, axis=-1).mean(axis=-1) * 1000.0
    return error, valid * (jnp.sum(gt_3d[..., 3], axis=-1) > 0)


def pa_mpvpe(pred_vertices, gt_vertices, vertex_mask, has_gt, valid):
    """pred_vertices, gt_vertices [B,V,3], vertex_mask [B,V] (0 = padding), has_gt [B], valid [B]
    -> (pa_mpvpe [B], weight [B]): the prediction aligned to the ground truth over the real
    vertices (AniMer aligns all of them, unweighted), the mean per-vertex Euclidean error x 1000."""
    aligned = similarity_align(pred_vertices, gt_vertices, vertex_mask)
    error = jnp.linalg.norm(aligned - gt_vertices, axis=-1)
    count = jnp.maximum(jnp.sum(vertex_mask, axis=-1), 1.0)
    return jnp.sum(error * vertex_mask, axis=-1) / count * 1000.0, valid * has_gt


def eval_metrics(outputs, batch, valid):
    """Per-sample {name: (value [B], weight [B])} of one evaluation batch; PA-MPVPE where the
    batch carries ground-truth `vertices` (the step skins its SMAL parameters)."""
    kp2d = (outputs["keypoints_2d"], batch["keypoints_2d"], batch["mask"], batch["has_mask"], valid)
    metrics = {
        "pck@0.1": pck(*kp2d, 0.1),
        "pck@0.15": pck(*kp2d, 0.15),
        "auc": pck_auc(*kp2d),
        "pa_mpjpe": pa_mpjpe(outputs["keypoints_3d"], batch["keypoints_3d"], valid),
    }
    if "pck_scale" in batch:
        metrics["pck@0.3_nose_eye"] = scaled_pck(outputs["keypoints_2d"], batch["keypoints_2d"], batch["pck_scale"],
                                                 valid, 0.3)
    if "vertices" in batch:
        metrics["pa_mpvpe"] = pa_mpvpe(outputs["vertices"], batch["vertices"], vertex_mask(outputs),
                                       batch["has_betas"] * batch["has_pose"], valid)
    return metrics


def vertex_mask(outputs):
    """[B,V]: the pipeline's mask of real vertices (a bank of body models), else all ones."""
    if "vertex_mask" in outputs:
        return outputs["vertex_mask"].astype(jnp.float32)
    return jnp.ones(outputs["vertices"].shape[:2], jnp.float32)


def retrieval(features, labels) -> dict:
    """features [N, D], labels [N] int (-1 unknown) -> {"top1", "map", "chance", "queries"} (see
    the module docstring); an empty dict when no query has a positive. NumPy, on the host."""
    features = np.asarray(features, np.float64)
    labels = np.asarray(labels)
    unit = features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)          # a query never retrieves itself
    same = (labels[:, None] == labels[None, :]) & ~np.eye(len(labels), dtype=bool)
    positives = same.sum(axis=1)
    queries = (labels >= 0) & (positives > 0)
    if not queries.any():
        return {}
    # Stable sort: ties keep index order, so the result does not depend on the platform.
    order = np.argsort(-similarity[queries], axis=1, kind="stable")[:, :-1]   # the last is the query itself
    hits = np.take_along_axis(same[queries], order, axis=1)
    precision_at_hit = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    average_precision = (precision_at_hit * hits).sum(axis=1) / positives[queries]
    return {"top1": float(hits[:, 0].mean()), "map": float(average_precision.mean()),
            "chance": float((positives[queries] / (len(labels) - 1)).mean()), "queries": int(queries.sum())}
