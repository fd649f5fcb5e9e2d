"""The train step and the evaluation step, jitted with explicit shardings.

`train_step(state, batch, smal) -> (state, metrics)`: one optimizer step on a global batch
(with `loss.weights.adversarial` > 0, then one step of AniMer's discriminator, as its
training_step does).
The batch is split into `grad_accum_steps` micro-batches (rows i, i + k, i + 2k, ...
form micro-batch i, which keeps each one sharded like the batch) whose gradients are
averaged by a scan (one micro-batch: the plain step). A non-finite loss or gradient norm leaves
parameters, optimizer state and batch statistics as they were and counts the skip.

`eval_step(state, batch, smal) -> (sums, descriptors)`: per-metric (sum of values, sum of
weights) of one evaluation batch (`batch["valid"]` marks padding), and the batch's
`fused_features` with its `family`, `identity` and `valid` rows, for the host to accumulate
(retrieval ranks the whole held-out set at once).

The steps receive what they need from the config as `StepSettings`, derived once outside the
trace (the schedule, the discriminator's optimizer, the LoRA scale), as flax's imagenet
example hands `learning_rate_fn` to its train step.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from animax.image.device_warp import warp_windows
from animax.models.discriminator import Discriminator
from animax.runtime import exact_matmuls
from animax.smal.bank import skin
from animax.train import lora as lora_lib
from animax.train import losses as losses_lib
from animax.train import metrics as metrics_lib
from animax.train import optim
from animax.train import sharding as sharding_lib
from animax.train.input import WINDOW_KEYS
from animax.train.state import TrainState, lora_scale, merged_params


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """The parts of a training config the steps use, derived once (`from_config`)."""
    loss: Any                                  # config.loss: term weights and their options
    learning_rate_fn: Callable                 # step -> learning rate (for the metrics)
    grad_accum_steps: int
    grad_clip_norm: float                      # 0: no clipping
    lora_scale: float                          # alpha / rank of the LoRA adapters
    adversarial_weight: float                  # 0: no discriminator
    discriminator_tx: Any                      # its optimizer (None without one)
    source_table: Any = None                   # the prediction table of loss.source_keypoint_map

    @classmethod
    def from_config(cls, config) -> StepSettings:
        adversarial = optim.adversarial_weight(config)
        source_table = None
        if config.loss.get("source_keypoint_map"):
            from animax.data.keypoint_maps import load_keypoint_map  # only runs with a map need it
            source_table = load_keypoint_map(config.loss.source_keypoint_map).prediction_table()
        return cls(config.loss, optim.learning_rate_schedule(config), config.grad_accum_steps,
                   config.optim.grad_clip_norm, lora_scale(config), adversarial,
                   optim.make_discriminator_optimizer(config) if adversarial else None, source_table)


def with_image(batch):
    """The batch with `image` and `mask` cropped here from the loader's windows (data.device_crop:
    `animax.image.device_warp`); a batch that has its image already, as it is. Every step starts
    with it."""
    if "window" not in batch:
        return batch
    image, mask = warp_windows(batch["window"], batch["window_affine"], batch["window_edges"], batch["gain"],
                               batch["has_mask"])
    return {**{k: v for k, v in batch.items() if k not in WINDOW_KEYS}, "image": image, "mask": mask}


def _apply(model, params, batch_stats, smal, batch, **kw):
    """The pipeline on a batch's images; a batch of several body models names each row's in `body_model`."""
    return model.apply({"params": params, "batch_stats": batch_stats, "smal": smal}, batch["image"],
                       body_index=batch.get("body_model"), **kw)


def with_gt_vertices(batch, smal):
    """The batch plus `vertices`: its GT SMAL parameters skinned by each row's own body model
    (rows without GT get a mesh too; their has-flags keep it out of losses and metrics)."""
    gt = skin(smal["model"], batch["betas"], losses_lib.gt_rotations(batch["pose"]), batch.get("body_model"))
    return {**batch, "vertices": gt["vertices"]}


def _micro_batches(batch, count: int):
    """[B, ...] -> [count, B / count, ...]; micro-batch i holds rows i, i + count, ..."""
    def split(x):
        if x.shape[0] % count:
            raise ValueError(f"batch of {x.shape[0]} does not split into {count} micro-batches")
        return jnp.swapaxes(x.reshape(x.shape[0] // count, count, *x.shape[1:]), 0, 1)
    return jax.tree.map(split, batch)


def _module_norms(grads, trained):
    """Gradient norm of every top-level module (and of the LoRA factors) that is trained."""
    norms = {f"grad_norm/{name}": optax.tree.norm(tree)
             for name, tree in grads["params"].items() if any(jax.tree.leaves(trained["params"][name]))}
    if grads["lora"]:
        norms["grad_norm/lora"] = optax.tree.norm(grads["lora"])
    return norms


def train_step(state: TrainState, batch, smal, *, model, tx, settings: StepSettings, priors, trained):
    """See the module docstring. trained: a static bool tree like `state.trainable`."""
    batch = with_image(batch)
    scale = settings.lora_scale if state.lora else 0.0
    adversarial = settings.adversarial_weight

    def loss_fn(trainable, batch_stats, micro, rng):
        params = lora_lib.merge(trainable["params"], trainable["lora"], scale)
        outputs, updated = _apply(model, params, batch_stats, smal, micro, train=True,
                                  rngs={"dropout": rng}, mutable=["batch_stats"])
        if adversarial:    # the generator's side: the current discriminator scores the prediction
            outputs = {**outputs,
                       "discriminator": _discriminate(state.discriminator, outputs["pose"], outputs["betas"])}
        with exact_matmuls():   # losses in float32 at HIGHEST (the precision policy)
            loss, terms = losses_lib.total_loss(outputs, micro, settings.loss, priors,
                                                settings.source_table)
        fake = jax.lax.stop_gradient((outputs["pose"], outputs["betas"]))
        return loss, (terms, updated["batch_stats"], fake)

    if settings.loss.weights.vertices:
        batch = with_gt_vertices(batch, smal)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    rng = jax.random.fold_in(state.rng, state.step)
    trainable = state.trainable
    accum = settings.grad_accum_steps
    if accum == 1:
        (loss, (terms, batch_stats, fake)), grads = grad_fn(trainable, state.batch_stats, batch, rng)
    else:
        def accumulate(carry, inputs):
            grads_sum, batch_stats = carry
            micro, index = inputs
            (loss, (terms, batch_stats, fake)), grads = grad_fn(trainable, batch_stats, micro,
                                                                jax.random.fold_in(rng, index))
            return (jax.tree.map(jnp.add, grads_sum, grads), batch_stats), (loss, terms, fake)

        zeros = jax.tree.map(jnp.zeros_like, trainable)
        (grads, batch_stats), (loss, terms, fake) = jax.lax.scan(
            accumulate, (zeros, state.batch_stats), (_micro_batches(batch, accum), jnp.arange(accum)))
        grads = jax.tree.map(lambda g: g / accum, grads)
        loss, terms = jnp.mean(loss), jax.tree.map(jnp.mean, terms)
        # The discriminator pairs nothing with the batch order: the micro-batches' rows in any order.
        fake = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), fake)

    trained_grads = jax.tree.map(lambda g, t: g if t else jnp.zeros((), g.dtype), grads, trained)
    grad_norm = optax.tree.norm(trained_grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    kept_discriminator = (state.discriminator, state.discriminator_opt_state)
    discriminator, disc_metrics = kept_discriminator, {}
    if adversarial:
        disc_loss, *discriminator = _discriminator_update(state, batch, fake, settings)
        finite = finite & jnp.isfinite(disc_loss)
        disc_metrics = {"discriminator/loss": disc_loss}      # not a model term: its own optimizer

    clip = optim.clip_factor(settings.grad_clip_norm, grad_norm)

    def update(_):
        # Clipped here, where the factor fuses into AdamW's update (ViT-H: 1.7 GiB less than a
        # clipped copy of the gradients, docs/performance.md).
        updates, opt_state = tx.update(jax.tree.map(lambda g: g * clip, grads), state.opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, batch_stats, tuple(discriminator)

    def keep(_):
        return trainable, state.opt_state, state.batch_stats, kept_discriminator

    # A conditional rather than a select between old and new state, which keeps both alive: in a
    # branch the update writes the donated state in place (ViT-H: 0.5 GiB less at the peak).
    new_trainable, opt_state, batch_stats, (disc_params, disc_opt_state) = jax.lax.cond(finite, update, keep, None)
    streak = jnp.where(finite, 0, state.nonfinite_streak + 1)
    new_state = state.replace(
        step=state.step + 1, params=new_trainable["params"], lora=new_trainable["lora"],
        discriminator=disc_params, discriminator_opt_state=disc_opt_state, batch_stats=batch_stats,
        opt_state=opt_state, nonfinite_streak=streak,
        nonfinite_total=state.nonfinite_total + (1 - finite.astype(jnp.int32)))
    metrics = {"loss": loss, "grad_norm": grad_norm, "learning_rate": settings.learning_rate_fn(state.step),
               "skipped": 1 - finite.astype(jnp.int32), "nonfinite_streak": streak,
               "nonfinite_total": new_state.nonfinite_total,
               **{f"loss/{k}": v for k, v in terms.items()},
               **{f"weighted/{k}": settings.loss.weights[k] * v for k, v in terms.items()},
               **_module_norms(grads, trained), **disc_metrics}
    return new_state, metrics


def _discriminate(params, pose, betas):
    """AniMer's discriminator on poses [B, 35, 3, 3] (the root is not scored) and betas [B, NB]."""
    return Discriminator().apply({"params": params}, pose[:, 1:], betas)


