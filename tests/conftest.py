"""Shared fixtures: random models in the released SMAL layout. Helpers live in tests/helpers/."""

import pytest

from helpers.smal_files import chumpy_pickle_bytes, random_smal_arrays


@pytest.fixture
def released_smal_file(tmp_path):
    """A released-format SMAL pickle (chumpy objects, sparse regressor, uint root) and its arrays."""
    arrays = random_smal_arrays()
    path = tmp_path / "my_smal_model.pkl"
    path.write_bytes(chumpy_pickle_bytes(arrays, {"v_template", "shapedirs", "posedirs", "weights"}))
    return path, arrays
