"""The Khronos glTF-Validator (npm `gltf-validator`, the reference validator of glTF 2.0) run by
node on a file: the test suite's independent judge of the .glb files animax writes."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

VERSION = "2.0.0-dev.3.10"
# Installed once per environment, beside the virtual environment's packages.
FOLDER = Path(sys.prefix) / "gltf-validator"

_SCRIPT = """
const validator = require(process.argv[1]);
const data = new Uint8Array(require("fs").readFileSync(process.argv[2]));
validator.validateBytes(data, {maxIssues: 0})
  .then(report => console.log(JSON.stringify(report)))
  .catch(error => { console.error(String(error)); process.exit(1); });
"""


def _installed() -> Path:
    module = FOLDER / "node_modules" / "gltf-validator"
    if (not (module / "package.json").is_file()
            or json.loads((module / "package.json").read_text())["version"] != VERSION):
        if shutil.which("npm") is None or shutil.which("node") is None:
            pytest.skip("node and npm are needed to run the Khronos glTF-Validator")
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(FOLDER),
                        f"gltf-validator@{VERSION}"], check=True, capture_output=True, timeout=300)
    return module


def validate(path) -> dict:
    """The validator's report on PATH: {"issues": {"numErrors", "numWarnings", "messages": [...]}, ...}."""
    module = _installed()
    result = subprocess.run(["node", "-e", _SCRIPT, str(module), str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
