"""The fusion choices (`model.fusion.kind`): the Transformer fusion against a float64 NumPy forward
written from its parameters, and both kinds through the whole pipeline with the same contract."""

import jax
import ml_collections
import jax.numpy as jnp
import numpy as np
import pytest

from animax.models import build_model
from animax.models.config import tiny_model_config
from animax.models.fusion import TransformerFusion, make_fusion
from nn_reference import attention, dense, f32_tol, f64, gelu, layer_norm, random_params, rel_err, split_heads, \
    vit_block_steps

DIM, DEPTH, HEADS, MLP, FEATURES = 32, 2, 4, 64, 24


def transformer_fusion_reference(p, visual, head, params):
    """float64: per-stream LayerNorm (1e-5) and projection, type embeddings, a readout token,
    pre-norm blocks (LayerNorm 1e-6, qkv, softmax attention with q scaled, proj; fc1, erf GELU, fc2),
    final LayerNorm of the readout token, output projection."""
    streams = {"visual": visual, "head": head, "params": params}
    tokens = np.stack([dense(layer_norm(x, p[f"norm_{n}"], 1e-5), p[f"embed_{n}"]) for n, x in streams.items()], 1)
    tokens = tokens + p["type_embed"]
    x = np.concatenate([np.broadcast_to(p["readout"], (len(visual), 1, DIM)), tokens], axis=1)
    for i in range(DEPTH):
        b = p[f"block{i}"]
        q, k, v = np.split(dense(layer_norm(x, b["norm1"], 1e-6), b["attn"]["qkv"]), 3, axis=-1)
        q, k, v = (split_heads(t, HEADS) for t in (q, k, v))
        x = x + dense(attention(q * (DIM // HEADS) ** -0.5, k, v), b["attn"]["proj"])
        x = x + dense(gelu(dense(layer_norm(x, b["norm2"], 1e-6), b["mlp"]["fc1"])), b["mlp"]["fc2"])
    return dense(layer_norm(x[:, 0], p["norm"], 1e-6), p["out"])


def test_transformer_fusion_matches_a_float64_reference():
    rng = np.random.default_rng(0)
    inputs = [rng.normal(0, s, (3, n)).astype(np.float32) for s, n in ((0.3, 40), (2.0, 20), (0.05, 12))]
    module = TransformerFusion(dim=DIM, depth=DEPTH, heads=HEADS, mlp_dim=MLP, features=FEATURES)
    params = random_params(module, *inputs)
    out = module.apply({"params": params}, *inputs)
    assert out.shape == (3, FEATURES) and out.dtype == jnp.float32
    expected = transformer_fusion_reference(f64(params), *(x.astype(np.float64) for x in inputs))
    steps = (40, 40, 1, 40) + vit_block_steps(DIM, HEADS, MLP, 4) * DEPTH + (DIM, DIM, 1, DIM)
    assert rel_err(out, expected) <= f32_tol(*steps)


@pytest.mark.parametrize("kind", ["mlp", "transformer"])
def test_each_fusion_gives_the_pipeline_the_same_contract(kind):
    config = tiny_model_config()
    config.fusion.kind = kind
    config.fusion.transformer.update(dim=32, depth=1, heads=2, mlp_dim=64)
    model = build_model(ml_collections.ConfigDict({"model": config}))
    images = jnp.zeros((2, 256, 256, 3))
    variables = jax.jit(model.init)(jax.random.key(0), images)
    out = jax.jit(model.apply)(variables, images)
    assert out["fused_features"].shape == (2, config.fusion.features)
    names = set(variables["params"]["fusion"])
    assert names == ({"norm", "fc1", "fc2"} if kind == "mlp" else
                     {"norm", "out", "type_embed", "readout", "block0"} | {f"{w}_{s}" for w in ("norm", "embed")
                                                                         for s in ("visual", "head", "params")})


def test_an_unknown_fusion_kind_is_one_clear_error():
    config = tiny_model_config()
    config.fusion.kind = "gru"
    with pytest.raises(ValueError, match="model.fusion.kind: 'gru' is not one of"):
        make_fusion(config.fusion, jnp.float32)
