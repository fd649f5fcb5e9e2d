"""Where a checkpoint and its training config live, and reading that config safely.

AniMer releases a folder written by its hydra run:

    AniMer/checkpoints/checkpoint.ckpt     the Lightning checkpoint (hyper_parameters.cfg inside)
    AniMer/.hydra/config.yaml              the composed config, which AniMer's `load_amr` reads

so SRC may be the folder or the `.ckpt`; a `.ckpt` two levels below a `.hydra/config.yaml` gets
that file too, as `load_amr` finds it (`Path(ckpt).parent.parent / '.hydra/config.yaml'`).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import yaml

# Lightning's ModelCheckpoint names: AniMer's release renames its checkpoint to checkpoint.ckpt;
# save_last=True writes last.ckpt beside the top-k ones.
_FOLDER_CHECKPOINTS = ("checkpoints/checkpoint.ckpt", "checkpoints/last.ckpt")
HYDRA_CONFIG = Path(".hydra") / "config.yaml"


@dataclasses.dataclass(frozen=True)
class Source:
    checkpoint: Path
    hydra_config: Path | None  # .hydra/config.yaml of the run, when there is one


def locate(src) -> Source:
    """The checkpoint file and hydra config of SRC (a `.ckpt`/`.pth` file or a run folder)."""
    src = Path(src)
    if src.is_dir():
        found = [src / name for name in _FOLDER_CHECKPOINTS if (src / name).is_file()]
        if not found:
            others = sorted((src / "checkpoints").glob("*.ckpt"))
            if len(others) != 1:
                raise FileNotFoundError(
                    f"{src}: a folder SRC needs checkpoints/checkpoint.ckpt, checkpoints/last.ckpt or a single "
                    f"checkpoints/*.ckpt (found {[p.name for p in others] or 'none'})")
            found = others
        config = src / HYDRA_CONFIG
        return Source(found[0], config if config.is_file() else None)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: checkpoint not found")
    config = src.resolve().parent.parent / HYDRA_CONFIG
    return Source(src, config if config.is_file() else None)


class _OmegaConfYamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader (plain data only) reading floats as omegaconf does: YAML 1.1 takes
    `1e-4` (no dot) for a string, omegaconf and AniMer's config for a float."""


_OmegaConfYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                 |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                 |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                 |[-+]?\.(?:inf|Inf|INF)
                 |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def read_hydra_config(path) -> dict:
    """A hydra `config.yaml` as plain data (interpolations stay `${...}` strings)."""
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.load(f, Loader=_OmegaConfYamlLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping at the top, found {type(config).__name__}")
    return config


def differences(a, b, path="") -> list[str]:
    """`key.path: a vs b` for every leaf where two config trees differ (absent keys included)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in list(a) + [k for k in b if k not in a]:
            out += differences(a.get(key, "<absent>"), b.get(key, "<absent>"), f"{path}.{key}" if path else str(key))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"]
