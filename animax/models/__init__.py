"""Flax Linen modules: vit, smal_head, class_head, head_encoder, fusion, and the pipeline."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from animax.geometry import CROP_SIZE
from animax.models.config import with_defaults
from animax.models.pipeline import Pipeline
from animax.smal import BodyModelBank, SMALModel, load_body


def build_model(config, smal=None, scan_blocks: bool | None = None) -> Pipeline:
    """The pipeline of a config (configs/*.py `get_config()`).

    smal: a SMALModel, a BodyModelBank (several species' meshes in one batch), a body-model spec
    (`animax.smal.load_body`: a SMAL file, or comma-separated files for a bank), or None for
    `config.smal` (None there: the stand-in).
    scan_blocks: overrides `config.model.scan_blocks`. Checkpoints store and inference runs the
    ViT blocks unrolled (`blocks_{i}`, faster at inference); training configs scan them (one
    compiled block).
    """
    if not isinstance(smal, (SMALModel, BodyModelBank)):
        smal = load_body(smal if smal is not None else config.get("smal"))
    model_config = with_defaults(config.model)
    if scan_blocks is not None:
        model_config.scan_blocks = scan_blocks
    return Pipeline(ml_collections.FrozenConfigDict(model_config), smal)


def abstract_variables(model: Pipeline, batch: int = 1):
    """Shapes and dtypes of the pipeline's variables, without computing any."""
    images = jax.ShapeDtypeStruct((batch, CROP_SIZE, CROP_SIZE, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), images)


def init_variables(model: Pipeline, seed: int = 0, batch: int = 1, exclude=()):
    """Randomly initialised variables (`params`, `batch_stats`, `smal`) of a pipeline.

    exclude: submodule names (e.g. "backbone") left out of the result, so they are never
    materialised (the compiler drops their initialisers).
    """
    images = jnp.zeros((batch, CROP_SIZE, CROP_SIZE, 3), jnp.float32)

    def init(rng, body):
        # The body model enters as an argument: closed over, its arrays would become
        # constants of the compiled program (slow to compile, copied into it).
        variables = model.clone(body_model=body).init(rng, images)
        return {c: {k: v for k, v in tree.items() if k not in exclude} for c, tree in variables.items()}

    rng = jax.random.PRNGKey(seed)
    # Initialisation runs once: an unoptimised compile is several times faster and gives the same values.
    compiled = jax.jit(init).lower(rng, model.body_model).compile(
        compiler_options={"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True})
    return compiled(rng, model.body_model)
