"""The dense keypoint readout and its loss (animax/models/keypoint_heatmap.py, losses.keypoint_heatmap_loss)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from animax.models import build_model
from animax.models.keypoint_heatmap import expected_keypoints, token_centres
from animax.train import losses
from configs import standin
from helpers.nn_reference import f32_tol

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32


def test_token_centres_are_the_patch_centres_of_the_backbones_window():
    centres = token_centres(16, 12)
    # Token (row 0, column 0) covers crop pixels x 32..48, y 0..16; (15, 11) covers x 208..224, y 240..256.
    np.testing.assert_allclose(centres[0, 0], np.array([40.0, 8.0]) / 256 - 0.5)
    np.testing.assert_allclose(centres[15, 11], np.array([216.0, 248.0]) / 256 - 0.5)


def _kl_reference(logits, gt, sigma_tokens=1.0):
    """Float64, keypoint by keypoint, from the definition: sum of conf * KL(t || softmax(z)) over
    keypoints inside the window (crop pixels x 32..224, y 0..256)."""
    logits, gt = np.asarray(logits, np.float64), np.asarray(gt, np.float64)
    b, h, w, k = logits.shape
    centres = token_centres(h, w).reshape(-1, 2)
    sigma = sigma_tokens * 16.0 / 256.0
    total, scale = 0.0, 0.0
    for i in range(b):
        for j in range(k):
            x, y = (gt[i, j, :2] + 0.5) * 256
            if not (32 <= x < 224 and 0 <= y < 256) or gt[i, j, 2] == 0:
                continue
            t = np.exp(-np.sum((centres - gt[i, j, :2]) ** 2, -1) / (2 * sigma**2))
            t /= t.sum()
            z = logits[i, :, :, j].reshape(-1)
            log_q = z - z.max() - np.log(np.sum(np.exp(z - z.max())))
            keep = t > 0
            total += gt[i, j, 2] * np.sum(t[keep] * (np.log(t[keep]) - log_q[keep]))
            scale = max(scale, np.abs(z).max() + np.log(z.size) + np.sum(t[keep] * np.abs(np.log(t[keep]))))
    return total, scale


def test_loss_is_the_gaussian_kl_of_each_keypoint_inside_the_window():
    rng = np.random.default_rng(0)
    b, h, w, k = 3, 16, 12, 5
    logits = rng.normal(0.0, 2.0, (b, h, w, k)).astype(np.float32)
    gt = np.concatenate([rng.uniform(-0.3, 0.3, (b, k, 2)), rng.uniform(0.2, 1.0, (b, k, 1))], -1)
    gt[0, 0, 0] = -0.45            # x 12.8 px: left of the window, not counted
    gt[1, 2, 2] = 0.0              # unlabelled
    gt[2, 3, :2] = [0.4, 0.49]     # x 230 px: right of the window
    gt = gt.astype(np.float32)
    got = float(losses.keypoint_heatmap_loss(jnp.asarray(logits), jnp.asarray(gt)))
    want, scale = _kl_reference(logits, gt)
    # Each KL: two log-softmaxes over T = 192 tokens and a T-term weighted sum, errors relative to
    # the scale of the log terms; the sum over the N counted keypoints adds its own.
    counted = b * k - 3
    np.testing.assert_allclose(got, want, rtol=0, atol=scale * counted * f32_tol(h * w, h * w, h * w, counted))


def test_loss_is_zero_when_the_logits_are_the_target():
    h, w = 16, 12
    centres = token_centres(h, w).reshape(-1, 2)
    # Two keypoints, one on a token centre and one between tokens; logits = log of their targets.
    gt = np.array([[[centres[40, 0], centres[40, 1], 1.0], [0.013, -0.21, 1.0]]], np.float32)
    sigma = 1.0 / 16
    d2 = np.sum((centres[None] - gt[0, :, None, :2].astype(np.float64)) ** 2, -1)
    logits = (-d2 / (2 * sigma**2)).T.reshape(1, h, w, 2).astype(np.float32)
    got = float(losses.keypoint_heatmap_loss(jnp.asarray(logits), jnp.asarray(gt)))
    # Both log-softmaxes of the same logits round alike up to ~log T-scale errors.
    assert abs(got) <= 2 * float(np.abs(logits).max()) * f32_tol(h * w, h * w, sides=2)
    # A target shifted by one token (= sigma) costs KL = d^2 / (2 sigma^2) = 0.5 nats: for Gaussians
    # of equal width on a lattice, KL = 1/2 - (E_t[x] - mu), and the sampled mean is mu to ~1e-8.
    shifted = gt.copy()
    shifted[0, :, 0] += 16.0 / 256   # one column: 16 crop pixels
    assert 0.49 < float(losses.keypoint_heatmap_loss(jnp.asarray(logits), jnp.asarray(shifted))) / 2 < 0.51


def _model(heatmap: bool):
    config = standin.get_config("tiny")
    config.model.keypoint_heatmap = heatmap
    return build_model(config), config


def test_the_readout_is_trained_only_when_asked_and_its_loss_reaches_the_backbone():
    images = jnp.asarray(np.random.default_rng(1).normal(0, 1, (2, 256, 256, 3)), jnp.float32)
    plain, _ = _model(False)
    variables = plain.init(jax.random.PRNGKey(0), images)
    assert "keypoint_heatmap" not in variables["params"]
    assert "keypoint_heatmap" not in plain.apply(variables, images, train=True, mutable=["batch_stats"])[0]

    model, _ = _model(True)
    variables = model.init(jax.random.PRNGKey(0), images)
    k = model.body_model.num_keypoints
    assert variables["params"]["keypoint_heatmap"]["readout"]["kernel"].shape == (192, k)
    # Inference outputs are unchanged by the readout.
    assert "keypoint_heatmap" not in model.apply(variables, images)
    gt = jnp.concatenate([jnp.full((2, k, 2), 0.05), jnp.ones((2, k, 1))], -1)

    def loss(params):
        out, _ = model.apply({**variables, "params": params}, images, train=True, mutable=["batch_stats"])
        assert out["keypoint_heatmap"].shape == (2, 16, 12, k)
        return losses.keypoint_heatmap_loss(out["keypoint_heatmap"], gt)

    grads = jax.grad(loss)(variables["params"])
    norm = lambda tree: float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(tree))))
    assert norm(grads["backbone"]) > 0 and norm(grads["keypoint_heatmap"]) > 0
    assert norm(grads["smal_head"]) == 0.0


def test_expected_keypoints_is_the_soft_argmax_over_token_centres():
    h, w = 16, 12
    centres = token_centres(h, w)
    logits = np.zeros((1, h, w, 3), np.float32)
    logits[0, 5, 7, 0] = 60.0                                   # all the mass on one token
    logits[0, 2, 3, 1] = logits[0, 2, 4, 1] = 60.0              # split between two neighbours
    got = np.asarray(expected_keypoints(jnp.asarray(logits)))[0]
    np.testing.assert_allclose(got[0], centres[5, 7], atol=1e-6)
    np.testing.assert_allclose(got[1], (centres[2, 3] + centres[2, 4]) / 2, atol=1e-6)
    np.testing.assert_allclose(got[2], centres.reshape(-1, 2).mean(0), atol=1e-6)   # uniform: the mean


def test_the_keypoint_query_starts_as_a_no_op_and_then_steers_the_head():
    images = jnp.asarray(np.random.default_rng(2).normal(0, 1, (2, 256, 256, 3)), jnp.float32)
    plain, config = _model(True)
    config.model.smal_head.keypoint_query = True
    query = build_model(config)
    variables = query.init(jax.random.PRNGKey(0), images)
    embedding = variables["params"]["smal_head"]["transformer"]["query_input_embedding"]
    assert embedding["kernel"].shape == (2 * query.body_model.num_keypoints, 256)
    # Zero-initialised: a trained model given the query keeps its outputs exactly.
    without = {**variables, "params": {**variables["params"], "smal_head": {**variables["params"]["smal_head"],
               "transformer": {k: v for k, v in variables["params"]["smal_head"]["transformer"].items()
                               if k != "query_input_embedding"}}}}
    a, b = query.apply(variables, images), plain.apply(without, images)
    for key in ("pose", "betas", "cam", "keypoints_2d"):
        np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]))
    # Once the embedding is non-zero the head reads the heatmap's keypoints.
    kernel = jax.random.normal(jax.random.PRNGKey(3), embedding["kernel"].shape)
    moved = jax.tree_util.tree_map(lambda x: x, variables)
    moved["params"]["smal_head"]["transformer"]["query_input_embedding"]["kernel"] = kernel
    assert float(jnp.abs(query.apply(moved, images)["cam"] - a["cam"]).max()) > 0
