"""The integrated pipeline on the tiny config: output contract, compilation, precision, gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from animax.models import build_model, init_variables
from animax.models.head_encoder import HeadEncoder, crop_and_resize, head_box
from animax.smal.constants import HEAD_KEYPOINTS
from animax.smal.io import smal_model_from_arrays
from configs import animer_vith, tiny
from helpers.nn_reference import U
from helpers.smal_files import random_smal_arrays

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32


@pytest.fixture(scope="module")
def body():
    return smal_model_from_arrays(random_smal_arrays(), 41, "random")


@pytest.fixture(scope="module")
def tiny_model(body):
    model = build_model(tiny.get_config(), smal=body)
    return model, init_variables(model)


def _images(batch, seed=0):
    """Smooth random images: white noise would make every crop infinitely sensitive to its box."""
    coarse = np.random.default_rng(seed).normal(size=(batch, 16, 16, 3))
    return jax.image.resize(jnp.asarray(coarse, jnp.float32), (batch, 256, 256, 3), "linear")


def expected_shapes(batch, width, num_vertices):
    return {
        "feature_map": (batch, 16, 12, width), "visual_features": (batch, width), "cls_token": (batch, width),
        "betas": (batch, 41), "pose": (batch, 35, 3, 3), "cam": (batch, 3), "cam_t": (batch, 3),
        "vertices": (batch, num_vertices, 3), "joints": (batch, 35, 3), "keypoints_3d": (batch, 26, 3),
        "keypoints_2d": (batch, 26, 2), "head_box": (batch, 4), "head_features": (batch, 768),
        "fused_features": (batch, 512),
    }


def test_tiny_outputs_follow_the_contract(tiny_model):
    model, variables = tiny_model
    apply = jax.jit(model.apply)
    out = apply(variables, _images(2))
    assert {k: v.shape for k, v in out.items()} == expected_shapes(2, 192, 3889)
    assert all(v.dtype == jnp.float32 for v in out.values())
    assert all(np.all(np.isfinite(v)) for v in out.values())
    # One compilation serves repeated calls of the same shape.
    apply(variables, _images(2, seed=1))
    apply(variables, _images(2, seed=2))
    assert apply._cache_size() == 1


def test_keypoints_2d_are_the_projection_of_keypoints_3d(tiny_model):
    model, variables = tiny_model
    out = jax.jit(model.apply)(variables, _images(1))
    p = np.asarray(out["keypoints_3d"][0], np.float64) + np.asarray(out["cam_t"][0], np.float64)
    expected = 1000 / 256 * p[:, :2] / p[:, 2:]
    # The float32 projection of the same outputs: an add, a divide, a scale (~4 U), x4.
    np.testing.assert_allclose(out["keypoints_2d"][0], expected, rtol=16 * U, atol=16 * U * np.abs(expected).max())
    cam = np.asarray(out["cam"][0], np.float64)
    np.testing.assert_allclose(out["cam_t"][0], [cam[1], cam[2], 2000 / (256 * cam[0] + 1e-9)], rtol=16 * U)


@pytest.mark.slow
def test_animer_vith_shapes_by_abstract_evaluation(body):
    model = build_model(animer_vith.get_config(), smal=body)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((2, 256, 256, 3)))
    backbone = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]["backbone"]))
    assert backbone == 630_913_280
    out = jax.eval_shape(model.apply, shapes, jnp.zeros((2, 256, 256, 3)))
    assert {k: v.shape for k, v in out.items()} == expected_shapes(2, 1280, 3889)


def test_bfloat16_compute_is_finite_and_close(body):
    config = tiny.get_config()
    model32 = build_model(config, smal=body)
    variables = init_variables(model32)
    config.model.dtype = "bfloat16"
    model16 = build_model(config, smal=body)
    x = _images(2)
    out32, out16 = jax.jit(model32.apply)(variables, x), jax.jit(model16.apply)(variables, x)
    assert all(v.dtype == jnp.float32 and np.all(np.isfinite(v)) for v in out16.values())
    # The head crop's box moves with the keypoints, and a shifted crop sees other pixels, so
    # the head branch is compared on a shared box below, not through the whole pipeline.
    for key in ("feature_map", "cls_token", "visual_features", "betas", "pose", "vertices", "keypoints_3d"):
        a, b = np.asarray(out32[key]), np.asarray(out16[key])
        assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.05, key


def test_head_encoder_bfloat16_is_close_on_the_same_box():
    encoder = HeadEncoder(widths=(8, 16, 32), crop=64)
    x, kp = _images(2), jnp.zeros((2, 26, 2))
    variables = jax.jit(encoder.init)(jax.random.PRNGKey(0), x, kp)
    a, box_a = jax.jit(encoder.apply)(variables, x, kp)
    b, box_b = jax.jit(encoder.clone(dtype=jnp.bfloat16).apply)(variables, x, kp)
    np.testing.assert_array_equal(box_a, box_b)
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.02


def test_gradient_reaches_every_trainable_leaf(tiny_model):
    model, variables = tiny_model

    def loss(params):
        out, _ = model.apply({**variables, "params": params}, _images(2), train=True,
                             rngs={"dropout": jax.random.PRNGKey(1)}, mutable=["batch_stats"])
        return sum(jnp.mean(out[k] ** 2) for k in ("fused_features", "vertices", "class_features", "cls_token"))

    grads = jax.jit(jax.grad(loss))(variables["params"])
    # AniMer's decoder query is a zero token: the kernel that embeds it never gets a gradient.
    dead = "['smal_head']['transformer']['to_token_embedding']['kernel']"
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        name = jax.tree_util.keystr(path)
        assert np.all(np.isfinite(g)), name
        assert np.any(g != 0) != (name == dead), name


def test_head_box_covers_hand_placed_head_keypoints():
    kp = np.zeros((2, 26, 2), np.float32)
    # Sample 0: the head keypoints span x 100..140, y 60..80 px of the 256 crop.
    head = np.array([[100, 60], [140, 60], [120, 80], [100, 70], [140, 70], [110, 80], [130, 80], [120, 75]])
    kp[0, list(HEAD_KEYPOINTS)] = head / 256 - 0.5
    # Sample 1: a tiny head at the crop's corner: the box keeps its minimum size and stays inside.
    kp[1, list(HEAD_KEYPOINTS)] = np.array([[2, 2]] * 8) / 256 - 0.5
    box = np.asarray(head_box(jnp.asarray(kp), margin=0.4, min_size=32))
    side = 40 * 1.4
    # Keypoints rounded to float32 at the crop's scale (256 px), then a few operations: ~4 U 256, x4.
    atol = 16 * U * 256
    np.testing.assert_allclose(box[0], [120 - side / 2, 70 - side / 2, 120 + side / 2, 70 + side / 2],
                               rtol=0, atol=atol)
    np.testing.assert_allclose(box[1], [0, 0, 32, 32], rtol=0, atol=atol)


def test_pipeline_head_box_contains_the_projected_head_keypoints(tiny_model):
    model, variables = tiny_model
    out = jax.jit(model.apply)(variables, _images(3, seed=5))
    pts = (np.asarray(out["keypoints_2d"])[:, list(HEAD_KEYPOINTS)] + 0.5) * 256
    box = np.asarray(out["head_box"])
    inside_crop = (pts >= 0).all(axis=(1, 2)) & (pts <= 256).all(axis=(1, 2))
    for b in np.flatnonzero(inside_crop):
        assert np.all(pts[b] >= box[b, :2] - 1e-3) and np.all(pts[b] <= box[b, 2:] + 1e-3)
    assert np.all(box[:, :2] >= 0) and np.all(box[:, 2:] <= 256 + 1e-4)


def test_crop_and_resize_matches_a_hand_built_bilinear_sampler():
    rng = np.random.default_rng(0)
    img = rng.random((1, 40, 50, 3)).astype(np.float32)
    box = np.array([[-5.0, 3.0, 30.0, 38.0]], np.float32)  # partly outside: constant 0 border
    out = np.asarray(crop_and_resize(jnp.asarray(img), jnp.asarray(box), out_size=16))
    step = 35.0 / 16
    expected = np.zeros((16, 16, 3))
    for i in range(16):
        for j in range(16):
            y, x = 3.0 + (i + 0.5) * step - 0.5, -5.0 + (j + 0.5) * step - 0.5
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                    if 0 <= yy < 40 and 0 <= xx < 50:
                        expected[i, j] += wy * wx * img[0, yy, xx]
    np.testing.assert_allclose(out[0], expected, atol=1e-5)
