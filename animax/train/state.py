"""The explicit training state, its creation (scratch / converted backbone / converted AniMer
checkpoint) directly into its shardings, and the trainable tree the optimizer sees."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct, traverse_util

from animax.geometry import CROP_SIZE
from animax.models import vit
from animax.models.discriminator import init_discriminator
from animax.train import lora as lora_lib
from animax.train import optim
from animax.train import sharding as sharding_lib
from animax.train.writers import say

INIT_KINDS = ("scratch", "backbone", "animer")


@struct.dataclass
class TrainState:
    """Everything a step reads and writes; a checkpoint holds all of it.

    The body model (the `smal` collection) is not here: it is a constant of the run, rebuilt
    from the config and passed to the step beside the state.
    """
    step: jax.Array            # int32 [], optimizer steps taken (skipped ones included)
    params: Any                # model parameters, float32 (frozen parts included)
    lora: Any                  # LoRA factors (lora.py); {} unless config.trainable == "lora"
    batch_stats: Any           # BatchNorm running statistics (class-token head)
    opt_state: Any             # optax state of the trainable tree
    discriminator: Any         # AniMer's discriminator parameters; {} unless loss.weights.adversarial > 0
    discriminator_opt_state: Any  # its own optimizer's state (optim.make_discriminator_optimizer)
    rng: jax.Array             # uint32 [2] raw base key; step k uses fold_in(rng, k)
    nonfinite_streak: jax.Array  # int32 [], consecutive skipped (non-finite) steps
    nonfinite_total: jax.Array   # int32 [], all skipped steps

    @property
    def trainable(self):
        """The tree the optimizer updates."""
        return {"params": self.params, "lora": self.lora}


def lora_scale(config) -> float:
    return config.lora.alpha / config.lora.rank


def merged_params(state: TrainState, scale: float):
    """Model parameters with the LoRA adapters (scaled by `scale`, `lora_scale`) merged in: the
    weights to export or evaluate."""
    return lora_lib.merge(state.params, state.lora, scale) if state.lora else state.params


def _relayout_backbone(loaded, target):
    """Loaded backbone params in the block layout (scanned or not) of `target`."""
    if "blocks" in target and "blocks" not in loaded:
        return vit.stack_blocks(loaded)
    if "blocks" in loaded and "blocks" not in target:
        return vit.unstack_blocks(loaded)
    return loaded


def overlay(fresh, loaded, what: str):
    """`fresh` with every leaf that `loaded` has at the same path; shapes must agree.

    Returns (tree, number of leaves taken). Leaves only in `fresh` keep their initialisation
    (AniMer's checkpoints have no head encoder or fusion; ViTPose's none of the heads). Leaves
    taken are host arrays, for `jax.device_put` to place in the run's shardings: `loaded` sits on
    this process's first device, and a mesh over several processes' devices cannot be reached
    from there (the backends have no cross-host transfer).
    """
    flat_fresh, flat_loaded = traverse_util.flatten_dict(fresh), traverse_util.flatten_dict(loaded)
    taken = 0
    for path, value in flat_loaded.items():
        if path not in flat_fresh:
            continue
        if flat_fresh[path].shape != value.shape:
            raise ValueError(f"{what}: {'/'.join(path)} has shape {value.shape} in the checkpoint but "
                             f"{flat_fresh[path].shape} in this config's model")
        flat_fresh[path] = np.asarray(value, flat_fresh[path].dtype)
        taken += 1
    if not taken:
        raise ValueError(f"{what}: no parameter of the checkpoint matches this config's model")
    return traverse_util.unflatten_dict(flat_fresh), taken


def pretrained_variables(config, variables):
    """`variables` (params, batch_stats) with the checkpoint of `config.init` laid over them."""
    kind, path = config.init.kind, config.init.path
    if kind not in INIT_KINDS:
        raise ValueError(f"config.init.kind must be one of {INIT_KINDS}, got {kind!r}")
    if kind == "scratch":
        return variables
    if not path:
        raise ValueError(f"config.init.kind={kind!r} needs config.init.path (a converted checkpoint directory)")
    from animax.saved_model import load_model  # the conversion stack is only needed here

    _, loaded = load_model(path)
    params = dict(variables["params"])
    if kind == "backbone":
        backbone = _relayout_backbone(loaded["params"]["backbone"], params["backbone"])
        params["backbone"], taken = overlay(params["backbone"], backbone, f"backbone from {path}")
        say(f"init: {taken} backbone arrays from {path}; every other module is freshly initialised")
        return {**variables, "params": params}
    loaded_params = dict(loaded["params"])
    loaded_params["backbone"] = _relayout_backbone(loaded_params["backbone"], params["backbone"])
    params, taken = overlay(params, loaded_params, f"model from {path}")
    batch_stats = variables["batch_stats"]
    if loaded.get("batch_stats"):
        batch_stats, _ = overlay(batch_stats, loaded["batch_stats"], f"batch_stats from {path}")
    say(f"init: {taken} parameter arrays from {path}")
    return {**variables, "params": params, "batch_stats": batch_stats}


def _init_trainable(model, config, rng, body):
    """(variables, lora) freshly initialised: model params and batch stats, LoRA factors or {}.

    The body model comes in as an argument: closed over, its arrays would be baked into the
    compiled program as constants.
    """
    init_rng, lora_rng = jax.random.split(rng)
    images = jnp.zeros((1, CROP_SIZE, CROP_SIZE, 3), jnp.float32)
    variables = model.clone(body_model=body).init(init_rng, images)
    lora = lora_lib.init_lora(variables["params"], config.lora.rank, lora_rng) if config.trainable == "lora" else {}
    return variables, lora


def abstract_trainable(model, config):
    """Shapes of the trainable tree {"params", "lora"}, for building the optimizer."""
    variables, lora = jax.eval_shape(lambda body: _init_trainable(model, config, jax.random.PRNGKey(0), body),
                                     model.body_model)
    return {"params": variables["params"], "lora": lora}


def _initial_state(model, config, tx, body):
    """A fresh TrainState from scratch (traced under jit, so it is born sharded)."""
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(config.seed))
    variables, lora = _init_trainable(model, config, init_rng, body)
    zero = jnp.zeros((), jnp.int32)
    discriminator, discriminator_opt_state = {}, {}
    if optim.adversarial_weight(config):
        discriminator = init_discriminator(jax.random.fold_in(init_rng, 1))
        discriminator_opt_state = optim.make_discriminator_optimizer(config).init(discriminator)
    return TrainState(step=zero, params=variables["params"], lora=lora, batch_stats=variables["batch_stats"],
                      opt_state=tx.init({"params": variables["params"], "lora": lora}),
                      discriminator=discriminator, discriminator_opt_state=discriminator_opt_state,
                      rng=train_rng, nonfinite_streak=zero, nonfinite_total=zero)


def abstract_train_state(model, config, tx, mesh):
    """(abstract state, its shardings): what `initial_state` builds or a checkpoint restores into."""
    abstract = jax.eval_shape(lambda body: _initial_state(model, config, tx, body), model.body_model)
    return abstract, state_shardings(mesh, abstract, config.mesh.fsdp_min_bytes, config.mesh.get("zero1", False))


def initial_state(model, config, tx, shardings) -> TrainState:
    """The state at step 0 per `config.init`, built directly in its shardings by a jitted init,
    so no device ever holds more than its share of an FSDP state."""
    init = jax.jit(lambda body: _initial_state(model, config, tx, body), out_shardings=shardings)
    state = init(model.body_model)
    if config.init.kind != "scratch":
        variables = pretrained_variables(config, {"params": state.params, "batch_stats": state.batch_stats})
        # Optimizer moments start at zero whatever the parameter values: opt_state stays.
        state = state.replace(params=variables["params"], batch_stats=variables["batch_stats"])
        if state.discriminator and config.init.kind == "animer":
            state = state.replace(discriminator=_pretrained_discriminator(config, state.discriminator))
        state = jax.device_put(state, shardings)
    return state


def _pretrained_discriminator(config, fresh):
    """The discriminator of the converted AniMer checkpoint `config.init.path`, else `fresh`."""
    from animax.saved_model import load_discriminator

    loaded = load_discriminator(config.init.path)
    if loaded is None:
        say(f"init: {config.init.path} holds no discriminator; it starts freshly initialised")
        return fresh
    params, taken = overlay(fresh, loaded, f"discriminator from {config.init.path}")
    say(f"init: {taken} discriminator arrays from {config.init.path}")
    return params


def state_shardings(mesh, abstract_state: TrainState, fsdp_min_bytes: int = 0, zero1: bool = False):
    """Parameters, LoRA and optimizer state per the mesh's fsdp rule (the optimizer state over
    every device with `zero1`); scalars, rng and the small discriminator replicated."""
    tree_shardings = lambda tree: sharding_lib.state_shardings(mesh, tree, fsdp_min_bytes)
    rep = sharding_lib.replicated(mesh)
    replicate = lambda tree: jax.tree.map(lambda _: rep, tree)   # the discriminator is ~6 MB
    return abstract_state.replace(
        step=rep, rng=rep, nonfinite_streak=rep, nonfinite_total=rep,
        discriminator=replicate(abstract_state.discriminator),
        discriminator_opt_state=replicate(abstract_state.discriminator_opt_state),
        params=tree_shardings(abstract_state.params), lora=tree_shardings(abstract_state.lora),
        batch_stats=tree_shardings(abstract_state.batch_stats),
        opt_state=sharding_lib.state_shardings(mesh, abstract_state.opt_state, fsdp_min_bytes, all_devices=zero1))
