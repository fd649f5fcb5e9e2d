"""The optimizer: AdamW with linear warm-up and cosine decay, clipping, and trainable sets.

The optimizer sees the trainable tree `{"params": <model params>, "lora": <LoRA factors>}`.
Each leaf is labelled by `leaf_labels`:
    "decay"     trained, with weight decay: Dense and Conv kernels
    "no_decay"  trained, without: biases, norm scales, position embeddings, the class token,
                LoRA factors
    "frozen"    not trained (`optax.set_to_zero`: no optimizer state, and XLA drops the work
                that only served its gradient): the backbone under "frozen_backbone" and
                "lora" (LoRA then trains the adapters and every module after the backbone);
                everything but the head encoder and the fusion under "descriptor" (the
                descriptor learns on a fixed pose model; its predictions stay as they were)
Clipping (`clip_factor`) acts on the global norm of the trained gradients only; the train step
applies it to the gradients before this transformation sees them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

TRAINABLE_SETS = ("full", "frozen_backbone", "lora", "descriptor")
DESCRIPTOR_MODULES = ("head_encoder", "fusion")


def learning_rate_schedule(config):
    """0 -> peak over `warmup_steps`, then cosine to `peak * end_lr_factor` at `num_train_steps`."""
    opt = config.optim
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=opt.learning_rate, warmup_steps=opt.warmup_steps,
        decay_steps=max(config.num_train_steps, opt.warmup_steps + 1),
        end_value=opt.learning_rate * opt.end_lr_factor)


def leaf_labels(trainable, trainable_set):
    """A tree like `trainable` of "decay" / "no_decay" / "frozen" (see the module docstring)."""
    if trainable_set not in TRAINABLE_SETS:
        raise ValueError(f"config.trainable must be one of {TRAINABLE_SETS}, got {trainable_set!r}")
    frozen_backbone = trainable_set in ("frozen_backbone", "lora")

    def label(path, _):
        keys = [entry.key for entry in path]
        if keys[0] == "params" and keys[1] == "backbone" and frozen_backbone:
            return "frozen"
        if trainable_set == "descriptor" and not (keys[0] == "params" and keys[1] in DESCRIPTOR_MODULES):
            return "frozen"
        return "decay" if keys[0] == "params" and keys[-1] == "kernel" else "no_decay"

    return jax.tree_util.tree_map_with_path(label, trainable)


def trained_mask(trainable, trainable_set):
    """A bool tree like `trainable`: True where the optimizer updates the leaf (not "frozen")."""
    return jax.tree.map(lambda label: label != "frozen", leaf_labels(trainable, trainable_set))


def make_optimizer(config, trainable):
    """optax transformation for the trainable tree of `config` (config.optim, config.trainable)."""
    opt = config.optim
    labels = leaf_labels(trainable, config.trainable)
    adamw = optax.adamw(learning_rate_schedule(config), b1=opt.b1, b2=opt.b2, eps=opt.eps,
                        weight_decay=opt.weight_decay, mask=jax.tree.map(lambda label: label == "decay", labels))
    return optax.multi_transform({"trained": adamw, "frozen": optax.set_to_zero()},
                                 jax.tree.map(lambda label: "frozen" if label == "frozen" else "trained", labels))


def clip_factor(limit, grad_norm):
    """optax.clip_by_global_norm's factor: min(1, limit / norm); 1 with clipping off (limit 0)."""
    return jnp.minimum(1.0, limit / jnp.maximum(grad_norm, 1e-30)) if limit else jnp.ones_like(grad_norm)


def adversarial_weight(config) -> float:
    """The weight of AniMer's adversarial prior; 0 (the default) leaves the discriminator out."""
    return float(config.loss.weights.get("adversarial", 0.0))


def make_discriminator_optimizer(config):
    """AniMer's discriminator optimizer: its own AdamW at the model's peak learning rate, held
    constant, with weight decay on every leaf (torch AdamW's) and no clipping."""
    opt = config.optim
    return optax.adamw(opt.learning_rate, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay)
