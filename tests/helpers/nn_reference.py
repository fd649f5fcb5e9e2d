"""Float64 NumPy building blocks and random parameters for checking the Flax networks, and the float32
error model the tests' tolerances come from (not a test)."""

import itertools

import jax
import numpy as np
from scipy.special import erf

from animax.models import vit

# Float32 error model: the one home for the tolerances of float32 results.
U = 2.0**-24  # float32 unit roundoff (eps / 2): one rounding errs by at most U relative


def f32_error(*sizes, cond=1.0):
    """Typical float32 error of a chain of steps, relative to the scale of the values (rel_err's metric).

    A step summing n terms (a dot product, a matmul, a mean) errs by ~sqrt(n) U times the scale
    of its terms: rounding errors add like a random walk (Higham & Mary's probabilistic bound;
    n U is the worst case). Each step also rounds its result (+U; size 1 = an elementwise step).
    Chained steps add (random weights of scale 1/sqrt(fan_in) keep values O(1)); `cond`
    multiplies for steps that amplify errors (cancellation, dividing by small numbers).
    """
    return cond * U * sum(np.sqrt(n) + 1.0 for n in sizes)


def f32_tol(*sizes, cond=1.0, sides=1, margin=4.0):
    """`margin` x f32_error: the bound for a float32 result against a float64 reference (sides=1),
    or against another float32 computation of the same maths (sides=2: other kernels, batch size,
    jit, scan, torch, another CPU), whose results are not bitwise equal."""
    return margin * sides * f32_error(*sizes, cond=cond)


