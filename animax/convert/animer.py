"""AniMer / ViTPose PyTorch checkpoints -> animax checkpoints, and back.

Sources: an AniMer Lightning checkpoint (`state_dict` + `hyper_parameters`), a ViTPose-style
`backbone.pth` (`state_dict` with `backbone.*` + `keypoint_head.*`, and `meta`), or a plain
state dict. Model dimensions are read off the tensors, so ViT-B/L backbones convert too.
Tensors are read, converted and placed one at a time, so peak memory stays near one copy
of the parameters.
"""

from __future__ import annotations

import dataclasses
import re
from collections import OrderedDict

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from animax.convert import keymap
from animax.convert.pickled_configs import find, to_plain
from animax.convert.sources import Source, differences, locate, read_hydra_config
from animax.convert.torch_reader import LazyTensor, read_torch_checkpoint
from animax.models import abstract_variables, build_model, init_variables, vit
from animax.models.config import model_config
from animax.models.discriminator import init_discriminator

# Heads of the standard ViT widths (a checkpoint stores no head count).
_HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}
# Modules of the integrated pipeline that AniMer checkpoints never contain.
NEW_MODULES = ("head_encoder", "fusion")


class ConversionError(ValueError):
    """The checkpoint does not convert cleanly (the report says why)."""


@dataclasses.dataclass
class Report:
    source_kind: str = ""
    mapped: list = dataclasses.field(default_factory=list)      # (torch name, flax path, shape)
    ignored: list = dataclasses.field(default_factory=list)     # (torch name, reason)
    unknown: list = dataclasses.field(default_factory=list)     # torch names no rule knows
    missing: list = dataclasses.field(default_factory=list)     # (flax path, init used, expected?)
    mismatched: list = dataclasses.field(default_factory=list)  # (torch name, torch shape, expected shape)
    groups: list = dataclasses.field(default_factory=list)      # (top-level key, tensors, bytes, use)
    config_source: str = ""
    notes: list = dataclasses.field(default_factory=list)       # warnings that do not stop the conversion
                                                                # (a note may hold indented detail lines)

    @property
    def problems(self) -> list[str]:
        out = [f"unknown key {k}" for k in self.unknown]
        out += [f"shape mismatch {k}: checkpoint {a}, model expects {b}" for k, a, b in self.mismatched]
        out += [f"missing {p} (initialised: {init})" for p, init, expected in self.missing if not expected]
        return out

    def table(self) -> str:
        rows = [("mapped", len(self.mapped)), ("ignored", len(self.ignored)), ("missing", len(self.missing)),
                ("unknown", len(self.unknown)), ("shape mismatches", len(self.mismatched))]
        lines = [f"source: {self.source_kind}", f"model config: {self.config_source}",
                 f"{'state_dict keys':<18}{'count':>7}"]
        lines += [f"{name:<18}{count:>7}" for name, count in rows]
        reasons = OrderedDict()
        for _, reason in self.ignored:
            reasons[reason] = reasons.get(reason, 0) + 1
        lines += [f"  ignored {n:>5} x {reason}" for reason, n in reasons.items()]
        inits = OrderedDict()
        for path, init, _ in self.missing:
            inits.setdefault(init, []).append(path)
        lines += [f"  missing {len(p):>5} x {init} (e.g. {p[0]})" for init, p in inits.items()]
        if self.groups:
            width = max(len(key) for key, *_ in self.groups) + 2
            lines.append(f"{'top-level entries':<{width}}{'tensors':>8}{'GB':>8}  use")
            lines += [f"{key:<{width}}{n:>8}{nbytes / 1e9:>8.2f}  {use}" for key, n, nbytes, use in self.groups]
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        return "\n".join(lines)


# Top-level entries of training checkpoints besides the weights: never read, only accounted.
_TRAINING_STATE = {
    "state_dict": "network weights: only the mapped tensors are read",
    "hyper_parameters": "the model config (read, no tensors)",
    "optimizer_states": "optimizer state (training only): never read",
    "optimizer": "optimizer state (training only): never read",
    "lr_schedulers": "learning-rate schedule (training only)", "callbacks": "Lightning callback state",
    "loops": "Lightning loop state", "meta": "ViTPose/mmcv run metadata",
}


