"""The ViT backbone matches float64 NumPy and PyTorch forwards written from the ViTPose recipe."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from animax.models import vit
from helpers.nn_reference import U, f32_tol, f64, np_block, np_vit, random_params, rel_err, vit_block_steps
from helpers.torch_reference import random_state, to_flax_variables, torch_block, torch_vit, torch_vit_shapes

# float32 results against an independent reference: CI runs these again on SSE4.2 kernels.
pytestmark = pytest.mark.float32

TINY = dict(width=64, depth=2, num_heads=4, mlp_dim=256)
IMAGE_SHAPE = (2, 64, 48, 3)  # padding 2 -> a 4 x 3 token grid
BLOCK_STEPS = vit_block_steps(64, 4, 256, 13)  # float32 steps for f32_tol
# The tiny ViT: 16 x 16 x 3 patch embedding, position add, two blocks over 13 tokens, last_norm.
VIT_STEPS = (16 * 16 * 3, 1, *BLOCK_STEPS * TINY["depth"], 64, 64, 1)


@pytest.fixture(scope="module")
def tiny():
    """(model, random float32 params, images) of a width-64 depth-2 ViT."""
    model = vit.ViT(**TINY)
    images = np.random.default_rng(1).normal(size=IMAGE_SHAPE).astype(np.float32)
    return model, random_params(model, images), images


def test_decode_variant():
    assert vit.decode_variant("H/16") == dict(width=1280, depth=32, num_heads=16, mlp_dim=5120, patch_size=16)
    assert vit.decode_variant("L/16") == dict(width=1024, depth=24, num_heads=16, mlp_dim=4096, patch_size=16)
    assert vit.decode_variant("B/16") == dict(width=768, depth=12, num_heads=12, mlp_dim=3072, patch_size=16)
    assert vit.decode_variant("S/16") == dict(width=384, depth=12, num_heads=6, mlp_dim=1536, patch_size=16)
    assert vit.decode_variant("Ti/16") == dict(width=192, depth=12, num_heads=3, mlp_dim=768, patch_size=16)
    assert vit.Model("Ti/16", depth=2) == vit.ViT(width=192, depth=2, num_heads=3, mlp_dim=768, patch_size=16)


def test_vit_h16_param_count_and_output_shapes():
    model = vit.Model("H/16")
    images = jax.ShapeDtypeStruct((2, 256, 192, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    assert sum(x.size for x in jax.tree.leaves(variables)) == 630_913_280
    p = variables["params"]
    assert p["patch_embed"]["proj"]["kernel"].shape == (16, 16, 3, 1280)
    assert p["pos_embed"].shape == (1, 193, 1280) and p["cls_token"].shape == (1, 1, 1280)
    assert p["blocks_31"]["attn"]["qkv"]["kernel"].shape == (1280, 3840)
    assert p["blocks_31"]["mlp"]["fc1"]["kernel"].shape == (1280, 5120)
    torch_shapes = {k: np.broadcast_to(np.float32(0), s) for k, s in torch_vit_shapes(1280, 32, 5120, 192).items()}
    converted = to_flax_variables(torch_shapes, "backbone.")  # through animax.convert.keymap
    assert jax.tree.map(np.shape, converted) == jax.tree.map(np.shape, variables)
    out = jax.eval_shape(model.apply, variables, images)
    assert {k: v.shape for k, v in out.items()} == {
        "feature_map": (2, 16, 12, 1280), "cls_token": (2, 1280), "patch_tokens": (2, 192, 1280)}


def test_block_matches_numpy_float64():
    block = vit.Block(num_heads=4, mlp_dim=256)
    x = np.random.default_rng(2).normal(size=(2, 13, 64)).astype(np.float32)
    params = random_params(block, x, 0.0, True)
    out, _ = block.apply({"params": params}, x, 0.0, True)
    assert rel_err(out, np_block(f64(params), np.asarray(x, np.float64), 4)) < f32_tol(*BLOCK_STEPS)


def test_tiny_vit_matches_numpy_float64(tiny):
    model, params, images = tiny
    out = model.apply({"params": params}, images)
    ref = np_vit(f64(params), np.asarray(images, np.float64), TINY["num_heads"], TINY["depth"])
    assert out["feature_map"].shape == (2, 4, 3, 64)
    for key in ("feature_map", "cls_token", "patch_tokens"):
        assert out[key].dtype == jnp.float32
        assert rel_err(out[key], ref[key]) < f32_tol(*VIT_STEPS), key


def test_block_matches_torch():
    sd = random_state(torch_vit_shapes(64, 1, 256, tokens=12))
    x = torch.randn(2, 13, 64, generator=torch.Generator().manual_seed(3))
    expected = torch_block(sd, "blocks.0.", x, heads=4)
    params = to_flax_variables(sd, "backbone.")["params"]["blocks_0"]
    out, _ = vit.Block(num_heads=4, mlp_dim=256).apply({"params": params}, jnp.asarray(x.numpy()), 0.0, True)
    assert rel_err(out, expected.numpy()) < f32_tol(*BLOCK_STEPS, sides=2)


def test_tiny_vit_matches_torch_with_converted_names():
    sd = random_state(torch_vit_shapes(64, 2, 256, tokens=12))
    images = torch.randn(2, 3, 64, 48, generator=torch.Generator().manual_seed(4))
    feature_map, cls_token = torch_vit(sd, images, heads=4, depth=2)
    nhwc = jnp.asarray(images.numpy().transpose(0, 2, 3, 1))
    out = vit.ViT(**TINY).apply(to_flax_variables(sd, "backbone."), nhwc)
    assert rel_err(out["feature_map"], feature_map.numpy().transpose(0, 2, 3, 1)) < f32_tol(*VIT_STEPS, sides=2)
    assert rel_err(out["cls_token"], cls_token.numpy()) < f32_tol(*VIT_STEPS, sides=2)


def test_scanned_layout_matches_unscanned_and_round_trips(tiny):
    model, params, images = tiny
    scanned_model = vit.ViT(**TINY, scan_blocks=True)
    stacked = vit.stack_blocks(params)
    init_shapes = jax.eval_shape(scanned_model.init, jax.random.key(0), images)["params"]
    assert jax.tree.map(jnp.shape, stacked) == jax.tree.map(jnp.shape, init_shapes)
    assert stacked["blocks"]["attn"]["qkv"]["kernel"].shape == (2, 64, 192)
    jax.tree.map(np.testing.assert_array_equal, vit.unstack_blocks(stacked), params)
    out, out_scanned = model.apply({"params": params}, images), scanned_model.apply({"params": stacked}, images)
    for key in out:  # a scan compiles the blocks apart: other fusions, not bitwise the unrolled result
        assert rel_err(out_scanned[key], out[key]) < f32_tol(*VIT_STEPS, sides=2), key


def test_remat_changes_nothing_but_memory(tiny):
    model, params, images = tiny

    def loss(m, p):
        return jnp.sum(m.apply({"params": p}, images)["feature_map"] ** 2)

    remat = vit.ViT(**TINY, remat=True)
    # A sum of 2 x 12 x 64 squares: twice the features' relative error, plus the sum's own.
    loss_tol = f32_tol(*VIT_STEPS, cond=2, sides=2) + f32_tol(2 * 12 * 64)
    np.testing.assert_allclose(loss(remat, params), loss(model, params), rtol=loss_tol)
    grads = jax.jit(jax.grad(lambda p: loss(model, p)))(params)
    # Backward: the forward's steps again, transposed, and the kernels' sums over 2 x 13 tokens.
    grad_tol = f32_tol(*VIT_STEPS, *VIT_STEPS, 2 * 13, sides=2)
    for policy in ("full", "dots"):
        scanned_remat = vit.ViT(**TINY, scan_blocks=True, remat=policy)
        grads_remat = jax.jit(jax.grad(lambda p: loss(scanned_remat, p)))(vit.stack_blocks(params))
        grads_remat = vit.unstack_blocks(grads_remat)
        assert max(jax.tree.leaves(jax.tree.map(rel_err, grads_remat, grads))) < grad_tol, policy
    with pytest.raises(ValueError, match="remat must be one of"):
        vit.ViT(**TINY, remat="some").apply({"params": params}, images)


def test_bfloat16_compute_is_finite_and_close(tiny):
    model, params, images = tiny
    out32 = model.apply({"params": params}, images)
    out16 = vit.ViT(**TINY, dtype=jnp.bfloat16).apply({"params": params}, images)
    for key in out32:
        assert out16[key].dtype == jnp.float32  # last_norm runs in float32
        assert np.all(np.isfinite(out16[key]))
        assert rel_err(out16[key], out32[key]) < 3e-2, key


@pytest.mark.parametrize("scan_blocks", [False, True])
def test_drop_path_only_in_training(tiny, scan_blocks):
    _, params, images = tiny
    variables = {"params": vit.stack_blocks(params) if scan_blocks else params}
    plain = vit.ViT(**TINY, scan_blocks=scan_blocks)
    dropping = vit.ViT(**TINY, drop_path_rate=0.5, scan_blocks=scan_blocks)

    @jax.jit
    def train(seed):
        return dropping.apply(variables, images, train=True, rngs={"dropout": jax.random.key(seed)})["cls_token"]

    eval_out = dropping.apply(variables, images)["cls_token"]  # no rng needed
    np.testing.assert_array_equal(eval_out, plain.apply(variables, images)["cls_token"])
    np.testing.assert_array_equal(train(0), train(0))
    assert not np.allclose(train(0), train(1))
    assert not np.allclose(train(0), eval_out)


def test_drop_path_rate_extremes():
    """Rate 1 drops both residual branches (identity block); rate 0 in training is the eval block."""
    block = vit.Block(num_heads=4, mlp_dim=256)
    x = np.random.default_rng(2).normal(size=(4, 5, 64)).astype(np.float32)
    variables = {"params": random_params(block, x, 0.0, True)}
    rngs = {"dropout": jax.random.key(3)}
    np.testing.assert_array_equal(block.apply(variables, x, 1.0, False, rngs=rngs)[0], x)
    # Bitwise: the same eager ops on the same shapes, plus exact ones (y / 1.0, an all-true where).
    np.testing.assert_array_equal(block.apply(variables, x, 0.0, False, rngs=rngs)[0],
                                  block.apply(variables, x, 0.0, True)[0])


def test_position_code_starts_each_token_at_its_grid_place():
    """The from-scratch pos_embed: row 0 zero; the code of (r, c) is sines and cosines, so two
    tokens' codes have the dot product sum_k cos((r - r') w_k) + cos((c - c') w_k): it depends on
    their offset only, and is largest for the token itself."""
    h, w, channels = 16, 12, 192
    code = vit.sincos_pos_embed(h, w, channels)
    assert code.shape == (1, 1 + h * w, channels) and not code[0, 0].any()
    grid = code[0, 1:].astype(np.float64).reshape(h, w, channels)
    omega = 1.0 / 10000.0 ** (np.arange(channels // 4) / (channels // 4))
    for (r, c), (r2, c2) in [((0, 0), (3, 5)), ((7, 2), (7, 2)), ((15, 11), (2, 9))]:
        expected = np.cos((r - r2) * omega).sum() + np.cos((c - c2) * omega).sum()
        # float64 dot of float32-rounded entries |.| <= 1: at most 2 U per product (a hard bound).
        np.testing.assert_allclose(grid[r, c] @ grid[r2, c2], expected, rtol=0, atol=2 * channels * U)
    gram = grid.reshape(h * w, channels) @ grid.reshape(h * w, channels).T
    assert np.all(np.argmax(gram, axis=1) == np.arange(h * w))
    params = vit.Model("Ti/16", depth=1).init(jax.random.PRNGKey(0), jnp.zeros((1, 256, 192, 3)))["params"]
    np.testing.assert_array_equal(params["pos_embed"], code)


STEM = (4, 8, 8, 16)  # four halvings: 64 x 48 -> 4 x 3, the patch embedding's grid


def test_conv_stem_matches_numpy_float64():
    model = vit.ViT(**TINY, conv_stem=STEM)
    images = np.random.default_rng(4).normal(size=IMAGE_SHAPE).astype(np.float32)
    params = random_params(model, images)   # the projection random too, not its zero start
    out = model.apply({"params": params}, images)
    ref = np_vit(f64(params), np.asarray(images, np.float64), TINY["num_heads"], TINY["depth"])
    # The stem's steps (each 3 x 3 tap sum over its input channels, GELU; the projection) run
    # beside the patch embedding and enter the sum.
    stem_steps = [9 * c for c in (3, *STEM[:-1])] + [1] * len(STEM) + [STEM[-1], 1]
    for key in ("feature_map", "cls_token"):
        assert rel_err(out[key], ref[key]) < f32_tol(*VIT_STEPS, *stem_steps), key


def test_conv_stem_starts_as_a_no_op_and_is_trained():
    images = jnp.asarray(np.random.default_rng(5).normal(size=IMAGE_SHAPE), jnp.float32)
    stemmed, plain = vit.ViT(**TINY, conv_stem=STEM), vit.ViT(**TINY)
    params = stemmed.init(jax.random.key(0), images)["params"]
    assert (params["conv_stem"]["proj"]["kernel"].shape == (1, 1, 16, 64)
            and not params["conv_stem"]["proj"]["kernel"].any())
    without = {k: v for k, v in params.items() if k != "conv_stem"}
    np.testing.assert_array_equal(stemmed.apply({"params": params}, images)["feature_map"],
                                  plain.apply({"params": without}, images)["feature_map"])

    def loss(p):
        return jnp.sum(stemmed.apply({"params": p}, images)["feature_map"] ** 2)

    grads = jax.grad(loss)(params)["conv_stem"]
    # The projection learns from the first step; the convolutions behind it once it is non-zero.
    assert float(jnp.abs(grads["proj"]["kernel"]).max()) > 0 and not grads["conv_0"]["kernel"].any()


def test_conv_stem_must_reach_the_token_grid():
    with pytest.raises(ValueError, match="conv_stem: 3 halvings"):
        vit.ViT(**TINY, conv_stem=(4, 8, 8)).init(jax.random.key(0), jnp.zeros(IMAGE_SHAPE))


def test_fused_attention_layout_equals_the_hand_written_attention():
    """jax.nn.dot_product_attention in the layout the ViT hands cuDNN ([B, N, H, D], q scaled,
    scale 1), run by XLA, equals `attention` in float32 at HIGHEST precision. Bound: the logits
    sum D products (D U S each, S = max_q,k sum_d |q_d k_d|); softmax moves each weight by at most
    the logits' error; the output sums K weighted values: 4 U (D S + K + 4) max|v|. A head
    mix-up or a second scaling is far outside it."""
    rng = np.random.default_rng(0)
    b, n, h, d = 2, 193, 4, 80
    q, k, v = (jnp.asarray(rng.normal(size=(b, n, h, d)), jnp.float32) for _ in range(3))
    q = q * d**-0.5
    with jax.default_matmul_precision("highest"):
        expected = np.asarray(vit.attention(q, k, v))
        got = np.asarray(vit.fused_attention(q, k, v, "xla"))
        swapped = np.asarray(vit.fused_attention(q, k[:, :, ::-1], v, "xla"))
    s = float(np.einsum("bqhd,bkhd->bhqk", np.abs(q), np.abs(k)).max())
    bound = 4 * U * (d * s + n + 4) * float(np.abs(v).max())
    assert np.abs(got - expected).max() <= bound
    assert np.abs(swapped - expected).max() > 100 * bound
    # cuDNN only where it has a kernel: a GPU in half precision.
    assert vit.attention_implementation(jnp.float32) is None
    assert vit.attention_implementation(jnp.bfloat16) == ("cudnn" if jax.default_backend() == "gpu" else None)
