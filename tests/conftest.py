"""Shared fixtures: random models in the released SMAL layout, and the optional real data."""

import io
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from animax.smal.constants import PARENTS

# infer.py's persistent compilation cache stays off in tests (tests/test_compile_cache.py turns
# it on in a folder of its own): nothing is written under the user's ~/.cache.
os.environ.setdefault("ANIMAX_COMPILE_CACHE", "none")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_file(*parts):
    """Path under ../shared/data, or a skip when that folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def random_smal_arrays(num_vertices=3889, num_betas=45, seed=0):
    """A random body model in the released pickle's layout (35 SMAL joints, float64).

    Each vertex is skinned to a few random joints, the regressor is sparse, posedirs are
    small and dense, so every term of LBS contributes.
    """
    rng = np.random.default_rng(seed)
    num_joints = len(PARENTS)
    v_template = rng.normal(size=(num_vertices, 3))
    weights = np.zeros((num_vertices, num_joints))
    for v in range(num_vertices):
        joints = rng.choice(num_joints, size=3, replace=False)
        weights[v, joints] = rng.random(3) + 0.1
    weights /= weights.sum(1, keepdims=True)
    regressor = np.zeros((num_joints, num_vertices))
    for j in range(num_joints):
        verts = rng.choice(num_vertices, size=6, replace=False)
        regressor[j, verts] = rng.random(6) + 0.1
    regressor /= regressor.sum(1, keepdims=True)
    kintree = np.stack([np.array(PARENTS, np.int64), np.arange(num_joints)])
    kintree[0, 0] = 2**32 - 1
    return dict(
        v_template=v_template,
        shapedirs=rng.normal(scale=0.1, size=(num_vertices, 3, num_betas)),
        posedirs=rng.normal(scale=0.01, size=(num_vertices, 3, (num_joints - 1) * 9)),
        J_regressor=scipy.sparse.csc_matrix(regressor),
        weights=weights,
        f=rng.integers(0, num_vertices, size=(2 * num_vertices, 3)).astype(np.uint32),
        kintree_table=kintree,
    )


class _FakeCh:
    """Pickles like chumpy's `Ch`: global chumpy.ch.Ch, state dict holding the value under 'x'."""

    def __init__(self, x):
        self.x = x

    def __getstate__(self):
        return {"x": self.x, "_dirty_vars": set(), "_itr": None, "_make_dense": None}


def chumpy_pickle_bytes(data, chumpy_keys, protocol=1):
    """Pickles `data` as the released files are: `chumpy_keys` wrapped in chumpy.ch.Ch objects.

    A fake `chumpy.ch` module exists only while pickling; the reader never has chumpy.
    """
    module = types.ModuleType("chumpy.ch")
    _FakeCh.__module__, _FakeCh.__qualname__ = "chumpy.ch", "Ch"
    module.Ch = _FakeCh
    saved = {k: sys.modules.get(k) for k in ("chumpy", "chumpy.ch")}
    sys.modules["chumpy"] = types.ModuleType("chumpy")
    sys.modules["chumpy.ch"] = module
    try:
        wrapped = {k: (_FakeCh(v) if k in chumpy_keys else v) for k, v in data.items()}
        buf = io.BytesIO()
        pickle.dump(wrapped, buf, protocol=protocol)
        return buf.getvalue()
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
        _FakeCh.__module__, _FakeCh.__qualname__ = __name__, "_FakeCh"


@pytest.fixture
def released_smal_file(tmp_path):
    """A released-format SMAL pickle (chumpy objects, sparse regressor, uint root) and its arrays."""
    arrays = random_smal_arrays()
    path = tmp_path / "my_smal_model.pkl"
    path.write_bytes(chumpy_pickle_bytes(arrays, {"v_template", "shapedirs", "posedirs", "weights"}))
    return path, arrays
