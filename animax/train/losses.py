"""Training losses: AniMer's (stage 2) and the seed pipeline's, every term reported.

`total_loss(outputs, batch, weights, priors)` returns `(loss, terms)`: `terms` maps each
term's name to its unweighted value and `loss = sum(weights[name] * terms[name])`.

AniMer's terms (amr/models/losses.py, amr/models/amr.py `compute_loss`), B = batch size:
    keypoints_3d   sum over samples and keypoints of conf * |pred - gt|_1, both centred on
                   keypoint 0 first (AniMer's `pelvis_id=0`)
    keypoints_2d   sum of conf * |pred - gt|_1 over samples and keypoints (crop-normalised)
    global_orient  sum over samples with pose GT of ||R0_pred - R0_gt||^2 (rotation matrices)
    pose           the same over joints 1..34
    betas          sum over samples with shape GT of ||betas_pred - betas_gt||^2
    shape_prior    mean over samples WITHOUT shape GT of the family shape prior
    pose_prior     mean over samples WITHOUT pose GT of the pose prior. AniMer adds half of it
                   to the global-orient term and half to the pose term, so its weight is
                   (w_global_orient + w_pose) / 2 = 0.001
    adversarial    sum over outputs of (D(pose, betas) - 1)^2 / B: the discriminator's 36 scores
                   of the predicted non-root pose and betas pulled towards "real" (stage 1)
    supcon         supervised contrastive loss on the class-token head's features, labels =
                   animal family (AniMer feeds the same features as both views, unnormalised)
The seed pipeline's terms:
    betas_l2        mean over samples of ||betas_pred||^2 (pulls the shape to the template)
    pose_smoothness mean over samples of sum_j ||R_j - R_parent(j)||_F^2 over body joints whose
                    parent is a body joint: a first-order difference of the local rotations
                    along the kinematic chain (tails and spines bend evenly)
    fused_l2        mean over samples of ||fused_features||^2 (keeps the descriptor bounded)
    descriptor_family, descriptor_identity
                    supervised contrastive loss (one view) on the L2-normalised `fused_features`
                    with the family / the individual as labels: the 512-d descriptor learns to
                    put the same family / individual close (losses.descriptor_loss)
    source_keypoints_2d sum of conf * |pred - gt|_1 over the dataset's own keypoints
                    (`source_keypoints`, all of Horse-10's 22) that `loss.source_keypoint_map`
                    predicts: SMAL keypoints as they are, others as the projected mean of their
                    vertex set on the mesh (0 without a map)
    vertices        mean over samples with shape and pose GT of the mean over the mesh's real
                    vertices of |v_pred - v_gt|_1, v_gt the GT parameters skinned by the sample's
                    own body model (padding vertices of a mixed batch left out)
    global_orient_6d sum over samples with pose GT of ||x0 - (R0_gt[:, 0], R0_gt[:, 1])||^2 on the
                    head's raw 6D output x0 of the root, before Gram-Schmidt. The matrix loss has
                    a saddle at 180 degrees: a body predicted facing right whose truth faces left
                    gets no gradient on its heading (d/dphi 4 (1 + cos phi) = 0 at phi = 0), and
                    Gram-Schmidt removes the only (radial) one; on the raw 6D vector the gradient
                    is x0 - gt, which carries the column through zero to the other side
    keypoint_heatmap sum over samples and keypoints inside the backbone's window of
                    conf * KL(t || softmax(z)): z the dense logits of `model.keypoint_heatmap`
                    over the h x w patch tokens, t a Gaussian over the token centres (sigma one
                    token) around the true keypoint; 0 without the readout
                    (models/keypoint_heatmap.py says why it exists)

Losses run in float32 whatever the compute dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from animax.geometry import axis_angle_to_rotmat, project_to_crop
from animax.models.keypoint_heatmap import in_window, token_centres
from animax.smal import PARENTS, pose_prior, shape_prior
from animax.train.metrics import vertex_mask


def keypoints_3d_loss(pred, gt):
    """pred [B,K,3], gt [B,K,4] (xyz + confidence) -> scalar. Root-relative (keypoint 0), summed."""
    pred = pred - pred[:, :1]
    xyz, conf = gt[..., :3] - gt[:, :1, :3], gt[..., 3:]
    return jnp.sum(conf * jnp.abs(pred - xyz))


def keypoints_2d_loss(pred, gt):
    """pred [B,K,2], gt [B,K,3] (xy + confidence) -> scalar, summed."""
    return jnp.sum(gt[..., 2:] * jnp.abs(pred - gt[..., :2]))


def keypoint_heatmap_loss(logits, gt):
    """logits [B,h,w,K], gt [B,K,3] (crop-normalised xy + confidence) -> scalar (module docstring).

    log t is computed in closed form (a log-softmax of -d^2 / 2 sigma^2), so tokens far from
    the keypoint, where t underflows to 0, contribute exactly t log t = 0.
    """
    b, h, w, k = logits.shape
    centres = jnp.asarray(token_centres(h, w).reshape(-1, 2), jnp.float32)            # [T, 2]
    sigma = 1.0 / h                                     # one token (crop-normalised rows = columns)
    d2 = jnp.sum(jnp.square(gt[:, :, None, :2] - centres[None, None]), axis=-1)       # [B, K, T]
    log_t = jax.nn.log_softmax(-d2 / (2.0 * sigma**2), axis=-1)
    log_q = jax.nn.log_softmax(logits.reshape(b, h * w, k).transpose(0, 2, 1), axis=-1)
    kl = jnp.sum(jnp.exp(log_t) * (log_t - log_q), axis=-1)                           # [B, K]
    return jnp.sum(gt[..., 2] * in_window(gt[..., :2]) * kl)


def masked_squared_error(pred, gt, has):
    """sum over samples with has = 1 of ||pred - gt||^2. pred, gt [B, ...], has [B]."""
    sq = jnp.sum(jnp.square(pred - gt).reshape(pred.shape[0], -1), axis=-1)
    return jnp.sum(has * sq)


def masked_mean(values, weights):
    """sum(w * v) / sum(w), and 0 when no weight: AniMer's prior over the samples it applies to."""
    return jnp.sum(weights * values) / jnp.maximum(jnp.sum(weights), 1.0)


