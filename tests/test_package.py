"""animax is a real package: its wheel, installed away from the checkout, runs the console
scripts from an empty directory with everything it needs inside (the stand-in body model,
the shipped demo model, the random-weights config, the keypoint maps)."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "standin_quadruped.png"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(site folder with the wheel's animax, its bin folder, the wheel)."""
    tmp = tmp_path_factory.mktemp("wheel")
    # No build isolation: the venv's own setuptools builds it, offline.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp / "dist"), str(REPO)], check=True, capture_output=True)
    wheel = next((tmp / "dist").glob("animax-*.whl"))
    site = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    return site, site / "bin", wheel


def _run(installed, cwd, *args):
    site, bin_dir, _ = installed
    # The wheel's copy first on the path: the checkout (and its editable install) must not be needed.
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True)


def test_wheel_holds_the_package_data_and_no_checkout_folders(installed):
    names = zipfile.ZipFile(installed[2]).namelist()
    assert {"animax/smal/standin.py", "animax/image/crop.py", "animax/cli/infer.py"} <= set(names)
    assert "animax/data/keypoint_maps/horse10.py" in names and "animax/data/keypoint_maps/ap10k.py" in names
    shipped = [n for n in names if n.startswith("animax/assets/standin_demo/")]
    assert "animax/assets/standin_demo/config.json" in shipped and any("/state/" in n for n in shipped)
    assert not any(n.startswith(("configs/", "tests/", "bench/")) for n in names)


def test_console_scripts_run_from_an_empty_directory(installed, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    # absl's --help (animax-train) exits 1 by its own convention; argparse's with 0.
    for script, flag, code in (("animax-infer", "--out_dir", 0), ("animax-convert", "--to-torch", 0),
                               ("animax-train", "--workdir", 1)):
        run = _run(installed, empty, script, "--help")
        assert run.returncode == code and flag in run.stdout, run.stderr
    probe = subprocess.run([sys.executable, "-c", "import animax, animax.data.keypoint_maps as k; "
                            "print(animax.__file__); print(k.load_keypoint_map('horse10').name)"],
                           cwd=empty, env={**os.environ, "PYTHONPATH": str(installed[0])}, capture_output=True,
                           text=True, check=True)
    module_file, map_name = probe.stdout.split()
    assert Path(module_file).is_relative_to(installed[0]) and map_name == "horse10"
    run = _run(installed, empty, "animax-infer", "--input", str(EXAMPLE), "--out_dir", "out")
    assert run.returncode == 0, run.stderr
    assert (empty / "out" / EXAMPLE.stem / "overlay.png").is_file()
    assert "no --ckpt given: the shipped demo model" in run.stderr
    run = _run(installed, empty, "animax-infer", "--input", str(EXAMPLE), "--out_dir", "out", "--random-weights")
    assert run.returncode == 0 and "RANDOM weights (tiny (built in))" in run.stderr, run.stderr
