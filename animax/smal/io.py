"""Reading and writing body-model files: the released SMAL pickle, our .npz, OBJ meshes.

The released pickles hold chumpy `Ch` objects and scipy sparse matrices. chumpy does not
install on current numpy, and unpickling must never run code, so they are read through
`RestrictedUnpickler`: numpy/scipy reconstruction globals are allowed, every chumpy class
becomes `_ChumpyArray`, whose pickled state carries the value under 'x'.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse

from animax.files import atomic_write
from animax.safe_pickle import BASIC_GLOBALS, NUMPY_GLOBALS, RestrictedUnpickler
from animax.smal import constants
from animax.smal.model import SMALModel, make_smal_model

ROOT_PARENT_UINT32 = 2**32 - 1


class _ChumpyArray:
    """Stand-in for any chumpy class: keeps the pickled state; `resolve_chumpy` takes its 'x'."""

    def __setstate__(self, state):
        self.state = state


def _sparse_globals():
    """scipy sparse classes under the module paths old and new scipy versions pickle them with."""
    out = {}
    for fmt in ("csc", "csr", "coo", "lil", "dok", "dia", "bsr"):
        cls = getattr(scipy.sparse, f"{fmt}_matrix")
        for module in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}"):
            out[(module, f"{fmt}_matrix")] = cls
        out[(f"scipy.sparse._{fmt}", f"{fmt}_array")] = getattr(scipy.sparse, f"{fmt}_array")
    return out


SMAL_PICKLE_GLOBALS = {**BASIC_GLOBALS, **NUMPY_GLOBALS, **_sparse_globals()}


def _chumpy_substitute(module, name):
    return _ChumpyArray if module == "chumpy" or module.startswith("chumpy.") else None


def resolve_chumpy(obj, where="pickle"):
    """Replaces every chumpy stand-in inside dicts/lists/tuples by its 'x' array."""
    if isinstance(obj, _ChumpyArray):
        state = obj.state if isinstance(obj.state, dict) else {}
        if "x" not in state:
            raise ValueError(f"{where}: a chumpy object without an 'x' array cannot be read")
        return np.asarray(state["x"])
    if isinstance(obj, dict):
        return {k: resolve_chumpy(v, where) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(resolve_chumpy(v, where) for v in obj)
    return obj


def load_pickle(path) -> object:
    """Loads a SMAL-family pickle (model or prior) safely, chumpy objects replaced by arrays."""
    path = Path(path)
    with open(path, "rb") as f:
        data = RestrictedUnpickler(f, SMAL_PICKLE_GLOBALS, _chumpy_substitute, source=str(path)).load()
    return resolve_chumpy(data, str(path))


def _dense(x, shape, where):
    """A (possibly sparse) matrix as a dense array of the expected `shape`. A pickled sparse
    matrix is rebuilt from its pickled fields without scipy's checks, and scipy's C kernels
    trust its indices: they are checked here before anything is densified."""
    if not scipy.sparse.issparse(x):
        return np.asarray(x)
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{where}: sparse matrix of shape {x.shape}, expected {tuple(shape)}")
    try:
        if x.format in ("csr", "csc", "bsr"):
            x.check_format(full_check=True)
        elif x.format == "coo":
            coords = [np.asarray(c) for c in (x.row, x.col)]
            if not all(c.ndim == 1 and c.dtype.kind in "iu" and len(c) == len(np.asarray(x.data))
                       and (len(c) == 0 or (c.min() >= 0 and c.max() < n)) for c, n in zip(coords, shape)):
                raise ValueError("coordinates outside the matrix")
        else:
            raise ValueError(f"sparse format {x.format} is not read (csr, csc, bsr, coo are)")
    except (ValueError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"{where}: invalid sparse matrix ({e})") from e
    return x.toarray()


def _check_shapes(data: dict, name: str):
    """The arrays' shapes agree with each other before any is used (a lying file must not make
    later steps allocate or index by its sizes)."""
    def shape(key):
        value = data[key]
        return tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
    v = shape("v_template")
    if len(v) != 2 or v[1] != 3:
        raise ValueError(f"{name}: v_template has shape {v}, expected (V, 3)")
    num_vertices = v[0]
    kintree = shape("kintree_table")
    if len(kintree) != 2 or kintree[0] != 2:
        raise ValueError(f"{name}: kintree_table has shape {kintree}, expected (2, J)")
    num_joints = kintree[1]
    expected = {"shapedirs": (num_vertices, 3, None), "posedirs": (num_vertices, 3, 9 * (num_joints - 1)),
                "weights": (num_vertices, num_joints), "J_regressor": (num_joints, num_vertices), "f": (None, 3)}
    for key, want in expected.items():
        got = shape(key)
        if len(got) != len(want) or any(w is not None and g != w for g, w in zip(got, want)):
            raise ValueError(f"{name}: {key} has shape {got}, expected {tuple('*' if w is None else w for w in want)}")
    faces = np.asarray(data["f"])
    if faces.dtype.kind not in "iu" or (faces.size and (faces.min() < 0 or faces.max() >= num_vertices)):
        raise ValueError(f"{name}: f holds vertex indices outside 0..{num_vertices - 1}")


def _parents_from_kintree(kintree_table):
    """Row 0 of kintree_table, with the uint32 root marker (2**32 - 1) turned into -1."""
    parents = np.asarray(kintree_table)[0].astype(np.int64)
    parents[(parents == ROOT_PARENT_UINT32) | (parents < 0)] = -1
    return parents


def smal_model_from_arrays(data: dict, num_betas: int, name: str) -> SMALModel:
    """Builds a SMALModel from a dict in the released pickle's layout (see standin.py)."""
    required = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "f", "kintree_table")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"{name}: not a SMAL model file, missing keys {missing}")
    _check_shapes(data, name)
    shapedirs = np.asarray(data["shapedirs"])
    if shapedirs.shape[-1] < num_betas:
        raise ValueError(f"{name}: has {shapedirs.shape[-1]} shape directions, {num_betas} requested")
    v_template = np.asarray(data["v_template"])
    parents = _parents_from_kintree(data["kintree_table"])
    if "keypoint_vertex_sets" in data:
        sets = data["keypoint_vertex_sets"]
    elif v_template.shape[0] == constants.SMAL_NUM_VERTICES:
        sets = constants.SMAL_KEYPOINT_VERTEX_SETS
    else:
        raise ValueError(f"{name}: {v_template.shape[0]} vertices and no keypoint_vertex_sets; "
                         f"AniMer's keypoints are defined for the {constants.SMAL_NUM_VERTICES}-vertex SMAL")
    joint_names = tuple(data.get("joint_names", constants.JOINT_NAMES))
    keypoint_names = tuple(data.get("keypoint_names", constants.KEYPOINT_NAMES))
    return make_smal_model(
        v_template=v_template, shapedirs=shapedirs[..., :num_betas], posedirs=data["posedirs"],
        j_regressor=_dense(data["J_regressor"], (len(parents), v_template.shape[0]), f"{name}: J_regressor"),
        lbs_weights=np.asarray(data["weights"]),
        faces=np.asarray(data["f"]), parents=parents, joint_names=joint_names,
        keypoint_names=keypoint_names, keypoint_vertex_sets=sets, name=name)