def source_keypoint_predictions(outputs, table):
    """The pipeline's prediction [B, N, 2] (crop-normalised) of each keypoint of a dataset's own
    layout. table: `KeypointMap.prediction_table()` (smal_index, vertex_index, vertex_weight, _)."""
    smal_index, vertex_index, vertex_weight = (np.asarray(a) for a in table[:3])
    from_smal = outputs["keypoints_2d"][:, np.maximum(smal_index, 0)]
    points = jnp.einsum("bnmc,nm->bnc", outputs["vertices"][:, vertex_index], vertex_weight)
    from_vertices = project_to_crop(points, outputs["cam_t"])
    return jnp.where((smal_index >= 0)[None, :, None], from_smal, from_vertices)


def source_keypoints_loss(outputs, gt, table):
    """gt [B,N,3] (crop-normalised xy + confidence) -> sum of conf * |pred - gt|_1 over the
    keypoints the table predicts (the others weigh 0)."""
    gt = gt.at[..., 2].multiply(jnp.asarray(table[3], jnp.float32)[None])
    return keypoints_2d_loss(source_keypoint_predictions(outputs, table).astype(jnp.float32), gt)


def vertices_loss(pred, gt, mask, has):
    """pred, gt [B,V,3], mask [B,V] (0 = padding), has [B] -> scalar (see the module docstring)."""
    per_vertex = jnp.sum(jnp.abs(pred - gt), axis=-1)
    per_sample = jnp.sum(mask * per_vertex, axis=-1) / jnp.maximum(jnp.sum(mask, axis=-1), 1.0)
    return masked_mean(per_sample, has)