def _discriminator_update(state, batch, fake, settings: StepSettings):
    """AniMer's discriminator step, after the model's: the batch's ground-truth SMAL parameters
    are real (every row, annotated or not, as AniMer feeds them), the step's predictions (held
    fixed) are fake; least squares, sum over outputs / B. Returns (unweighted loss, params,
    optimizer state); the update follows the loss weighted by `adversarial`."""
    real_pose, real_betas = losses_lib.gt_rotations(batch["pose"]), batch["betas"]
    fake_pose, fake_betas = fake
    rows = fake_pose.shape[0]

    def disc_loss(params):
        fake_score = _discriminate(params, fake_pose, fake_betas)
        real_score = _discriminate(params, real_pose, real_betas[:, :fake_betas.shape[-1]])
        return (jnp.sum(jnp.square(fake_score)) + jnp.sum(jnp.square(real_score - 1.0))) / rows

    loss, grads = jax.value_and_grad(disc_loss)(state.discriminator)
    grads = jax.tree.map(lambda g: settings.adversarial_weight * g, grads)
    updates, opt_state = settings.discriminator_tx.update(grads, state.discriminator_opt_state, state.discriminator)
    return loss, optax.apply_updates(state.discriminator, updates), opt_state


def eval_step(state: TrainState, batch, smal, *, model, settings: StepSettings):
    """See the module docstring."""
    batch = with_image(batch)
    outputs = _apply(model, merged_params(state, settings.lora_scale), state.batch_stats, smal, batch, train=False)
    batch = with_gt_vertices(batch, smal)
    sums = {}
    with exact_matmuls():
        metrics = metrics_lib.eval_metrics(outputs, batch, batch["valid"])
    for name, (values, weights) in metrics.items():
        sums[name] = (jnp.sum(jnp.where(weights > 0, values * weights, 0.0)), jnp.sum(weights))
    descriptors = {"fused_features": outputs["fused_features"].astype(jnp.float32),
                   **{k: batch[k] for k in ("family", "identity", "valid")}}
    return sums, descriptors


