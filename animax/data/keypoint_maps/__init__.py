"""Keypoint mappings from a dataset's own keypoints to the 26 SMAL keypoints.

A mapping is a Python file whose `get_config()` gives `name`, `keypoints` (the dataset's
keypoint names in its own order) and `to_smal` (dataset name -> SMAL keypoint name), and
optionally `to_vertices` (dataset name -> vertex ids of the body model's mesh): keypoints of
the dataset's own that the SMAL layout lacks (Horse-10's fetlocks, say), predicted as the
mean of those vertices, which `config.loss.source_keypoint_map` trains against the dataset's
stored `source_keypoints`. The built-in ones are the modules of this package (`horse10.py`,
`ap10k.py`, `animal_pose.py`); a user's own is given by its file path. Names match
case-insensitively. SMAL keypoints nothing maps to get confidence 0.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import numpy as np

from animax.smal.constants import KEYPOINT_NAMES

BUILT_IN = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__)))


@dataclasses.dataclass(frozen=True)
class KeypointMap:
    name: str
    keypoints: tuple[str, ...]          # the dataset's keypoint names, in its order
    to_smal: dict[str, str]             # lower-cased dataset name -> SMAL keypoint name
    to_vertices: dict = dataclasses.field(default_factory=dict)  # lower-cased name -> vertex ids

    def prediction_table(self):
        """How the model predicts each dataset keypoint, in `keypoints` order: (smal_index [N]
        (-1: not a SMAL keypoint), vertex_index [N, M], vertex_weight [N, M] (the mean of its
        vertex set, rows of zeros without one), predicted [N] bool)."""
        smal = self.smal_index(self.keypoints)
        sets = [self.to_vertices.get(n.lower(), ()) for n in self.keypoints]
        width = max([len(v) for v in sets] + [1])
        index = np.zeros((len(sets), width), np.int32)
        weight = np.zeros((len(sets), width), np.float32)
        for k, vertices in enumerate(sets):
            index[k, :len(vertices)] = vertices
            weight[k, :len(vertices)] = 1.0 / max(len(vertices), 1)
        return smal, index, weight, (smal >= 0) | (weight.sum(1) > 0)

    def smal_index(self, names) -> np.ndarray:
        """For each dataset keypoint name, its SMAL keypoint index, or -1 when unmapped. [N]."""
        return np.array([KEYPOINT_NAMES.index(self.to_smal[n.lower()]) if n.lower() in self.to_smal
                         else -1 for n in names], np.int64)

    def in_source_order(self, keypoints, names) -> np.ndarray:
        """Keypoints [N, 3] named `names` (a label file's order) -> [len(keypoints), 3] in the
        map's `keypoints` order; parts the file lacks are (0, 0, 0)."""
        lookup = {n.lower(): i for i, n in enumerate(names)}
        out = np.zeros((len(self.keypoints), 3), np.float32)
        for k, name in enumerate(self.keypoints):
            if name.lower() in lookup:
                out[k] = keypoints[lookup[name.lower()]]
        return out

    @property
    def mirror(self) -> np.ndarray:
        """Each source keypoint's mirror partner (left/right, near/off), as an index. [N] int32."""
        from animax.data.mirror import mirror_permutation
        return mirror_permutation(list(self.keypoints)).astype(np.int32)

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
    """A mapping by built-in name (`horse10`, `ap10k`) or by the path of a mapping file."""
    if str(name_or_path) in BUILT_IN:
        source = f"animax.data.keypoint_maps.{name_or_path}"
        config = importlib.import_module(source).get_config()
    else:
        path = Path(name_or_path)
        if path.suffix != ".py" or not path.is_file():
            raise FileNotFoundError(f"{path}: keypoint map not found (built-in maps: {', '.join(BUILT_IN)}; "
                                    f"or a .py file with get_config())")
        spec = importlib.util.spec_from_file_location(f"_keypoint_map_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        source, config = str(path), module.get_config()
    to_smal = {str(k).lower(): str(v) for k, v in dict(config.to_smal).items()}
    unknown = sorted(set(to_smal.values()) - set(KEYPOINT_NAMES))
    if unknown:
        raise ValueError(f"{source}: not SMAL keypoint names: {', '.join(unknown)}")
    to_vertices = {str(k).lower(): tuple(int(i) for i in v) for k, v in dict(config.get("to_vertices", {})).items()}
    both = sorted(set(to_smal) & set(to_vertices))
    if both:
        raise ValueError(f"{source}: keypoints both in to_smal and in to_vertices: {', '.join(both)}")
    return KeypointMap(str(config.name), tuple(config.keypoints), to_smal, to_vertices)


def find_keypoint_map(names) -> KeypointMap:
    """The built-in mapping whose keypoint list equals `names`."""
    wanted = [n.lower() for n in names]
    for name in BUILT_IN:
        mapping = load_keypoint_map(name)
        if [n.lower() for n in mapping.keypoints] == wanted:
            return mapping
    raise ValueError(f"no built-in keypoint map ({', '.join(BUILT_IN)}) lists these keypoints: {', '.join(names)}; "
                     "write one (see animax/data/keypoint_maps/ap10k.py) and pass its path as keypoint_map")