def load_smal(path=None, num_betas: int = 41) -> SMALModel:
    """Loads a body model.

    path: None for the built-in license-free stand-in quadruped; a released-format SMAL
    `.pkl` (e.g. `my_smpl_00781_4_all.pkl`); or an `.npz` written by `save_smal`.
    num_betas: leading shape directions to keep (AniMer uses 41).
    """
    if path is None:
        from animax.smal.standin import build_standin
        return smal_model_from_arrays(build_standin(num_betas), num_betas, "standin")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: SMAL file not found")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
        for key in ("joint_names", "keypoint_names"):
            if key in data:
                data[key] = [str(s) for s in data[key]]
        data["keypoint_vertex_sets"] = np.split(data.pop("keypoint_vertex_indices"),
                                                data.pop("keypoint_vertex_offsets")[1:-1])
        return smal_model_from_arrays(data, num_betas, str(data.pop("name", path.stem)))
    data = load_pickle(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of SMAL arrays, found {type(data).__name__}")
    try:
        return smal_model_from_arrays(data, num_betas, path.stem)
    except ValueError as e:  # messages name the model (the file's stem): name the file
        raise ValueError(f"{path}: {e}") from e


def save_smal(model: SMALModel, path) -> None:
    """Writes a SMALModel as a pickle-free `.npz` that `load_smal` reads back exactly."""
    sets = model.keypoint_vertex_sets
    offsets = np.cumsum([0] + [len(s) for s in sets])
    num_vertices = model.num_vertices
    arrays = dict(
        v_template=np.asarray(model.v_template),
        shapedirs=np.asarray(model.shapedirs),
        posedirs=np.asarray(model.posedirs).T.reshape(num_vertices, 3, -1),
        J_regressor=np.asarray(model.j_regressor),
        weights=np.asarray(model.lbs_weights),
        f=np.asarray(model.faces),
        kintree_table=np.stack([np.array(model.parents), np.arange(model.num_joints)]),
        joint_names=np.array(model.joint_names),
        keypoint_names=np.array(model.keypoint_names),
        keypoint_vertex_indices=np.array([i for s in sets for i in s], np.int64),
        keypoint_vertex_offsets=offsets,
        name=np.array(model.name),
    )

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    atomic_write(path, write)


def save_obj(path, vertices, faces) -> None:
    """Writes a triangle mesh as Wavefront OBJ (via trimesh), atomically."""
    import trimesh
    mesh = trimesh.Trimesh(np.asarray(vertices, np.float64), np.asarray(faces), process=False)
    atomic_write(path, lambda tmp: mesh.export(tmp, file_type="obj"))
