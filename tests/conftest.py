"""Shared fixtures: random models in the released SMAL layout, and one infer.py run over awkward
inputs that several test files read. Helpers live in tests/helpers/."""

import json
import os
import shutil
import tempfile
from types import SimpleNamespace

import pytest
from PIL import Image

from animax.runtime import enable_compile_cache
from helpers.images import smooth_image
from helpers.infer_cli import BATCH, EXAMPLE, EXIF_BOX, MULTI_BOXES_XYWH, run_cli, write_images
from helpers.smal_files import chumpy_pickle_bytes, random_smal_arrays

# One persistent compilation cache for the session, in its own temporary folder (nothing is
# written under the user's ~/.cache): the many tests that build the same small programs afresh
# (a new Predictor or infer.py run each) load them instead of compiling them again. Child
# processes inherit it through the variable. ANIMAX_TEST_COMPILE_CACHE=none turns it off.
_OWN_CACHE = not os.environ.get("ANIMAX_TEST_COMPILE_CACHE")
_CACHE = os.environ.get("ANIMAX_TEST_COMPILE_CACHE") or tempfile.mkdtemp(prefix="animax_test_jax_cache_")
os.environ["ANIMAX_COMPILE_CACHE"] = _CACHE
enable_compile_cache(_CACHE)


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture
def released_smal_file(tmp_path):
    """A released-format SMAL pickle (chumpy objects, sparse regressor, uint root) and its arrays."""
    arrays = random_smal_arrays()
    path = tmp_path / "my_smal_model.pkl"
    path.write_bytes(chumpy_pickle_bytes(arrays, {"v_template", "shapedirs", "posedirs", "weights"}))
    return path, arrays


@pytest.fixture(scope="session")
def batch_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    folder = root / "images"
    folder.mkdir()
    upright = write_images(folder)
    more = root / "more"
    more.mkdir()
    for k, name in enumerate(("g1.png", "g2.png", "g3.jpg")):
        Image.fromarray(smooth_image(100, 100, seed=10 + k)).save(more / name)
    (root / "empty").mkdir()
    single = {"rgb.jpg": [[0, 0, 160, 120]], "plain.png": [[0, 0, 160, 120]], "grey.png": [[20, 10, 100, 100]],
             "rgba.png": [[0, 0, 160, 120]], "palette.png": [[0, 0, 160, 120]], "cmyk.jpg": [[0, 0, 160, 120]],
             "deep.png": [[0, 0, 160, 120]], "truncated.jpg": [[0, 0, 10, 10]], "text.jpg": [[0, 0, 10, 10]],
             "g1.png": [[0, 0, 100, 100]], "g2.png": [[10, 10, 80, 80]], "no_animal.png": [],
             "standin_quadruped.png": [[0, 0, 640, 480]]}
    x1, y1, x2, y2 = EXIF_BOX
    boxes = {**single, "exif.jpg": [[x1, y1, x2 - x1, y2 - y1]], "multi.png": MULTI_BOXES_XYWH}
    (root / "boxes.json").write_text(json.dumps({"format": "xywh", "boxes": boxes}))
    out = root / "out"
    (out / "multi_2").mkdir(parents=True)           # an earlier run's output for an animal that now fails
    (out / "multi_2" / "result.json").write_text("{}")
    code, lines = run_cli(["--input", folder, more / "*.png", root / "missing.jpg", root / "empty", EXAMPLE,
                           "--boxes", root / "boxes.json", "--out_dir", out, "--batch-size", BATCH, "--workers", 2,
                           "--random-weights"])
    return SimpleNamespace(code=code, lines=lines, out=out, root=root, folder=folder, upright=upright)
