"""A batch of body models with different meshes: padded vertices with a mask, or grouped runs.

Every example must get exactly what a batch of its own model gives; masked losses and metrics
must equal the unpadded ones, and no gradient may flow from padding.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_smal import lbs_reference, random_pose

from animax.models import build_model, init_variables
from animax.smal import make_bank, smal_forward, smal_forward_grouped, smal_forward_mixed
from animax.smal.io import smal_model_from_arrays
from animax.train import losses, metrics
from configs import tiny
from helpers.nn_reference import f32_tol, lbs_steps, pipeline_steps, rel_err
from helpers.smal_files import random_smal_arrays

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32

# Two species: different vertex counts, templates and numbers of shape directions (of 41 stored).
SIZES = {"small": (300, 30), "large": (520, 41)}
LBS_STEPS = lbs_steps(41, joints_per_vertex=3)
ROWS = np.array([1, 0, 0, 1, 1])          # body model of each row, mixed order


@pytest.fixture(scope="module")
def arrays():
    out = {}
    for i, (name, (v, nb)) in enumerate(SIZES.items()):
        data = random_smal_arrays(num_vertices=v, num_betas=41, seed=i)
        rng = np.random.default_rng(10 + i)    # keypoint sets of 1..4 vertices, a layout of its own
        data["keypoint_vertex_sets"] = [rng.choice(v, rng.integers(1, 5), replace=False) for _ in range(26)]
        out[name] = data
    return out


@pytest.fixture(scope="module")
def models(arrays):
    return [smal_model_from_arrays(arrays[name], SIZES[name][1], name) for name in SIZES]


@pytest.fixture(scope="module")
def bank(models):
    return make_bank(models)


def _inputs(batch=len(ROWS), seed=0):
    betas = np.random.default_rng(seed).normal(size=(batch, 41))
    return betas, random_pose(batch, seed=seed + 1)


def test_each_row_is_skinned_by_its_own_model(arrays, models, bank):
    betas, pose = _inputs()
    out = smal_forward_mixed(bank, jnp.asarray(ROWS), jnp.asarray(betas, jnp.float32), jnp.asarray(pose, jnp.float32))
    assert out["vertices"].shape == (5, 520, 3) and out["vertex_mask"].shape == (5, 520)
    for b, m in enumerate(ROWS):
        name, (v, nb) = list(SIZES.items())[m]
        # Against textbook float64 LBS of the row's own arrays (a model with nb shape directions
        # ignores the rest of the 41 betas, as smal_forward does).
        verts, joints = lbs_reference(arrays[name], betas[b, :nb], pose[b], np.zeros(3), num_betas=nb)
        scale = np.abs(verts).max()
        assert np.abs(np.asarray(out["vertices"][b, :v]) - verts).max() / scale < f32_tol(*LBS_STEPS)
        assert np.abs(np.asarray(out["joints"][b]) - joints).max() / scale < f32_tol(*LBS_STEPS)
        np.testing.assert_array_equal(out["vertices"][b, v:], 0.0)
        np.testing.assert_array_equal(out["vertex_mask"][b], np.arange(520) < v)
        # And against a batch of its own model: same maths, other matrix sizes.
        own = smal_forward(models[m], jnp.asarray(betas[b:b + 1, :nb], jnp.float32),
                           jnp.asarray(pose[b:b + 1], jnp.float32))
        for key in ("vertices", "joints", "keypoints_3d"):
            got = np.asarray(out[key][b, :v] if key == "vertices" else out[key][b])
            np.testing.assert_allclose(got, own[key][0], atol=f32_tol(*LBS_STEPS, sides=2) * scale)


def test_grouped_runs_equal_the_padded_batch(bank):
    betas, pose = _inputs(6, seed=3)
    index = jnp.asarray([0, 0, 1, 1, 1, 0])
    grouped = smal_forward_grouped(bank, ((0, 2), (1, 3), (0, 1)), jnp.asarray(betas, jnp.float32),
                                   jnp.asarray(pose, jnp.float32))
    mixed = smal_forward_mixed(bank, index, jnp.asarray(betas, jnp.float32), jnp.asarray(pose, jnp.float32))
    scale = float(jnp.abs(mixed["vertices"]).max())
    for key in ("vertices", "joints", "keypoints_3d", "vertex_mask"):
        np.testing.assert_allclose(grouped[key], mixed[key], atol=f32_tol(*LBS_STEPS, sides=2) * scale)
    with pytest.raises(ValueError, match="do not cover"):
        smal_forward_grouped(bank, ((0, 2),), jnp.asarray(betas, jnp.float32), jnp.asarray(pose, jnp.float32))


def test_no_gradient_flows_from_padding(bank):
    betas, pose = _inputs()
    mask = bank.vertex_mask[ROWS]

    def padding_sum(b, p):
        verts = smal_forward_mixed(bank, jnp.asarray(ROWS), b, p)["vertices"]
        return jnp.sum((1.0 - mask)[..., None] * jnp.sin(verts + 1.0))

    grads = jax.grad(padding_sum, argnums=(0, 1))(jnp.asarray(betas, jnp.float32), jnp.asarray(pose, jnp.float32))
    for g in grads:
        np.testing.assert_array_equal(g, 0.0)


def test_masked_vertex_loss_and_pa_mpvpe_equal_the_unpadded_ones(bank):
    rng = np.random.default_rng(7)
    betas, pose = _inputs()
    pred = smal_forward_mixed(bank, jnp.asarray(ROWS), jnp.asarray(betas, jnp.float32), jnp.asarray(pose, jnp.float32))
    # A GT mesh per row: the prediction moved, and junk in the padding (which must not count).
    gt = np.asarray(pred["vertices"]) + rng.normal(scale=0.05, size=pred["vertices"].shape)
    mask = np.asarray(pred["vertex_mask"])
    gt[mask == 0] = 1e3
    has, valid = np.array([1, 1, 0, 1, 1], np.float32), np.ones(5, np.float32)
    got_loss = losses.vertices_loss(pred["vertices"], jnp.asarray(gt, jnp.float32), pred["vertex_mask"],
                                    jnp.asarray(has))
    got_pa, weight = metrics.pa_mpvpe(pred["vertices"], jnp.asarray(gt, jnp.float32), pred["vertex_mask"],
                                      jnp.asarray(has), jnp.asarray(valid))
    per_row_loss, per_row_pa = [], []
    for b, m in enumerate(ROWS):
        v = bank.vertex_counts[m]
        p, g = np.asarray(pred["vertices"][b, :v], np.float64), gt[b, :v]
        per_row_loss.append(np.abs(p - g).sum(-1).mean())
        # Umeyama in float64 on the real vertices only.
        mp, mg = p.mean(0), g.mean(0)
        u, s, vt = np.linalg.svd((p - mp).T @ (g - mg))
        d = np.sign(np.linalg.det(vt.T @ u.T))
        r = vt.T @ np.diag([1, 1, d]) @ u.T
        scale = np.trace(r @ (p - mp).T @ (g - mg)) / ((p - mp) ** 2).sum()
        aligned = scale * (p - mp) @ r.T + mg
        per_row_pa.append(np.linalg.norm(aligned - g, axis=-1).mean() * 1000)
    expected_loss = np.sum(has * per_row_loss) / has.sum()
    # 3-term |.| sums, a mean over <= 520 vertices, a mean over 4 rows.
    np.testing.assert_allclose(got_loss, expected_loss, rtol=f32_tol(3, 520, 4))
    np.testing.assert_array_equal(weight, has)
    # The SVD of a 3x3 cross-covariance summed over <= 520 points; errors ~0.05 against a unit-scale
    # mesh, so the residual's relative error is amplified by |mesh| / |residual| ~ 20.
    np.testing.assert_allclose(got_pa, per_row_pa, rtol=f32_tol(520, 3, 3, 3, 520, cond=20.0))


def test_pipeline_on_a_bank_gives_each_row_its_own_models_outputs(arrays):
    # The pipeline predicts 41 betas: each model takes all of them here.
    models = [smal_model_from_arrays(arrays[name], 41, name) for name in SIZES]
    bank = make_bank(models)
    config = tiny.get_config()
    mixed_model = build_model(config, smal=bank)
    variables = init_variables(mixed_model)
    images = jax.image.resize(jnp.asarray(np.random.default_rng(0).normal(size=(5, 16, 16, 3)), jnp.float32),
                              (5, 256, 256, 3), "linear")
    out = jax.jit(mixed_model.apply)(variables, images, body_index=jnp.asarray(ROWS))
    for m, model in enumerate(models):
        own = build_model(config, smal=model)
        rows = np.flatnonzero(ROWS == m)
        own_out = jax.jit(own.apply)({**variables, "smal": {"model": model}}, images[rows])
        # Other batch sizes and matrix shapes: the whole pipeline's float32 error, on both sides.
        tol = f32_tol(*pipeline_steps(config.model), sides=2)
        assert rel_err(out["vertices"][rows, :model.num_vertices], own_out["vertices"]) < tol
        np.testing.assert_array_equal(out["vertices"][rows, model.num_vertices:], 0.0)
        for key in ("keypoints_2d", "head_box", "fused_features"):
            assert rel_err(out[key][rows], own_out[key]) < tol, key


def test_training_on_two_meshes_alternates_them_and_masks_the_vertex_terms(arrays, tmp_path):
    """config.smal with two files: the synthetic source renders example i with model i mod 2,
    the step trains with the masked vertex loss, evaluation reports PA-MPVPE."""
    from test_train_loop import small_config

    from animax.smal import save_smal
    from animax.train import input as input_lib
    from animax.train import loop

    save_smal(smal_model_from_arrays(arrays["large"], 41, "large"), tmp_path / "large.npz")
    config = small_config(smal=f"standin,{tmp_path / 'large.npz'}")
    config.loss.weights.vertices = 1.0
    trainer = loop.Trainer(config, tmp_path / "run")
    assert trainer.body.names == ("standin", "large") and trainer.body.vertex_counts == (3242, 520)
    source = input_lib.train_source(config, trainer.body)
    local = next(source)
    input_lib.close_train_source(source)
    np.testing.assert_array_equal(local["body_model"], np.arange(8) % 2)
    state = trainer.restore_or_init()
    batch = trainer.batch(local, input_lib.TRAIN_KEYS)
    state, step_metrics = trainer.train_step(state, batch, trainer.smal)
    assert np.isfinite(float(step_metrics["loss/vertices"])) and float(step_metrics["loss/vertices"]) > 0
    assert int(step_metrics["skipped"]) == 0
    results = trainer.evaluate(state)
    assert np.isfinite(results["pa_mpvpe"]) and results["pa_mpvpe"] > 0
