"""The SMAL head matches float64 NumPy and PyTorch forwards written from AniMer's decoder recipe."""

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from animax.models import smal_head
from nn_reference import attention, dense, f64, gelu, layer_norm, random_params, rel_err, split_heads

TINY = dict(dim=64, depth=2, heads=4, dim_head=16, mlp_dim=96)
FEATURE_SHAPE = (2, 4, 3, 32)  # [B, h, w, context_dim]


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


def torch_attention(q, k, v, heads):
    """AniMer's attention core: split (heads, dim_head) from the last axis, scale the logits."""
    q, k, v = (t.reshape(*t.shape[:2], heads, -1).transpose(1, 2) for t in (q, k, v))
    dots = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    out = dots.softmax(-1) @ v
    return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


def torch_layer(sd, prefix, x, context, heads):
    """`layers.i` of AniMer's TransformerCrossAttn with torch.nn.functional. x [B, N, D]."""
    def norm(i, t):
        return F.layer_norm(t, (t.shape[-1],), sd[f"{prefix}{i}.norm.weight"], sd[f"{prefix}{i}.norm.bias"])

    def linear(name, t):
        return F.linear(t, sd[prefix + name + ".weight"], sd.get(prefix + name + ".bias"))

    q, k, v = linear("0.fn.to_qkv", norm(0, x)).chunk(3, dim=-1)
    x = linear("0.fn.to_out.0", torch_attention(q, k, v, heads)) + x
    k, v = linear("1.fn.to_kv", context).chunk(2, dim=-1)
    x = linear("1.fn.to_out.0", torch_attention(linear("1.fn.to_q", norm(1, x)), k, v, heads)) + x
    return linear("2.fn.net.3", F.gelu(linear("2.fn.net.0", norm(2, x)))) + x


def torch_head(sd, feature_map, depth, heads):
    """AniMer's SMALTransformerDecoderHead (one IEF step) on a torch-layout state dict. feature_map NCHW."""
    b = feature_map.shape[0]
    context = feature_map.flatten(2).transpose(1, 2)
    x = F.linear(torch.zeros(b, 1, 1), sd["transformer.to_token_embedding.weight"],
                 sd["transformer.to_token_embedding.bias"]) + sd["transformer.pos_embedding"]
    for i in range(depth):
        x = torch_layer(sd, f"transformer.transformer.layers.{i}.", x, context, heads)
    token = x[:, 0]
    pose = F.linear(token, sd["decpose.weight"], sd["decpose.bias"]) + torch.zeros(1, 210)
    betas = F.linear(token, sd["decshape.weight"], sd["decshape.bias"]) + torch.zeros(1, 41)
    cam = F.linear(token, sd["deccam.weight"], sd["deccam.bias"]) + torch.tensor([[0.9, 0.0, 0.0]])
    a = pose.reshape(-1, 2, 3).permute(0, 2, 1)
    b1 = F.normalize(a[:, :, 0])
    b2 = F.normalize(a[:, :, 1] - (b1 * a[:, :, 1]).sum(-1, keepdim=True) * b1)
    rotmat = torch.stack([b1, b2, torch.cross(b1, b2, dim=-1)], dim=-1).reshape(b, 35, 3, 3)
    return {"pose": rotmat, "betas": betas, "cam": cam}


def torch_head_shapes(dim, depth, heads, dim_head, mlp_dim, context_dim):
    """AniMer `smal_head.*` state-dict shapes (parameters only; the init_* buffers are constants)."""
    inner = heads * dim_head
    shapes = {"transformer.to_token_embedding.weight": (dim, 1), "transformer.to_token_embedding.bias": (dim,),
              "transformer.pos_embedding": (1, 1, dim),
              "decpose.weight": (210, dim), "decpose.bias": (210,), "decshape.weight": (41, dim),
              "decshape.bias": (41,), "deccam.weight": (3, dim), "deccam.bias": (3,)}
    for i in range(depth):
        for name, shape in {"0.norm.weight": (dim,), "0.norm.bias": (dim,), "0.fn.to_qkv.weight": (3 * inner, dim),
                            "0.fn.to_out.0.weight": (dim, inner), "0.fn.to_out.0.bias": (dim,),
                            "1.norm.weight": (dim,), "1.norm.bias": (dim,), "1.fn.to_q.weight": (inner, dim),
                            "1.fn.to_kv.weight": (2 * inner, context_dim),
                            "1.fn.to_out.0.weight": (dim, inner), "1.fn.to_out.0.bias": (dim,),
                            "2.norm.weight": (dim,), "2.norm.bias": (dim,),
                            "2.fn.net.0.weight": (mlp_dim, dim), "2.fn.net.0.bias": (mlp_dim,),
                            "2.fn.net.3.weight": (dim, mlp_dim), "2.fn.net.3.bias": (dim,)}.items():
            shapes[f"transformer.transformer.layers.{i}.{name}"] = shape
    return shapes


