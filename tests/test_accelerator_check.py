"""bench/accelerator_check.py runs (in its --tiny mode, on the CPU) and writes its JSON, so the
script that will first meet a GPU cannot rot between lent machines."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_check(tmp_path, *sections):
    out = tmp_path / "check.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "ANIMAX_COMPILE_CACHE": "none", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "accelerator_check.py"), "--tiny", "--out", str(out),
                           "--sections", *sections], capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert not result["errors"]
    return result


def test_tiny_check_measures_the_fast_sections(tmp_path):
    """The quick sections (one small compile each): environment, infer.py's loop, parity, PyTorch."""
    result = run_check(tmp_path, "environment", "infer", "parity", "torch")
    measures = {row["measure"]: row for row in result["rows"]}
    assert measures["device"]["value"].startswith("cpu")
    assert measures["infer end to end"]["images"] == 6
    assert measures["f32 HIGHEST vs CPU: vertices"]["value"] == 0.0       # one device: the same run
    assert measures["backbone float32: animax / PyTorch images/s"]["value"] > 0


@pytest.mark.slow
def test_tiny_check_runs_every_section(tmp_path):
    """Pipeline precisions, attention implementations and the training step too (several
    compiles: minutes on a loaded 2-core machine)."""
    result = run_check(tmp_path, "environment", "pipeline", "attention", "infer", "train", "parity", "torch")
    sections = {row["section"] for row in result["rows"]}
    assert sections == {"environment", "pipeline", "attention", "infer", "train", "parity", "torch"}
