"""infer.py over several processes: the share of each, the join of the arrays file's parts, the
refusal of sequences, and, end to end, two processes joined by jax.distributed (one CPU device
each) against one on the same inputs: the same folders and result.json, one joined arrays file
equal to the single run's, no part files left, and a broken image in process 1's share failing
the run on both.

The end-to-end processes are separate interpreters, since jax.distributed must start before jax
does; marked slow: 40-70 s on 2 CPU cores (the single run goes first and fills the compilation
cache that the two read).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from animax.predict.export import ARRAY_FILES, ArraysFile, join_parts, part_path
from animax.predict.inputs import ImageJob, share
from configs import tiny
from helpers.images import smooth_image
from helpers.infer_cli import error_lines, run_cli
from helpers.nn_reference import f32_tol, pipeline_steps, rel_err
from helpers.processes import finish, free_port

REPO = Path(__file__).resolve().parents[1]
# Six animals: process 0 takes a and b (3), process 1 c, d and e (3), d being broken.
BOXES = {"a.png": [[0, 0, 64, 48]], "b.png": [[0, 0, 40, 40], [20, 8, 64, 48]], "c.png": [[4, 4, 60, 44]],
         "d.jpg": [[0, 0, 10, 10]], "e.png": [[0, 0, 64, 48]]}


def test_share_is_contiguous_disjoint_and_balanced_by_animals():
    jobs = [ImageJob(Path(f"{k}.png"), ((0, 0, 1, 1),) * n, str(k)) for k, n in enumerate([1, 2, 1, 1, 1, 0, 3])]
    parts = [share(jobs, i, 3) for i in range(3)]
    assert sum(parts, []) == jobs
    assert [sum(j.num_animals for j in part) for part in parts] == [3, 3, 3]
    assert share(jobs[:1], 0, 2) + share(jobs[:1], 1, 2) == jobs[:1] and share([], 0, 2) == []


def test_joined_parts_equal_one_arrays_file(tmp_path):
    """Three processes' parts: rows 0-1 (one failed), row 2 (failed: the part has no arrays), none."""
    rng = np.random.default_rng(0)
    results = [{name: rng.normal(size=(3, 2)).astype(np.float32) for name in ARRAY_FILES} for _ in range(3)]
    images, boxes = ["a.png", "a.png", "b.png"], [0, 1, 0]
    whole = ArraysFile(tmp_path / "whole.npz", images, boxes)
    whole.put(0, results[0])
    whole.close()
    for i, rows in enumerate(([0, 1], [2], [])):
        part = ArraysFile(part_path(tmp_path / "joined.npz", i, 3), [images[r] for r in rows], [boxes[r] for r in rows])
        if i == 0:
            part.put(0, results[0])
        part.close()
    join_parts(tmp_path / "joined.npz", 3)
    joined, expected = np.load(tmp_path / "joined.npz"), np.load(tmp_path / "whole.npz")
    assert sorted(joined.files) == sorted(expected.files)
    for key in expected.files:
        np.testing.assert_array_equal(joined[key], expected[key], err_msg=key)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joined.npz", "whole.npz"]


def test_sequences_refuse_several_processes(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    code, lines = run_cli(["--input", tmp_path / "clip.mp4", "--out_dir", tmp_path / "out", "--random-weights"])
    assert code == 1 and error_lines(lines) == ["error: videos and --sequence folders run in one process: start "
                                                "infer.py for them without --num_processes"], lines
    assert not (tmp_path / "out").exists()


def _infer(out, arrays_file, images, *distributed, cache):
    argv = ["--input", images, "--boxes", images.parent / "boxes.json", "--out_dir", out, "--arrays-file",
            arrays_file, "--random-weights", "--outputs", "arrays,json", "--workers", 1, "--compile-cache", cache,
            *distributed]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(REPO / "infer.py"), *map(str, argv)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _results(out):
    """{folder: result.json without its timings}."""
    results = {}
    for folder in sorted(out.iterdir()):
        result = json.loads((folder / "result.json").read_text())
        result.pop("timings_s")
        results[folder.name] = result
    return results


@pytest.mark.slow
def test_two_processes_write_what_one_writes(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for k, name in enumerate(BOXES):
        Image.fromarray(smooth_image(48, 64, seed=k)).save(images / name)
    (images / "d.jpg").write_text("not an image\n")
    (tmp_path / "boxes.json").write_text(json.dumps(BOXES))
    port = free_port()
    cache = tmp_path / "jax_cache"
    code, out = finish(_infer(tmp_path / "one", tmp_path / "one.npz", images, cache=cache))
    two = [_infer(tmp_path / "two", tmp_path / "two.npz", images, "--coordinator_address", f"127.0.0.1:{port}",
                  "--num_processes", 2, "--process_id", i, cache=cache) for i in range(2)]
    (code0, out0), (code1, out1) = (finish(p) for p in two)

    assert code == 1 and code0 == 1 and code1 == 1, (out0, out1, out)
    errors = [line for line in out1.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {images / 'd.jpg'}: cannot read image"), out1
    assert "error: failures per process: [0, 1]" in out0, out0
    assert "done: 2 images, 3 animals exported, 0 failures" in out0, out0
    assert _results(tmp_path / "two") == _results(tmp_path / "one")
    assert sorted(_results(tmp_path / "one")) == ["a", "b_0", "b_1", "c", "e"]
    joined, single = np.load(tmp_path / "two.npz"), np.load(tmp_path / "one.npz")
    assert sorted(joined.files) == sorted(single.files)
    for key in ("valid", "image", "box_index"):
        np.testing.assert_array_equal(joined[key], single[key], err_msg=key)
    assert list(single["valid"]) == [True, True, True, True, False, True]
    # The same model on the same crops, in other batch rows: float32 noise at most.
    tol = f32_tol(*pipeline_steps(tiny.get_config().model), sides=2)
    for key in set(single.files) - {"valid", "image", "box_index"}:
        assert rel_err(joined[key], single[key]) < tol, key
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boxes.json", "images", "jax_cache", "one", "one.npz",
                                                          "two", "two.npz"]