# What an overlay of a validation example needs (animax.viz.overlay.overlay_image).
PREVIEW_OUTPUTS = ("vertices", "cam_t", "keypoints_2d", "head_box")


def preview_step(state: TrainState, batch, smal, *, model, settings: StepSettings):
    """The outputs of PREVIEW_OUTPUTS for one batch, and its `image` (the TensorBoard overlays of
    an evaluation)."""
    batch = with_image(batch)
    outputs = _apply(model, merged_params(state, settings.lora_scale), state.batch_stats, smal, batch, train=False)
    return {**{k: outputs[k] for k in PREVIEW_OUTPUTS}, "image": batch["image"]}


def jit_steps(model, config, tx, mesh, shardings, priors, trained):
    """(train_step, eval_step, preview_step) jitted with explicit in/out shardings; the train
    state is donated."""
    rep = sharding_lib.replicated(mesh)
    batch = sharding_lib.batch_sharding(mesh)
    settings = StepSettings.from_config(config)
    train = jax.jit(functools.partial(train_step, model=model, tx=tx, settings=settings, priors=priors,
                                      trained=trained),
                    in_shardings=(shardings, batch, rep), out_shardings=(shardings, rep), donate_argnums=0)
    evaluate = jax.jit(functools.partial(eval_step, model=model, settings=settings),
                       in_shardings=(shardings, batch, rep), out_shardings=rep)
    preview = jax.jit(functools.partial(preview_step, model=model, settings=settings),
                      in_shardings=(shardings, batch, rep), out_shardings=rep)
    return train, evaluate, preview
