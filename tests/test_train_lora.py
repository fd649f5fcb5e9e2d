"""LoRA (animax.train.lora): the merge starts at the base weights and adds a low-rank update."""

import jax
import jax.numpy as jnp
import numpy as np

from animax.train import lora


def test_lora_merge_starts_at_the_base_weights_and_adds_a_low_rank_update():
    params = {"backbone": {"blocks": {"attn": {"qkv": {"kernel": jnp.ones((2, 6, 18))},
                                               "proj": {"kernel": jnp.ones((2, 6, 6))}},
                                      "mlp": {"fc1": {"kernel": jnp.ones((2, 6, 24))}}}}}
    factors = lora.init_lora(params, 2, jax.random.PRNGKey(0))
    assert set(factors) == {"backbone.blocks.attn.qkv", "backbone.blocks.attn.proj"}
    assert factors["backbone.blocks.attn.qkv"]["a"].shape == (2, 6, 2)
    jax.tree.map(np.testing.assert_array_equal, lora.merge(params, factors, 2.0), params)
    factors["backbone.blocks.attn.qkv"]["b"] = jax.random.normal(jax.random.PRNGKey(1), (2, 2, 18))
    merged = lora.merge(params, factors, 2.0)
    delta = (merged["backbone"]["blocks"]["attn"]["qkv"]["kernel"]
             - params["backbone"]["blocks"]["attn"]["qkv"]["kernel"])
    assert np.linalg.matrix_rank(np.asarray(delta[0])) == 2
    np.testing.assert_array_equal(merged["backbone"]["blocks"]["mlp"]["fc1"]["kernel"], 1.0)