def supcon_loss(features, labels, temperature=0.1, base_temperature=0.07):
    """AniMer's supervised contrastive loss with two identical views ('all' anchors).

    features [B, D], labels [B] int -> scalar. Each of the 2B anchors contrasts against the
    other 2B - 1 entries; positives are those with its label (its own copy included).
    """
    feats = jnp.concatenate([features, features], axis=0).astype(jnp.float32)
    lab = jnp.concatenate([labels, labels], axis=0)
    n = feats.shape[0]
    logits = feats @ feats.T / temperature
    # Max-subtraction (constant per row) does not change the result; it keeps exp finite.
    logits = logits - jnp.max(logits, axis=1, keepdims=True)
    not_self = 1.0 - jnp.eye(n, dtype=logits.dtype)
    # Unknown families (label -1) are nobody's positives.
    positives = ((lab[:, None] == lab[None, :]) & (lab[:, None] >= 0)).astype(logits.dtype) * not_self
    log_prob = logits - jnp.log(jnp.sum(jnp.exp(logits) * not_self, axis=1, keepdims=True))
    mean_log_prob_pos = jnp.sum(positives * log_prob, axis=1) / jnp.maximum(jnp.sum(positives, axis=1), 1.0)
    return -(temperature / base_temperature) * jnp.mean(mean_log_prob_pos)


def descriptor_loss(features, labels, temperature=0.1):
    """Supervised contrastive loss (Khosla et al. 2020, L_out) of one view on unit features.

    features [B, D], labels [B] int (-1 = unknown) -> scalar. Anchor i's positives are the other
    rows with its label; it contrasts them against every other row. Anchors without a positive
    in the batch (and unknown labels) do not count; with none at all the loss is 0.
    """
    feats = features.astype(jnp.float32)
    feats = feats / jnp.maximum(jnp.linalg.norm(feats, axis=-1, keepdims=True), 1e-6)
    n = feats.shape[0]
    not_self = 1.0 - jnp.eye(n, dtype=jnp.float32)
    # Unit vectors: logits are at most 1 / temperature, so exp stays finite without a max shift.
    logits = feats @ feats.T / temperature
    log_prob = logits - jnp.log(jnp.sum(jnp.exp(logits) * not_self, axis=1, keepdims=True))
    known = labels >= 0
    positives = ((labels[:, None] == labels[None, :]) & known[:, None]).astype(jnp.float32) * not_self
    count = jnp.sum(positives, axis=1)
    per_anchor = jnp.sum(positives * log_prob, axis=1) / jnp.maximum(count, 1.0)
    return -masked_mean(per_anchor, (count > 0).astype(jnp.float32))


# Pairs (joint, parent) of body joints: the root (global orientation) is excluded on both ends.
_CHAIN = np.array([(j, p) for j, p in enumerate(PARENTS) if p > 0])


def pose_smoothness(pose):
    """pose [B,J,3,3] local rotations -> scalar: mean_b sum_j ||R_j - R_parent(j)||_F^2."""
    diff = pose[:, _CHAIN[:, 0]] - pose[:, _CHAIN[:, 1]]
    return jnp.mean(jnp.sum(jnp.square(diff), axis=(1, 2, 3)))


def gt_rotations(pose):
    """Ground-truth pose as rotation matrices: [B,J,3,3] as is, axis-angle [B,J,3] or [B,3J] converted."""
    if pose.shape[-2:] == (3, 3):
        return pose
    return axis_angle_to_rotmat(pose.reshape(pose.shape[0], -1, 3))