def _state_dict_of(raw, report) -> tuple[dict, dict]:
    """(flat state dict, hyper-parameters) of a loaded checkpoint; fills report.source_kind and
    report.groups with what the other top-level entries hold."""
    if not isinstance(raw, dict):
        raise ConversionError(f"expected a dict at the top of the checkpoint, found {type(raw).__name__}")
    if isinstance(raw.get("state_dict"), dict):
        state = raw["state_dict"]
        if "meta" in raw and not any(k.startswith("smal_head.") for k in state):
            report.source_kind = "ViTPose backbone (backbone.pth)"
        else:
            report.source_kind = "AniMer Lightning checkpoint"
        hparams = raw.get("hyper_parameters") or {}
        for key, value in raw.items():
            tensors = list(_tensors_in(value))
            use = _TRAINING_STATE.get(key, "training bookkeeping, not used")
            report.groups.append((key, len(tensors), sum(t.nbytes for t in tensors), use))
    else:
        state, hparams = raw, {}
        report.source_kind = "plain state dict"
    tensors = {k: v for k, v in state.items() if isinstance(v, LazyTensor)}
    if not tensors:
        raise ConversionError("no tensors found in the checkpoint")
    if "patch_embed.proj.weight" in tensors:  # a bare backbone state dict
        tensors = {f"backbone.{k}": v for k, v in tensors.items()}
    return tensors, hparams


