"""The SMAL head matches float64 NumPy and PyTorch forwards written from AniMer's decoder recipe."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from animax.models import smal_head
from helpers.nn_reference import (
    U,
    assert_within,
    attention,
    decoder_layer_steps,
    dense,
    f32_error,
    f32_tol,
    f64,
    gelu,
    layer_norm,
    random_params,
    rel_err,
    rot6d_tol,
    split_heads,
)
from helpers.torch_reference import random_state, to_flax_variables, torch_head, torch_head_shapes, torch_layer

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32

TINY = dict(dim=64, depth=2, heads=4, dim_head=16, mlp_dim=96)
FEATURE_SHAPE = (2, 4, 3, 32)  # [B, h, w, context_dim]

# Float32 steps for f32_tol.
LAYER_STEPS = decoder_layer_steps(64, 4, 16, 96, tokens=3, context_tokens=12, context_dim=32)
# The head: token embedding and position, `depth` layers on one token, a readout (64 terms)
# added once per IEF iteration.
HEAD_STEPS = (1, 1, *decoder_layer_steps(64, 4, 16, 96, 1, 12, 32) * TINY["depth"], TINY["dim"], 1, 1, 1)


def np_layer(p, x, context, heads, dim_head):
    """One decoder layer in float64 NumPy. x [B, N, D], context [B, M, C]."""
    scale = dim_head**-0.5
    sa, ca, ff = p["self_attn"], p["cross_attn"], p["ff"]
    qkv = dense(layer_norm(x, sa["norm"], 1e-5), sa["to_qkv"])
    q, k, v = (split_heads(t, heads) for t in np.split(qkv, 3, axis=-1))
    x = x + dense(attention(q * scale, k, v), sa["to_out"])
    q = split_heads(dense(layer_norm(x, ca["norm"], 1e-5), ca["to_q"]), heads)
    k, v = (split_heads(t, heads) for t in np.split(dense(context, ca["to_kv"]), 2, axis=-1))
    x = x + dense(attention(q * scale, k, v), ca["to_out"])
    return x + dense(gelu(dense(layer_norm(x, ff["norm"], 1e-5), ff["fc1"])), ff["fc2"])


def np_rot6d_to_rotmat(x):
    """[..., 6] -> [..., 3, 3]: Gram-Schmidt on the columns a1 = x[:3], a2 = x[3:]."""
    a1, a2 = x[..., :3], x[..., 3:]
    b1 = a1 / np.maximum(np.linalg.norm(a1, axis=-1, keepdims=True), 1e-12)
    b2 = a2 - np.sum(b1 * a2, -1, keepdims=True) * b1
    b2 = b2 / np.maximum(np.linalg.norm(b2, axis=-1, keepdims=True), 1e-12)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-1)


def np_head(p, feature_map, depth, heads, dim_head, ief_iters):
    b = feature_map.shape[0]
    context = feature_map.reshape(b, -1, feature_map.shape[-1])
    t = p["transformer"]
    x = dense(np.zeros((b, 1, 1)), t["to_token_embedding"]) + t["pos_embedding"]
    for i in range(depth):
        x = np_layer(t[f"layers_{i}"], x, context, heads, dim_head)
    token = x[:, 0]
    pose, betas, cam = np.zeros((b, 210)), np.zeros((b, 41)), np.tile([0.9, 0.0, 0.0], (b, 1))
    for _ in range(ief_iters):
        pose = dense(token, p["decpose"]) + pose
        betas = dense(token, p["decshape"]) + betas
        cam = dense(token, p["deccam"]) + cam
    return {"pose": np_rot6d_to_rotmat(pose.reshape(b, 35, 6)), "pose_6d": pose, "betas": betas, "cam": cam}


def random_torch_head(seed=0):
    return random_state(torch_head_shapes(**TINY, context_dim=FEATURE_SHAPE[-1]), seed, scale=0.1)


def tiny_head_and_params(ief_iters=1):
    head = smal_head.SMALHead(**TINY, ief_iters=ief_iters)
    feature_map = np.random.default_rng(1).normal(size=FEATURE_SHAPE).astype(np.float32)
    return head, random_params(head, feature_map), feature_map


def test_full_size_params_follow_the_torch_table():
    head = smal_head.SMALHead()
    feature_map = jax.ShapeDtypeStruct((2, 16, 12, 1280), jnp.float32)
    params = jax.eval_shape(head.init, jax.random.key(0), feature_map)["params"]
    torch_shapes = torch_head_shapes(1024, 6, 8, 64, 1024, 1280)
    placeholders = {k: np.broadcast_to(np.float32(0), s) for k, s in torch_shapes.items()}
    converted = to_flax_variables(placeholders, "smal_head.")  # through animax.convert.keymap
    assert jax.tree.map(np.shape, converted) == jax.tree.map(np.shape, {"params": params})
    assert sum(x.size for x in jax.tree.leaves(params)) == sum(np.prod(s) for s in torch_shapes.values())
    out = jax.eval_shape(head.apply, {"params": params}, feature_map)
    assert {k: v.shape for k, v in out.items()} == {
        "pose": (2, 35, 3, 3), "betas": (2, 41), "cam": (2, 3), "pose_6d": (2, 210),
        "pose_6d_iters": (1, 2, 210), "betas_iters": (1, 2, 41), "cam_iters": (1, 2, 3)}


def test_decoder_layer_matches_numpy_float64():
    layer = smal_head.DecoderLayer(heads=4, dim_head=16, mlp_dim=96)
    rng = np.random.default_rng(2)
    x, context = (rng.normal(size=s).astype(np.float32) for s in ((2, 3, 64), (2, 12, 32)))
    params = random_params(layer, x, context)
    out = layer.apply({"params": params}, x, context)
    ref = np_layer(f64(params), np.asarray(x, np.float64), np.asarray(context, np.float64), 4, 16)
    assert rel_err(out, ref) < f32_tol(*LAYER_STEPS)


def test_head_matches_numpy_float64_over_ief_iterations():
    head, params, feature_map = tiny_head_and_params(ief_iters=3)
    out = jax.jit(head.apply)({"params": params}, feature_map)
    ref = np_head(f64(params), np.asarray(feature_map, np.float64), TINY["depth"], TINY["heads"],
                  TINY["dim_head"], ief_iters=3)
    for key in ("pose_6d", "betas", "cam"):
        assert out[key].dtype == jnp.float32
        assert rel_err(out[key], ref[key]) < f32_tol(*HEAD_STEPS), key
    # Gram-Schmidt amplifies pose_6d's error (relative to its largest entry) per joint.
    six_d = ref["pose_6d"].reshape(-1, 35, 6)
    assert_within(out["pose"], ref["pose"], rot6d_tol(six_d, f32_error(*HEAD_STEPS), scale=np.abs(six_d).max()))
    assert out["pose_6d_iters"].shape == (3, 2, 210)
    np.testing.assert_array_equal(out["pose_6d_iters"][-1], out["pose_6d"])
    np.testing.assert_array_equal(out["betas_iters"][-1], out["betas"])
    np.testing.assert_array_equal(out["cam_iters"][-1], out["cam"])
    # The query token is the same at every step, so each step adds the same update: only the
    # roundings of the two sums differ, at most U |cam| each (x2).
    np.testing.assert_allclose(out["cam_iters"][1] - out["cam_iters"][0],
                               out["cam_iters"][0] - jnp.array([0.9, 0.0, 0.0]), rtol=0,
                               atol=8 * U * np.abs(out["cam_iters"]).max())


def test_decoder_layer_matches_torch():
    sd = random_torch_head()
    g = torch.Generator().manual_seed(5)
    x, context = torch.randn(2, 3, 64, generator=g), torch.randn(2, 12, 32, generator=g)
    prefix = "transformer.transformer.layers.0."
    expected = torch_layer(sd, prefix, x, context, heads=4)
    params = to_flax_variables(sd, "smal_head.")["params"]["transformer"]["layers_0"]
    out = smal_head.DecoderLayer(heads=4, dim_head=16, mlp_dim=96).apply(
        {"params": params}, jnp.asarray(x.numpy()), jnp.asarray(context.numpy()))
    assert rel_err(out, expected.numpy()) < f32_tol(*LAYER_STEPS, sides=2)


def test_head_matches_torch_with_converted_names():
    sd = random_torch_head()
    feature_map = torch.randn(FEATURE_SHAPE[0], FEATURE_SHAPE[3], *FEATURE_SHAPE[1:3],
                              generator=torch.Generator().manual_seed(6))
    expected = torch_head(sd, feature_map, TINY["depth"], TINY["heads"])
    variables = to_flax_variables(sd, "smal_head.")
    out = smal_head.SMALHead(**TINY).apply(variables, jnp.asarray(feature_map.numpy().transpose(0, 2, 3, 1)))
    for key in ("betas", "cam"):
        assert rel_err(out[key], expected[key].numpy()) < f32_tol(*HEAD_STEPS, sides=2), key
    six_d = np.asarray(out["pose_6d"]).reshape(-1, 35, 6)
    assert_within(out["pose"], expected["pose"].numpy(),
                  rot6d_tol(six_d, f32_error(*HEAD_STEPS), scale=np.abs(six_d).max(), sides=2))


def test_pose_is_rotations_and_bfloat16_is_close():
    head, params, feature_map = tiny_head_and_params()
    out32 = head.apply({"params": params}, feature_map)
    rot = np.asarray(out32["pose"], np.float64)
    # Orthonormal up to Gram-Schmidt's own rounding of each joint's float32 6D vector.
    tol = rot6d_tol(np.asarray(out32["pose_6d"]).reshape(-1, 35, 6))
    assert_within(rot @ np.swapaxes(rot, -1, -2), np.broadcast_to(np.eye(3), rot.shape), tol)
    assert_within(np.linalg.det(rot), 1.0, 3 * tol[..., 0, 0])
    out16 = smal_head.SMALHead(**TINY, dtype=jnp.bfloat16).apply({"params": params}, feature_map)
    # Raw outputs: Gram-Schmidt of random 6D vectors can amplify rounding arbitrarily.
    for key in ("pose_6d", "betas", "cam"):
        assert out16[key].dtype == jnp.float32 and np.all(np.isfinite(out16[key]))
        assert rel_err(out16[key], out32[key]) < 5e-2, key


def test_rest_init_starts_from_the_rest_pose():
    """From scratch (`rest_init`): the first prediction is every joint at identity, betas ~0 and
    the initial camera; AniMer's default starts from 6D zeros, i.e. arbitrary rotations."""
    feature_map = np.random.default_rng(1).normal(size=FEATURE_SHAPE).astype(np.float32)
    head = smal_head.SMALHead(**TINY, rest_init=True)
    out = head.apply(head.init(jax.random.PRNGKey(0), feature_map), feature_map)
    angles = np.degrees(np.arccos(np.clip((np.trace(np.asarray(out["pose"], np.float64), axis1=-2, axis2=-1) - 1) / 2,
                                          -1, 1)))
    assert angles.max() < 3.0, angles.max()
    assert np.abs(np.asarray(out["betas"])).max() < 0.05
    np.testing.assert_allclose(out["cam"], np.tile([0.9, 0.0, 0.0], (FEATURE_SHAPE[0], 1)), atol=0.05)
    default = smal_head.SMALHead(**TINY)
    out = default.apply(default.init(jax.random.PRNGKey(0), feature_map), feature_map)
    angles = np.arccos(np.clip((np.trace(np.asarray(out["pose"], np.float64), axis1=-2, axis2=-1) - 1) / 2, -1, 1))
    assert np.degrees(angles).mean() > 30.0
