"""Loading released-format SMAL pickles without chumpy, and refusing pickles that carry code."""

import os
import pickle

import numpy as np
import pytest

from animax.safe_pickle import UnsafePickleError
from animax.smal import load_pickle, load_smal
from animax.smal.constants import SMAL_KEYPOINT_VERTEX_SETS
from helpers.smal_files import chumpy_pickle_bytes


def test_released_format_pickle_loads_source_arrays(released_smal_file):
    path, arrays = released_smal_file
    model = load_smal(path, num_betas=41)
    np.testing.assert_allclose(model.v_template, arrays["v_template"], rtol=1e-6)
    np.testing.assert_allclose(model.shapedirs, arrays["shapedirs"][..., :41], rtol=1e-6)
    np.testing.assert_allclose(model.posedirs, arrays["posedirs"].reshape(-1, 306).T, rtol=1e-6)
    np.testing.assert_allclose(model.j_regressor, arrays["J_regressor"].toarray(), rtol=1e-6)
    np.testing.assert_allclose(model.lbs_weights, arrays["weights"], rtol=1e-6)
    np.testing.assert_array_equal(model.faces, arrays["f"])
    assert model.parents[0] == -1
    assert model.parents[1:] == tuple(arrays["kintree_table"][0, 1:])
    assert model.keypoint_vertex_sets == SMAL_KEYPOINT_VERTEX_SETS
    assert model.num_betas == 41


def test_chumpy_objects_become_their_x_arrays(tmp_path):
    pic = np.random.default_rng(0).normal(size=(105, 105))
    raw = chumpy_pickle_bytes({"pic": pic, "mean_pose": np.zeros(105)}, {"pic"}, protocol=2)
    path = tmp_path / "prior.pkl"
    path.write_bytes(raw)
    data = load_pickle(path)
    np.testing.assert_array_equal(data["pic"], pic)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_payload_pickle_is_refused_without_running(tmp_path, protocol):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": _Payload(marker)}, protocol=protocol))
    with pytest.raises(UnsafePickleError, match=r"(posix|os)\.system"):
        load_smal(path)
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["evil.pkl"]


def test_builtin_eval_is_refused(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"cbuiltins\neval\n(V1+1\ntR.")
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_pickle(path)


def test_not_a_smal_file_names_the_missing_keys(tmp_path):
    path = tmp_path / "other.pkl"
    path.write_bytes(pickle.dumps({"v_template": np.zeros((3, 3))}))
    with pytest.raises(ValueError, match="missing keys"):
        load_smal(path)
    with pytest.raises(FileNotFoundError, match="nothing.pkl"):
        load_smal(tmp_path / "nothing.pkl")
