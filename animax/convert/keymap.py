"""AniMer's PyTorch names <-> animax's parameter paths, as one table read in both directions.

Each rule names a torch key pattern, the flax path (collection first) and how the tensor
changes on the way: Linear weights are transposed ([out, in] -> [in, out]), the patch
convolution goes OIHW -> HWIO, a 1x1 convolution [out, in, 1, 1] becomes a Dense kernel
[in, out], everything else is copied. `{i}` is a layer index. The training-only
discriminator converts into its own collection, `discriminator` (not part of the pipeline).
Ignored keys (ViTPose's keypoint head, SMAL buffers, loss buffers) are listed with the
reason the conversion report prints.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from animax.models.discriminator import COLLECTION as DISCRIMINATOR

COPY, LINEAR, CONV, POINTWISE = "copy", "linear", "conv", "pointwise"


@dataclasses.dataclass(frozen=True)
class Rule:
    torch: str          # e.g. "backbone.blocks.{i}.attn.qkv.weight"
    flax: str           # e.g. "params/backbone/blocks_{i}/attn/qkv/kernel"
    kind: str = COPY

    def torch_regex(self):
        return _pattern(self.torch)

    def flax_regex(self):
        return _pattern(self.flax)


def _pattern(template: str):
    """The regex of a name template whose `{i}` is a layer index."""
    return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + "$")


def _linear(torch_prefix, flax_prefix, bias=True):
    rules = [Rule(f"{torch_prefix}.weight", f"{flax_prefix}/kernel", LINEAR)]
    return rules + [Rule(f"{torch_prefix}.bias", f"{flax_prefix}/bias")] if bias else rules


def _norm(torch_prefix, flax_prefix):
    return [Rule(f"{torch_prefix}.weight", f"{flax_prefix}/scale"), Rule(f"{torch_prefix}.bias", f"{flax_prefix}/bias")]


def _backbone_rules():
    t, f = "backbone.blocks.{i}", "params/backbone/blocks_{i}"
    return [
        Rule("backbone.patch_embed.proj.weight", "params/backbone/patch_embed/proj/kernel", CONV),
        Rule("backbone.patch_embed.proj.bias", "params/backbone/patch_embed/proj/bias"),
        Rule("backbone.pos_embed", "params/backbone/pos_embed"),
        Rule("backbone.cls_token", "params/backbone/cls_token"),
        *_norm(f"{t}.norm1", f"{f}/norm1"), *_linear(f"{t}.attn.qkv", f"{f}/attn/qkv"),
        *_linear(f"{t}.attn.proj", f"{f}/attn/proj"), *_norm(f"{t}.norm2", f"{f}/norm2"),
        *_linear(f"{t}.mlp.fc1", f"{f}/mlp/fc1"), *_linear(f"{t}.mlp.fc2", f"{f}/mlp/fc2"),
        *_norm("backbone.last_norm", "params/backbone/last_norm"),
    ]


def _smal_head_rules():
    t, f = "smal_head.transformer.transformer.layers.{i}", "params/smal_head/transformer/layers_{i}"
    return [
        *_linear("smal_head.transformer.to_token_embedding", "params/smal_head/transformer/to_token_embedding"),
        Rule("smal_head.transformer.pos_embedding", "params/smal_head/transformer/pos_embedding"),
        *_norm(f"{t}.0.norm", f"{f}/self_attn/norm"),
        *_linear(f"{t}.0.fn.to_qkv", f"{f}/self_attn/to_qkv", bias=False),
        *_linear(f"{t}.0.fn.to_out.0", f"{f}/self_attn/to_out"),
        *_norm(f"{t}.1.norm", f"{f}/cross_attn/norm"),
        *_linear(f"{t}.1.fn.to_q", f"{f}/cross_attn/to_q", bias=False),
        *_linear(f"{t}.1.fn.to_kv", f"{f}/cross_attn/to_kv", bias=False),
        *_linear(f"{t}.1.fn.to_out.0", f"{f}/cross_attn/to_out"),
        *_norm(f"{t}.2.norm", f"{f}/ff/norm"),
        *_linear(f"{t}.2.fn.net.0", f"{f}/ff/fc1"), *_linear(f"{t}.2.fn.net.3", f"{f}/ff/fc2"),
        *_linear("smal_head.decpose", "params/smal_head/decpose"),
        *_linear("smal_head.decshape", "params/smal_head/decshape"),
        *_linear("smal_head.deccam", "params/smal_head/deccam"),
    ]


def _class_head_rules():
    t, p, s = "class_token_head.head", "params/class_token_head", "batch_stats/class_token_head"
    rules = [Rule(f"{t}.{i}.weight", f"{p}/layers_{i}/kernel", LINEAR) for i in (0, 3, 6)]
    rules += [r for i in (1, 4) for r in _norm(f"{t}.{i}", f"{p}/layers_{i}")]
    rules += [Rule(f"{t}.{i}.running_mean", f"{s}/layers_{i}/mean") for i in (1, 4, 7)]
    rules += [Rule(f"{t}.{i}.running_var", f"{s}/layers_{i}/var") for i in (1, 4, 7)]
    return rules


def _discriminator_rules():
    t, f = "discriminator", DISCRIMINATOR
    rules = [Rule(f"{t}.D_conv{k}.weight", f"{f}/D_conv{k}/kernel", POINTWISE) for k in (1, 2)]
    rules += [Rule(f"{t}.D_conv{k}.bias", f"{f}/D_conv{k}/bias") for k in (1, 2)]
    rules += _linear(f"{t}.pose_out.{{i}}", f"{f}/pose_out_{{i}}")
    for name in ("betas_fc1", "betas_fc2", "betas_out", "D_alljoints_fc1", "D_alljoints_fc2", "D_alljoints_out"):
        rules += _linear(f"{t}.{name}", f"{f}/{name}")
    return rules


RULES = (*_backbone_rules(), *_smal_head_rules(), *_class_head_rules(), *_discriminator_rules())
_COMPILED = [(rule, rule.torch_regex()) for rule in RULES]
_COMPILED_FLAX = [(rule, rule.flax_regex()) for rule in RULES]

# Keys that carry no network weights animax uses, with the reason shown in the report.
IGNORED = (
    (re.compile(r"^(backbone\.)?keypoint_head\."), "ViTPose keypoint head (not part of AniMer)"),
    (re.compile(r"^smal\."), "SMAL body-model buffers (the body model comes from --smal)"),
    (re.compile(r"^discriminator\.bone_"), "discriminator bone-length branch (not in AniMer's released forward)"),
    (re.compile(r"^(shape_prior_loss|pose_prior_loss|keypoint_[23]d_loss|smal_parameter_loss|supcon_loss)\."),
     "loss buffers"),
    (re.compile(r"^initialized$"), "Lightning bookkeeping"),
    (re.compile(r"\.num_batches_tracked$"), "BatchNorm step counter"),
    (re.compile(r"^smal_head\.init_(pose|betas|cam)$"), "SMAL head constants (checked, built into the module)"),
)

# AniMer's fixed initial values of the SMAL head readouts.
SMAL_HEAD_CONSTANTS = {
    "smal_head.init_pose": lambda n: np.zeros((1, n)),
    "smal_head.init_betas": lambda n: np.zeros((1, n)),
    "smal_head.init_cam": lambda n: np.array([[0.9, 0.0, 0.0]]),
}


def match(torch_name: str):
    """-> (rule, layer index or None) for a mapped key, else None."""
    for rule, regex in _COMPILED:
        m = regex.match(torch_name)
        if m:
            return rule, (int(m.group("i")) if "i" in m.groupdict() else None)
    return None


def ignore_reason(torch_name: str):
    for regex, reason in IGNORED:
        if regex.search(torch_name):
            return reason
    return None


def to_flax(kind: str, array: np.ndarray) -> np.ndarray:
    if kind == LINEAR:
        return array.T
    if kind == CONV:
        return array.transpose(2, 3, 1, 0)
    if kind == POINTWISE:
        return array[:, :, 0, 0].T
    return array


def to_torch(kind: str, array: np.ndarray) -> np.ndarray:
    if kind == LINEAR:
        return array.T
    if kind == CONV:
        return array.transpose(3, 2, 0, 1)
    if kind == POINTWISE:
        return array.T[:, :, None, None]
    return array


def flax_path(rule: Rule, index) -> tuple[str, ...]:
    return tuple(rule.flax.format(i=index).split("/"))


def torch_name(rule: Rule, index) -> str:
    return rule.torch.format(i=index)


def flax_to_torch_rule(path: tuple[str, ...]):
    """Inverse lookup: flax path (collection first, unscanned) -> (rule, index) or None."""
    joined = "/".join(path)
    for rule, regex in _COMPILED_FLAX:
        m = regex.match(joined)
        if m:
            return rule, (int(m.group("i")) if "i" in m.groupdict() else None)
    return None
