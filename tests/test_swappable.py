"""The swappable modules: the fusion (`model.fusion.kind`: mlp, transformer) and the head encoder
(`model.head_encoder.kind`: cnn, vit), each new one against a float64 NumPy forward written from
its parameters, and every kind through the whole pipeline with the same contract."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from animax.models import build_model
from animax.models.config import tiny_model_config
from animax.models.fusion import TransformerFusion, make_fusion
from animax.models.head_encoder import HeadEncoder, crop_and_resize, head_box
from helpers.nn_reference import (
    dense,
    f32_tol,
    f64,
    layer_norm,
    np_block,
    np_vit,
    random_params,
    rel_err,
    vit_block_steps,
)

DIM, DEPTH, HEADS, MLP, FEATURES = 32, 2, 4, 64, 24


def transformer_fusion_reference(p, visual, head, params):
    """float64: per-stream LayerNorm (1e-5) and projection, type embeddings, a readout token,
    the ViT's pre-norm blocks, final LayerNorm of the readout token, output projection."""
    streams = {"visual": visual, "head": head, "params": params}
    tokens = np.stack([dense(layer_norm(x, p[f"norm_{n}"], 1e-5), p[f"embed_{n}"]) for n, x in streams.items()], 1)
    tokens = tokens + p["type_embed"]
    x = np.concatenate([np.broadcast_to(p["readout"], (len(visual), 1, DIM)), tokens], axis=1)
    for i in range(DEPTH):
        x = np_block(p[f"block{i}"], x, HEADS)
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


def test_vit_head_encoder_matches_a_float64_reference():
    """The head crop (its own tests: tests/test_pipeline.py) through the small ViT, pooled, projected."""
    rng = np.random.default_rng(1)
    images = rng.normal(0, 1, (2, 64, 64, 3)).astype(np.float32)
    keypoints = rng.uniform(-0.3, 0.3, (2, 26, 2)).astype(np.float32)
    vit_config = dict(width=32, depth=2, num_heads=4, mlp_dim=64, patch_size=8)
    module = HeadEncoder(features=24, crop=32, kind="vit", vit=vit_config)
    params = random_params(module, jnp.asarray(images), jnp.asarray(keypoints))
    features, box = module.apply({"params": params}, images, keypoints)
    assert features.shape == (2, 24)
    crop = np.asarray(crop_and_resize(images, head_box(keypoints, crop_size=64), 32), np.float64)
    p = f64(params)
    tokens = np_vit(p["vit"], crop, heads=4, depth=2, patch=8, pad=0)["patch_tokens"]
    expected = dense(tokens.mean(axis=1), p["proj"])
    steps = (8 * 8 * 3, 1) + vit_block_steps(32, 4, 64, 17) * 2 + (32, 32, 1, 16, 32)
    assert rel_err(features, expected) <= f32_tol(*steps)


@pytest.mark.parametrize("fusion,head", [("mlp", "cnn"), ("transformer", "vit")])
def test_each_kind_gives_the_pipeline_the_same_contract(fusion, head):
    config = tiny_model_config()
    config.fusion.kind = fusion
    config.fusion.transformer.update(dim=32, depth=1, heads=2, mlp_dim=64)
    config.head_encoder.kind = head
    config.head_encoder.vit.update(width=32, depth=1, num_heads=2, mlp_dim=64, patch_size=16)
    model = build_model(ml_collections.ConfigDict({"model": config}))
    images = jnp.zeros((2, 256, 256, 3))
    variables = jax.jit(model.init)(jax.random.key(0), images)
    out = jax.jit(model.apply)(variables, images)
    assert out["fused_features"].shape == (2, config.fusion.features)
    assert out["head_features"].shape == (2, config.head_encoder.features)
    names = set(variables["params"]["fusion"])
    assert names == ({"norm", "fc1", "fc2"} if fusion == "mlp" else
                     {"norm", "out", "type_embed", "readout", "block0"} | {f"{w}_{s}" for w in ("norm", "embed")
                                                                         for s in ("visual", "head", "params")})
    assert ("vit" in variables["params"]["head_encoder"]) == (head == "vit")


def test_an_unknown_fusion_kind_is_one_clear_error():
    config = tiny_model_config()
    config.fusion.kind = "gru"
    with pytest.raises(ValueError, match="model.fusion.kind: 'gru' is not one of"):
        make_fusion(config.fusion, jnp.float32)


def test_an_unknown_head_encoder_kind_is_one_clear_error():
    with pytest.raises(ValueError, match="model.head_encoder.kind: 'resnet9' is not one of"):
        HeadEncoder(kind="resnet9").init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 26, 2)))
