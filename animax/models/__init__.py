"""Flax Linen modules: vit, smal_head, class_head, head_encoder, fusion, and the pipeline."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from animax.models.pipeline import Pipeline
from animax.smal import SMALModel, load_smal

INPUT_SIZE = 256


def build_model(config, smal=None) -> Pipeline:
    """The pipeline of a config (configs/*.py `get_config()`).

    smal: a SMALModel, a SMAL file path, or None for `config.smal` (None there: the stand-in).
    """
    if not isinstance(smal, SMALModel):
        smal = load_smal(smal if smal is not None else config.get("smal"))
    return Pipeline(ml_collections.FrozenConfigDict(config.model), smal)


def init_variables(model: Pipeline, seed: int = 0, batch: int = 1):
    """Randomly initialised variables (`params`, `batch_stats`, `smal`) of a pipeline."""
    images = jnp.zeros((batch, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    return jax.jit(model.init)(jax.random.PRNGKey(seed), images)