def loss_terms(outputs, batch, priors=None, supcon=(0.1, 0.07), descriptor_temperature=0.1, source_table=None):
    """Every unweighted term (see the module docstring) of one batch.

    outputs: the pipeline's `apply(..., train=True)` dict. batch: `keypoints_2d [B,K,3]`,
    `keypoints_3d [B,K,4]`, `betas [B,NB]`, `pose [B,J,3,3]` (or axis-angle), `has_betas [B]`,
    `has_pose [B]`, `family [B]`, `identity [B]` (-1 = unknown), and `vertices [B,V,3]` (the GT
    parameters' mesh) for the vertex term, which is 0 without them; `source_keypoints [B,N,3]`
    with `source_table` (`KeypointMap.prediction_table()`) for the source-keypoint term.
    priors: {"shape": ShapePrior, "pose": PosePrior}, either may be missing (the term is then 0).
    supcon: (temperature, base temperature).
    """
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    pose, gt_pose = f32(outputs["pose"]), f32(gt_rotations(batch["pose"]))
    betas = f32(outputs["betas"])
    has_pose, has_betas = f32(batch["has_pose"]), f32(batch["has_betas"])
    priors = priors or {}
    zero = jnp.zeros((), jnp.float32)
    nb = min(betas.shape[-1], batch["betas"].shape[-1])
    return {
        "keypoints_3d": keypoints_3d_loss(f32(outputs["keypoints_3d"]), f32(batch["keypoints_3d"])),
        "keypoints_2d": keypoints_2d_loss(f32(outputs["keypoints_2d"]), f32(batch["keypoints_2d"])),
        "global_orient": masked_squared_error(pose[:, 0], gt_pose[:, 0], has_pose),
        "pose": masked_squared_error(pose[:, 1:], gt_pose[:, 1:], has_pose),
        "betas": masked_squared_error(betas[:, :nb], f32(batch["betas"])[:, :nb], has_betas),
        # The family prior needs a known family (-1 = unknown).
        "shape_prior": (masked_mean(shape_prior(priors["shape"], betas, jnp.maximum(batch["family"], 0)),
                                    (1.0 - has_betas) * (batch["family"] >= 0))
                        if "shape" in priors else zero),
        "pose_prior": (masked_mean(pose_prior(priors["pose"], pose), 1.0 - has_pose)
                       if "pose" in priors else zero),
        "adversarial": (jnp.sum(jnp.square(f32(outputs["discriminator"]) - 1.0)) / betas.shape[0]
                        if "discriminator" in outputs else zero),
        "supcon": supcon_loss(f32(outputs["class_features"]), batch["family"], *supcon),
        "betas_l2": jnp.mean(jnp.sum(jnp.square(betas), axis=-1)),
        "pose_smoothness": pose_smoothness(pose),
        "fused_l2": jnp.mean(jnp.sum(jnp.square(f32(outputs["fused_features"])), axis=-1)),
        "descriptor_family": descriptor_loss(outputs["fused_features"], batch["family"], descriptor_temperature),
        "descriptor_identity": descriptor_loss(outputs["fused_features"], batch["identity"], descriptor_temperature),
        "source_keypoints_2d": (source_keypoints_loss(outputs, f32(batch["source_keypoints"]), source_table)
                                if source_table is not None and "source_keypoints" in batch else zero),
        "vertices": (vertices_loss(f32(outputs["vertices"]), f32(batch["vertices"]), vertex_mask(outputs),
                                   has_pose * has_betas) if "vertices" in batch else zero),
        "global_orient_6d": masked_squared_error(
            f32(outputs["pose_6d_iters"])[-1, :, :6],
            jnp.concatenate([gt_pose[:, 0, :, 0], gt_pose[:, 0, :, 1]], axis=-1), has_pose),
        "keypoint_heatmap": (keypoint_heatmap_loss(f32(outputs["keypoint_heatmap"]), f32(batch["keypoints_2d"]))
                             if "keypoint_heatmap" in outputs else zero),
    }


def total_loss(outputs, batch, loss_config, priors=None, source_table=None):
    """(weighted sum, unweighted terms). loss_config: `config.loss` (weights.<term>, supcon_*,
    descriptor_temperature); source_table: the prediction table of `loss.source_keypoint_map`."""
    terms = loss_terms(outputs, batch, priors,
                       supcon=(loss_config.supcon_temperature, loss_config.supcon_base_temperature),
                       descriptor_temperature=loss_config.descriptor_temperature, source_table=source_table)
    # Checked while tracing (once per compile): a misspelt weight would silently weigh nothing.
    unknown, unweighted = set(loss_config.weights) - set(terms), set(terms) - set(loss_config.weights)
    if unknown or unweighted:
        raise ValueError(f"config.loss.weights: unknown term(s) {sorted(unknown)}, no weight for {sorted(unweighted)}; "
                         f"the terms are {sorted(terms)}")
    # Terms weighted 0 stay out of the sum, so they cost no gradient and cannot poison it.
    total = sum(loss_config.weights[name] * value for name, value in terms.items() if loss_config.weights[name])
    return total, terms
