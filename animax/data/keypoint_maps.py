"""Keypoint mappings from a dataset's own keypoints to the 26 SMAL keypoints.

A mapping is a config file (`configs/keypoints_<name>.py`) whose `get_config()` gives
`name`, `keypoints` (the dataset's keypoint names in its own order) and `to_smal` (dataset
name -> SMAL keypoint name). Names match case-insensitively. SMAL keypoints nothing maps
to get confidence 0.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np

from animax.smal.constants import KEYPOINT_NAMES

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclasses.dataclass(frozen=True)
class KeypointMap:
    name: str
    keypoints: tuple[str, ...]          # the dataset's keypoint names, in its order
    to_smal: dict[str, str]             # lower-cased dataset name -> SMAL keypoint name

    def smal_index(self, names) -> np.ndarray:
        """For each dataset keypoint name, its SMAL keypoint index, or -1 when unmapped. [N]."""
        return np.array([KEYPOINT_NAMES.index(self.to_smal[n.lower()]) if n.lower() in self.to_smal
                         else -1 for n in names], np.int64)

    def to_smal_keypoints(self, keypoints, names=None) -> np.ndarray:
        """Dataset keypoints [N, 3] (x, y, confidence) named `names` (default: `keypoints`)
        -> SMAL keypoints [26, 3], unmapped ones (0, 0, 0)."""
        keypoints = np.asarray(keypoints, np.float32)
        index = self.smal_index(self.keypoints if names is None else names)
        out = np.zeros((len(KEYPOINT_NAMES), 3), np.float32)
        mapped = index >= 0
        out[index[mapped]] = keypoints[mapped]
        return out


def load_keypoint_map(name_or_path) -> KeypointMap:
    """A mapping by name (`configs/keypoints_<name>.py`) or by config file path."""
    path = Path(name_or_path)
    if path.suffix != ".py":
        path = CONFIG_DIR / f"keypoints_{name_or_path}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: keypoint map config not found")
    spec = importlib.util.spec_from_file_location(f"_keypoint_map_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    to_smal = {str(k).lower(): str(v) for k, v in dict(config.to_smal).items()}
    unknown = sorted(set(to_smal.values()) - set(KEYPOINT_NAMES))
    if unknown:
        raise ValueError(f"{path}: not SMAL keypoint names: {', '.join(unknown)}")
    return KeypointMap(str(config.name), tuple(config.keypoints), to_smal)


def find_keypoint_map(names) -> KeypointMap:
    """The mapping among configs/keypoints_*.py whose keypoint list equals `names`."""
    wanted = [n.lower() for n in names]
    for path in sorted(CONFIG_DIR.glob("keypoints_*.py")):
        mapping = load_keypoint_map(path)
        if [n.lower() for n in mapping.keypoints] == wanted:
            return mapping
    raise ValueError(f"no keypoint map in {CONFIG_DIR} lists these keypoints: {', '.join(names)}; "
                     "write one (see configs/keypoints_ap10k.py) and pass it as keypoint_map")