def vit_block_steps(width, heads, mlp_dim, tokens):
    """f32_error steps of a ViT block: LayerNorm (mean, variance, scale), qkv, logits, softmax (exp,
    sum), weights @ v, proj and its residual, LayerNorm, fc1, GELU, fc2 and its residual."""
    norm = (width, width, 1)
    return (*norm, width, width // heads, 1, tokens, tokens, width, 1, *norm, width, 1, mlp_dim, 1)


def decoder_layer_steps(dim, heads, dim_head, mlp_dim, tokens, context_tokens, context_dim):
    """f32_error steps of a SMAL-head decoder layer: LayerNorm, qkv, logits, softmax, weights @ v,
    to_out, residual; LayerNorm, to_q, to_kv, the same attention over the context; LayerNorm, fc1,
    GELU, fc2, residual."""
    norm, inner = (dim, dim, 1), heads * dim_head
    return (*norm, dim, dim_head, 1, tokens, tokens, inner, 1,
            *norm, dim, context_dim, dim_head, 1, context_tokens, context_tokens, inner, 1,
            *norm, dim, 1, mlp_dim, 1)


def lbs_steps(num_betas=41, joints_per_vertex=35, chain_depth=10):
    """f32_error steps of smal_forward: shape (num_betas, vertices and joints) and pose (306 features)
    blend shapes, the kinematic chain (3-term rotation and translation products per level), the
    offsets, the blend of a vertex's joint transforms and its 3-term transform. Zero terms round
    nothing: skinning weights count the joints they hold."""
    return (num_betas, 1, 306, 1, *(3, 3) * chain_depth, 3, joints_per_vertex, 3, 1, 1)


def backbone_steps(model, tokens=193):
    """f32_error steps of the ViT (model = config.model) to its feature map: patch embedding and
    position, `depth` blocks, the final LayerNorm."""
    v = {**vit.decode_variant(model.variant), "depth": model.depth}
    width = v["width"]
    return (16 * 16 * 3, 1, *vit_block_steps(width, v["num_heads"], v["mlp_dim"], tokens) * v["depth"],
            width, width, 1)


def head_steps(model, tokens=193):
    """f32_error steps of backbone_steps and then the SMAL head's token, decoder layers over the
    feature map and readouts, once per IEF iteration: its betas, cam and pose_6d."""
    width, head = vit.decode_variant(model.variant)["width"], model.smal_head
    layer = decoder_layer_steps(head.dim, head.heads, head.dim_head, head.mlp_dim, 1, tokens - 1, width)
    return (*backbone_steps(model, tokens), 1, 1, *layer * head.depth, head.dim, *(1,) * head.ief_iters)


def pipeline_steps(model, tokens=193):
    """f32_error steps of build_model(config) (model = config.model) through its longest path, to the
    fused features: ViT, SMAL head and readouts, LBS and projection, the head crop's conv stages
    (3 x 3 x channels terms, GroupNorm), pooling and projection, and the fusion MLP."""
    width, enc = vit.decode_variant(model.variant)["width"], model.head_encoder
    steps = [*head_steps(model, tokens), *lbs_steps(), 3, 1]
    channels, side = (3, *enc.widths), enc.crop
    for c_in, c_out in itertools.pairwise(channels):
        side //= 2  # stride 2; GroupNorm's statistics sum over the side^2 pixels of 4-channel groups
        steps += [9 * c_in, 1, 4 * side**2, 4 * side**2, 1]
    steps += [side**2, enc.widths[-1], 1]
    features = width + enc.features + 41 + 35 * 9 + 3
    return (*steps, features, features, 1, features, 1, model.fusion.hidden)


def assert_matches_animer(out, ref, model, keys=("feature_map", "cls_token", "betas", "pose", "cam")):
    """A converted model's outputs `out` against AniMer's float32 PyTorch forward `ref` (NumPy,
    channels last, with the raw 6D pose as "pose_6d"), each within the two-sided float32 bound of
    its own path (model = config.model): the ViT's for its features, the head's for betas and cam,
    and per joint through rot6d's Gram-Schmidt for pose (and LBS after it for vertices): a nearly
    degenerate 6D vector amplifies the head's rounding, which is why one fixed tolerance fits one
    CPU's kernels and not another's."""
    if "pose" in keys or "vertices" in keys:
        six_d = np.asarray(ref["pose_6d"], np.float64).reshape(-1, 35, 6)
        pose_tol = rot6d_tol(six_d, f32_error(*head_steps(model)), scale=np.abs(six_d).max(), sides=2)
    for key in keys:
        if key in ("feature_map", "cls_token"):
            assert rel_err(out[key], ref[key]) < f32_tol(*backbone_steps(model), sides=2), key
        elif key == "pose":
            assert_within(out[key], ref[key], pose_tol, key)
        elif key == "vertices":  # pose errors through LBS (rotations act on O(1) offsets)
            assert rel_err(out[key], ref[key]) < f32_tol(*lbs_steps(), sides=2) + pose_tol.max(), key
        else:
            assert rel_err(out[key], ref[key]) < f32_tol(*head_steps(model), sides=2), key


def rot6d_condition(x, scale=None):
    """Per 6D vector x [..., 6] (columns a1 = x[..., :3], a2 = x[..., 3:]): how much rot6d's
    Gram-Schmidt amplifies errors of x, scale / min(|a1|, |a2 - (b1 . a2) b1|). scale: the size
    the errors of x are relative to; default each vector's own max(|a1|, |a2|)."""
    x = np.asarray(x, np.float64)
    a1, a2 = x[..., :3], x[..., 3:6]
    n1 = np.linalg.norm(a1, axis=-1)
    perp = a2 - np.sum(a1 * a2, -1, keepdims=True) * a1 / n1[..., None] ** 2
    if scale is None:
        scale = np.maximum(n1, np.linalg.norm(a2, axis=-1))
    return scale / np.minimum(n1, np.linalg.norm(perp, axis=-1))


def rot6d_tol(x, input_error=U, scale=None, sides=1, margin=4.0):
    """Per-vector bound on the rotation entries of rot6d_to_rotmat(x) [..., 1, 1] (entries are O(1)):
    the input's relative error plus Gram-Schmidt's own few roundings (~3 U per column), amplified by
    rot6d_condition, and ~6 U for the normalisations and the cross product."""
    cond = rot6d_condition(x, scale)
    return (margin * sides * (cond * (input_error + 3 * U) + 6 * U))[..., None, None]


def assert_within(actual, desired, bound, err_msg=""):
    """|actual - desired| <= bound elementwise, for a bound that varies (per sample, per element)."""
    error = np.abs(np.asarray(actual, np.float64) - np.asarray(desired, np.float64))
    bound = np.broadcast_to(np.asarray(bound, np.float64), error.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        worst = np.unravel_index(np.argmax(np.where(error > bound, np.inf, error / bound)), error.shape)
    where = tuple(int(i) for i in worst)
    assert error[worst] <= bound[worst], f"error {error[worst]:.3g} > bound {bound[worst]:.3g} at {where} {err_msg}"


def f64(tree):
    """A param tree (nested dicts of arrays) as float64 NumPy arrays."""
    if isinstance(tree, dict):
        return {k: f64(v) for k, v in tree.items()}
    return np.asarray(tree, np.float64)


def rel_err(actual, expected):
    """max |actual - expected| / max |expected|."""
    expected = np.asarray(expected, np.float64)
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected)) / np.max(np.abs(expected)))