def torch_layer_to_flax(sd, prefix):
    """The module docstring's table for `layers.i`: Linear weight.T -> kernel, LayerNorm weight -> scale."""
    def linear(name):
        kernel = {"kernel": sd[prefix + name + ".weight"].T}
        return {**kernel, "bias": sd[prefix + name + ".bias"]} if prefix + name + ".bias" in sd else kernel

    def norm(i):
        return {"scale": sd[f"{prefix}{i}.norm.weight"], "bias": sd[f"{prefix}{i}.norm.bias"]}

    return {"self_attn": {"norm": norm(0), "to_qkv": linear("0.fn.to_qkv"), "to_out": linear("0.fn.to_out.0")},
            "cross_attn": {"norm": norm(1), "to_q": linear("1.fn.to_q"), "to_kv": linear("1.fn.to_kv"),
                           "to_out": linear("1.fn.to_out.0")},
            "ff": {"norm": norm(2), "fc1": linear("2.fn.net.0"), "fc2": linear("2.fn.net.3")}}


def torch_head_to_flax(sd, depth):
    """The whole table, on a dict of NumPy arrays with AniMer's names (no `smal_head.`)."""
    def linear(name):
        return {"kernel": sd[name + ".weight"].T, "bias": sd[name + ".bias"]}

    return {"transformer": {"to_token_embedding": linear("transformer.to_token_embedding"),
                            "pos_embedding": sd["transformer.pos_embedding"],
                            **{f"layers_{i}": torch_layer_to_flax(sd, f"transformer.transformer.layers.{i}.")
                               for i in range(depth)}},
            "decpose": linear("decpose"), "decshape": linear("decshape"), "deccam": linear("deccam")}


def random_torch_head(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch_head_shapes(**TINY, context_dim=FEATURE_SHAPE[-1])
    sd = {k: 0.1 * torch.randn(s, generator=g) for k, s in shapes.items()}
    for k in sd:
        if k.endswith("norm.weight"):
            sd[k] += 1.0
    return sd


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
    assert jax.tree.map(np.shape, torch_head_to_flax(placeholders, 6)) == jax.tree.map(np.shape, params)
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
    assert rel_err(out, ref) < 1e-5


def test_head_matches_numpy_float64_over_ief_iterations():
    head, params, feature_map = tiny_head_and_params(ief_iters=3)
    out = jax.jit(head.apply)({"params": params}, feature_map)
    ref = np_head(f64(params), np.asarray(feature_map, np.float64), TINY["depth"], TINY["heads"],
                  TINY["dim_head"], ief_iters=3)
    for key in ("pose", "pose_6d", "betas", "cam"):
        assert out[key].dtype == jnp.float32
        assert rel_err(out[key], ref[key]) < 1e-5, key
    assert out["pose_6d_iters"].shape == (3, 2, 210)
    np.testing.assert_array_equal(out["pose_6d_iters"][-1], out["pose_6d"])
    np.testing.assert_array_equal(out["betas_iters"][-1], out["betas"])
    np.testing.assert_array_equal(out["cam_iters"][-1], out["cam"])
    # The query token is the same at every step, so each step adds the same update.
    np.testing.assert_allclose(out["cam_iters"][1] - out["cam_iters"][0],
                               out["cam_iters"][0] - jnp.array([0.9, 0.0, 0.0]), rtol=1e-5, atol=1e-6)


def test_decoder_layer_matches_torch():
    sd = random_torch_head()
    g = torch.Generator().manual_seed(5)
    x, context = torch.randn(2, 3, 64, generator=g), torch.randn(2, 12, 32, generator=g)
    prefix = "transformer.transformer.layers.0."
    expected = torch_layer(sd, prefix, x, context, heads=4)
    params = torch_layer_to_flax({k: v.numpy() for k, v in sd.items()}, prefix)
    out = smal_head.DecoderLayer(heads=4, dim_head=16, mlp_dim=96).apply(
        {"params": params}, jnp.asarray(x.numpy()), jnp.asarray(context.numpy()))
    assert rel_err(out, expected.numpy()) < 1e-5


def test_head_matches_torch_with_converted_names():
    sd = random_torch_head()
    feature_map = torch.randn(FEATURE_SHAPE[0], FEATURE_SHAPE[3], *FEATURE_SHAPE[1:3],
                              generator=torch.Generator().manual_seed(6))
    expected = torch_head(sd, feature_map, TINY["depth"], TINY["heads"])
    params = torch_head_to_flax({k: v.numpy() for k, v in sd.items()}, TINY["depth"])
    out = smal_head.SMALHead(**TINY).apply({"params": params}, jnp.asarray(feature_map.numpy().transpose(0, 2, 3, 1)))
    for key in ("pose", "betas", "cam"):
        assert rel_err(out[key], expected[key].numpy()) < 1e-5, key


def test_pose_is_rotations_and_bfloat16_is_close():
    head, params, feature_map = tiny_head_and_params()
    out32 = head.apply({"params": params}, feature_map)
    rot = np.asarray(out32["pose"], np.float64)
    np.testing.assert_allclose(rot @ np.swapaxes(rot, -1, -2), np.broadcast_to(np.eye(3), rot.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-5)
    out16 = smal_head.SMALHead(**TINY, dtype=jnp.bfloat16).apply({"params": params}, feature_map)
    # Raw outputs: Gram-Schmidt of random 6D vectors can amplify rounding arbitrarily.
    for key in ("pose_6d", "betas", "cam"):
        assert out16[key].dtype == jnp.float32 and np.all(np.isfinite(out16[key]))
        assert rel_err(out16[key], out32[key]) < 5e-2, key
