"""Where a model comes from (animax.loading): the shipped model is the default without --ckpt."""

import jax
import numpy as np

from animax.loading import random_model


def test_without_ckpt_the_shipped_model_is_the_default(tmp_path, monkeypatch):
    """No --ckpt: the model folder at SHIPPED_MODEL when there is one, random weights when asked
    for (random_weights, or a config file), or when none is shipped."""
    from animax import loading
    from animax.saved_model import save_model

    model, variables = random_model(None)
    shipped = {"params": jax.tree.map(lambda x: x + 1.0, variables["params"]), "batch_stats": variables["batch_stats"]}
    config = loading.demo_config()
    save_model(tmp_path / "shipped", config, shipped)
    monkeypatch.setattr(loading, "SHIPPED_MODEL", tmp_path / "shipped")

    from_shipped = loading.load_model_or_random()
    loaded, info = from_shipped.variables, from_shipped.info
    assert info["weights"] == loading.SHIPPED_MODEL_NAME and info["checkpoint"] is None
    path, leaf = next(iter(jax.tree_util.tree_leaves_with_path(loaded["params"])))
    np.testing.assert_array_equal(leaf, jax.tree_util.tree_leaves(shipped["params"])[0], err_msg=str(path))
    for kwargs in ({"random_weights": True}, {"config": "configs/tiny.py"}):
        assert loading.uses_random_weights(**kwargs)
        assert loading.load_model_or_random(**kwargs).info["weights"].startswith("random"), kwargs
    monkeypatch.setattr(loading, "SHIPPED_MODEL", tmp_path / "absent")
    assert loading.uses_random_weights() and loading.load_model_or_random().info["weights"].startswith("random")