def _tensors_in(tree):
    if isinstance(tree, LazyTensor):
        yield tree
    elif isinstance(tree, dict):
        for value in tree.values():
            yield from _tensors_in(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from _tensors_in(value)


def training_config(source: Source, hparams: dict, report) -> dict:
    """The run's config: `.hydra/config.yaml` where there is one (AniMer's `load_amr` reads it),
    else the pickled `hyper_parameters.cfg`; their disagreements become report notes."""
    pickled = to_plain(hparams.get("cfg", hparams)) if isinstance(hparams, dict) else {}
    if source.hydra_config is None:
        report.config_source = "hyper_parameters.cfg" if pickled else "none (AniMer's defaults)"
        return pickled
    from_yaml = read_hydra_config(source.hydra_config)
    report.config_source = str(source.hydra_config)
    if pickled:
        diffs = differences(from_yaml, pickled)
        if diffs:
            shown = diffs[:20] + ([f"... {len(diffs) - 20} more"] if len(diffs) > 20 else [])
            report.notes.append(f"{source.hydra_config} and hyper_parameters.cfg differ at {len(diffs)} key(s); "
                                f"using the YAML, as AniMer's load_amr does (YAML vs checkpoint):"
                                + "".join(f"\n    {d}" for d in shown))
    return from_yaml


def infer_model_config(tensors: dict, cfg: dict) -> ml_collections.ConfigDict:
    """The model config whose parameter shapes match the checkpoint's tensors; head counts and
    IEF iterations, which no shape shows, from the training config `cfg` (AniMer's keys)."""
    model = model_config()
    patch = tensors.get("backbone.patch_embed.proj.weight")
    if patch is None:
        raise ConversionError("no backbone.patch_embed.proj.weight: not an AniMer or ViTPose checkpoint")
    width = patch.shape[0]
    depth = 1 + max(int(m.group(1)) for k in tensors if (m := re.match(r"backbone\.blocks\.(\d+)\.", k)))
    variants = {vit.decode_variant(f"{v}/16")["width"]: v for v in ("Ti", "S", "B", "L", "H")}
    if width not in variants:
        raise ConversionError(f"backbone width {width} is none of the ViT variants {sorted(variants)}")
    model.variant = f"{variants[width]}/16"
    model.depth = depth
    model.num_heads = find(cfg, "MODEL", "BACKBONE", "NUM_HEADS") or _HEADS_BY_WIDTH[width]
    mlp = tensors["backbone.blocks.0.mlp.fc1.weight"].shape[0]
    if mlp != vit.decode_variant(model.variant)["mlp_dim"]:
        raise ConversionError(f"backbone MLP width {mlp} does not match {model.variant}")

    if "smal_head.transformer.to_token_embedding.weight" in tensors:
        head = model.smal_head
        def decoder(key, default):
            return int(find(cfg, "MODEL", "SMAL_HEAD", "TRANSFORMER_DECODER", key) or default)
        head.dim = tensors["smal_head.transformer.to_token_embedding.weight"].shape[0]
        head.depth = 1 + max(int(m.group(1)) for k in tensors
                             if (m := re.match(r"smal_head\.transformer\.transformer\.layers\.(\d+)\.", k)))
        head.heads = decoder("heads", head.heads)
        inner = tensors["smal_head.transformer.transformer.layers.0.1.fn.to_q.weight"].shape[0]
        head.dim_head = decoder("dim_head", inner // head.heads)
        head.mlp_dim = tensors["smal_head.transformer.transformer.layers.0.2.fn.net.0.weight"].shape[0]
        head.ief_iters = int(find(cfg, "MODEL", "SMAL_HEAD", "IEF_ITERS") or head.ief_iters)
    if "class_token_head.head.0.weight" in tensors:
        model.class_head.hidden = tensors["class_token_head.head.0.weight"].shape[0]
        model.class_head.features = tensors["class_token_head.head.6.weight"].shape[0]
    return model


def _set(tree: dict, path: tuple, value):
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _flatten(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flatten(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def convert(src, smal=None, progress=True) -> tuple[ml_collections.ConfigDict, dict, Report]:
    """Reads a PyTorch checkpoint into (config, variables {"params", "batch_stats"} and, when the
    checkpoint has AniMer's discriminator, "discriminator"), report).

    The variables are in the checkpoint layout (unscanned ViT blocks) whatever config.model.scan_blocks says.
    """
    source = locate(src)
    report = Report()
    tensors, hparams = _state_dict_of(read_torch_checkpoint(source.checkpoint), report)
    kind = report.source_kind
    cfg = training_config(source, hparams, report)
    config = ml_collections.ConfigDict({"name": "converted", "model": infer_model_config(tensors, cfg),
                                        "smal": None})
    # Checkpoints keep the ViT blocks unscanned (`blocks_{i}`, PyTorch's layout): see animax.saved_model.
    model = build_model(config, smal=smal, scan_blocks=False)
    abstract = abstract_variables(model)
    expected = {path: leaf for path, leaf in _flatten({k: abstract[k] for k in ("params", "batch_stats")})}
    if any(name.startswith(keymap.DISCRIMINATOR + ".") for name in tensors):
        discriminator = jax.eval_shape(init_discriminator, jax.random.PRNGKey(0))
        expected.update(_flatten({keymap.DISCRIMINATOR: discriminator}))
    out: dict = {}
    plan = []  # (torch name, rule, flax path) of the tensors to copy
    for name, tensor in tensors.items():
        hit = keymap.match(name)
        if hit is None:
            reason = keymap.ignore_reason(name)
            if reason is None:
                report.unknown.append(name)
            else:
                report.ignored.append((name, reason))
                _check_constant(name, tensor, report)
            continue
        rule, index = hit
        path = keymap.flax_path(rule, index)
        want = expected.get(path)
        shape = keymap.to_flax(rule.kind, np.empty(tensor.shape, np.bool_)).shape
        if want is None or tuple(want.shape) != shape:
            report.mismatched.append((name, tuple(tensor.shape), None if want is None else tuple(want.shape)))
            continue
        plan.append((name, rule, path))
    # Views of one storage (tied or sliced weights) next to each other: each storage is read once.
    first_use = {}
    for name, _, _ in plan:
        first_use.setdefault(tensors[name].storage.member, len(first_use))
    plan.sort(key=lambda item: first_use[tensors[item[0]].storage.member])
    # Initialise what the checkpoint lacks first, while little memory is in use.
    _fill_missing(model, out, expected, {path for _, _, path in plan}, kind, report)

    for name, rule, path in tqdm(plan, desc="converting", unit="tensor", disable=not progress):
        array = keymap.to_flax(rule.kind, tensors[name].numpy())
        # One device array per tensor as it comes: the host copy is freed at once.
        _set(out, path, jax.device_put(np.asarray(array, np.float32)))
        report.mapped.append((name, "/".join(path), array.shape))
    return config, out, report


def _check_constant(name, tensor, report):
    """AniMer's SMAL head adds fixed initial values; a checkpoint with others would not match."""
    make = keymap.SMAL_HEAD_CONSTANTS.get(name)
    if make is not None:
        value = tensor.numpy()
        if not np.array_equal(value, make(value.shape[-1]).astype(value.dtype)):
            report.mismatched.append((name, "values differ from AniMer's constants", "fixed constants"))


def _fill_missing(model, out, expected, filled, kind, report):
    """Initialises every leaf the checkpoint lacks, and records how and whether that was expected."""
    missing = [p for p in expected if p not in filled]
    if not missing:
        return
    # One random init of the whole model is cheap only for small models; for the real ones
    # the missing leaves are whole small modules (head branch, fusion, heads) or the class token.
    backbone_missing = [p for p in missing if p[1] == "backbone"]
    fresh = None
    if [p for p in backbone_missing if p[-1] != "cls_token"]:
        fresh = init_variables(model)
    for path in missing:
        module = path[1]
        if path[0] == keymap.DISCRIMINATOR:             # a discriminator with some tensors missing
            value = np.asarray(_get(init_discriminator(jax.random.PRNGKey(0)), path[1:]))
            _set(out, path, jax.device_put(value.astype(np.float32)))
            report.missing.append(("/".join(path), "random init", False))
            continue
        if path == ("params", "backbone", "cls_token") and fresh is None:
            value = np.asarray(1e-6 * jax.random.normal(jax.random.PRNGKey(0), expected[path].shape))
            init, ok = "AniMer's init N(0, 1e-6)", kind.startswith("ViTPose")
        else:
            if fresh is None:
                fresh = _init_small_modules(model)
            value = np.asarray(_get(fresh, path))
            new = module in NEW_MODULES
            heads_of_backbone_only = kind.startswith("ViTPose") and module in ("smal_head", "class_token_head")
            init = "random init (new animax module)" if new else "random init"
            ok = new or heads_of_backbone_only
        _set(out, path, jax.device_put(value.astype(np.float32)))
        report.missing.append(("/".join(path), init, ok))


def _init_small_modules(model):
    """Random variables of every module but the backbone, without materialising the backbone."""
    # Scanned blocks trace as one block; the backbone's initialisers are dropped anyway.
    config = ml_collections.ConfigDict({"model": model.model_config.as_configdict()})
    return init_variables(build_model(config, smal=model.body_model, scan_blocks=True), exclude=("backbone",))


def to_torch_state_dict(config, variables) -> "OrderedDict[str, np.ndarray]":
    """animax variables -> AniMer-named arrays (the inverse of `convert`).

    Modules AniMer does not have (head branch, fusion) are left out; the discriminator goes back
    when `variables` hold one; the SMAL head's fixed
    initial values are added back, as AniMer's state dict holds them.
    """
    tree = {k: variables[k] for k in ("params", "batch_stats", keymap.DISCRIMINATOR) if k in variables}
    if "blocks" in tree["params"].get("backbone", {}):
        tree["params"] = {**tree["params"], "backbone": vit.unstack_blocks(tree["params"]["backbone"])}
    state = OrderedDict()
    for path, leaf in _flatten(jax.tree.map(np.asarray, tree)):
        hit = keymap.flax_to_torch_rule(path)
        if hit is not None:
            rule, index = hit
            state[keymap.torch_name(rule, index)] = np.ascontiguousarray(keymap.to_torch(rule.kind, leaf))
    if "smal_head.decpose.weight" in state:
        sizes = {"init_pose": "decpose", "init_betas": "decshape", "init_cam": "deccam"}
        for name, make in keymap.SMAL_HEAD_CONSTANTS.items():
            readout = sizes[name.split(".")[-1]]
            state[name] = make(state[f"smal_head.{readout}.weight"].shape[0]).astype(np.float32)
    return state