def dense(x, p):
    return x @ p["kernel"] + p["bias"] if "bias" in p else x @ p["kernel"]


def layer_norm(x, p, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def gelu(x):
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def attention(q, k, v):
    """Unscaled softmax attention. q [B, Q, H, D], k and v [B, K, H, D] -> [B, Q, H * D]."""
    logits = np.einsum("bqhd,bkhd->bhqk", q, k)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", weights, v)
    return out.reshape(*out.shape[:2], -1)


def split_heads(x, heads):
    return x.reshape(*x.shape[:-1], heads, x.shape[-1] // heads)


def random_params(module, *args, seed=0, **kwargs):
    """Random float32 params of `module` for inputs `args`, without running (compiling) its init.

    Kernels ~ N(0, 1 / fan_in), LayerNorm/BatchNorm scales ~ 1 + N(0, 0.05^2), the rest ~ N(0, 0.05^2),
    so activations stay O(1) and no scale or bias is a trivial 1 or 0.
    """
    rng = np.random.default_rng(seed)
    # Closing over args keeps Python scalars (flags, rates) static.
    shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))["params"]

    def fill(path, leaf):
        name = path[-1].key
        noise = rng.normal(0.0, 1.0, leaf.shape)
        if name == "kernel":
            return (noise / np.sqrt(np.prod(leaf.shape[:-1]))).astype(np.float32)
        return ((name == "scale") + 0.05 * noise).astype(np.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def np_block(p, x, heads):
    """ViTPose block in float64 NumPy. x [B, N, W]."""
    head_dim = x.shape[-1] // heads
    qkv = dense(layer_norm(x, p["norm1"], 1e-6), p["attn"]["qkv"])
    q, k, v = (split_heads(t, heads) for t in np.split(qkv, 3, axis=-1))
    x = x + dense(attention(q / np.sqrt(head_dim), k, v), p["attn"]["proj"])
    return x + dense(gelu(dense(layer_norm(x, p["norm2"], 1e-6), p["mlp"]["fc1"])), p["mlp"]["fc2"])


def np_conv_stem(p, images):
    """ViT.conv_stem in float64 NumPy: 3 x 3 stride-2 convolutions (zero padding 1) with exact GELU,
    each output pixel summed over its nine taps, then the 1 x 1 projection."""
    x = images
    for i in range(len(p) - 1):
        kernel, bias = p[f"conv_{i}"]["kernel"], p[f"conv_{i}"]["bias"]
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        h, w = (x.shape[1] + 1) // 2, (x.shape[2] + 1) // 2
        x = bias + sum(padded[:, dy:dy + 2 * h:2, dx:dx + 2 * w:2] @ kernel[dy, dx]
                       for dy in range(3) for dx in range(3))
        x = gelu(x)
    return x @ p["proj"]["kernel"][0, 0] + p["proj"]["bias"]


def np_vit(p, images, heads, depth, patch=16, pad=2):
    """Whole backbone in float64 NumPy; the padded convolution as patches of the padded image."""
    img = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    b, hp, wp, c = img.shape
    h, w = (hp - patch) // patch + 1, (wp - patch) // patch + 1
    patches = img[:, :h * patch, :w * patch].reshape(b, h, patch, w, patch, c)
    x = np.einsum("bipjqc,pqcd->bijd", patches, p["patch_embed"]["proj"]["kernel"]) + p["patch_embed"]["proj"]["bias"]
    if "conv_stem" in p:
        x = x + np_conv_stem(p["conv_stem"], images)
    x = x.reshape(b, h * w, -1)
    x = x + p["pos_embed"][:, 1:] + p["pos_embed"][:, :1]
    x = np.concatenate([np.broadcast_to(p["cls_token"], (b, 1, x.shape[-1])), x], axis=1)
    for i in range(depth):
        x = np_block(p[f"blocks_{i}"], x, heads)
    x = layer_norm(x, p["last_norm"], 1e-6)
    return {"feature_map": x[:, 1:].reshape(b, h, w, -1), "cls_token": x[:, 0], "patch_tokens": x[:, 1:]}
