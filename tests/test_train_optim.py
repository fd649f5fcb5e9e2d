"""The optimizer (animax.train.optim): weight decay only on kernels, frozen sets left alone."""

import jax
import jax.numpy as jnp
import numpy as np

from animax.train import optim
from configs import standin


def test_weight_decay_only_on_kernels_and_frozen_sets():
    trainable = {"params": {"backbone": {"pos_embed": 0, "blocks": {"norm1": {"scale": 0, "bias": 0},
                                                                   "attn": {"qkv": {"kernel": 0, "bias": 0}}}},
                            "smal_head": {"decpose": {"kernel": 0, "bias": 0}}},
                 "lora": {"backbone.blocks.attn.qkv": {"a": 0, "b": 0}}}
    labels = optim.leaf_labels(trainable, "full")
    assert labels["params"]["backbone"]["blocks"]["attn"]["qkv"] == {"kernel": "decay", "bias": "no_decay"}
    assert labels["params"]["backbone"]["pos_embed"] == "no_decay"
    assert labels["params"]["backbone"]["blocks"]["norm1"] == {"scale": "no_decay", "bias": "no_decay"}
    for frozen_set in ("frozen_backbone", "lora"):
        labels = optim.leaf_labels(trainable, frozen_set)
        assert set(jax.tree.leaves(labels["params"]["backbone"])) == {"frozen"}
        assert labels["params"]["smal_head"]["decpose"]["kernel"] == "decay"
        assert labels["lora"]["backbone.blocks.attn.qkv"]["a"] == "no_decay"
    trainable["params"]["fusion"] = {"fc1": {"kernel": 0}}
    labels = optim.leaf_labels(trainable, "descriptor")
    assert labels["params"]["fusion"]["fc1"]["kernel"] == "decay"
    assert set(jax.tree.leaves({k: v for k, v in labels["params"].items() if k != "fusion"})) == {"frozen"}
    assert set(jax.tree.leaves(labels["lora"])) == {"frozen"}


def test_optimizer_leaves_frozen_parameters_and_skips_decay_off_kernels():
    config = standin.get_config("tiny")
    config.trainable = "frozen_backbone"
    config.optim.update(warmup_steps=0, learning_rate=0.1, weight_decay=0.5)
    params = {"backbone": {"proj": {"kernel": jnp.ones(3)}},
              "smal_head": {"fc": {"kernel": jnp.ones(3), "bias": jnp.ones(3)}}}
    trainable = {"params": params, "lora": {}}
    tx = optim.make_optimizer(config, trainable)
    zero_grads = jax.tree.map(jnp.zeros_like, trainable)
    updates, _ = tx.update(zero_grads, tx.init(trainable), trainable)
    np.testing.assert_array_equal(updates["params"]["backbone"]["proj"]["kernel"], 0.0)   # frozen
    np.testing.assert_array_equal(updates["params"]["smal_head"]["fc"]["bias"], 0.0)      # no decay
    assert np.all(np.asarray(updates["params"]["smal_head"]["fc"]["kernel"]) < 0)         # decayed
