"""One animal's outputs on disk, written atomically: a hidden temp folder next to the target,
filled completely, then renamed onto it, so a folder that exists is always whole.

    OUT/<name>/  vertices.npy keypoints3d.npy keypoints2d.npy betas.npy pose.npy cam.npy
                 cam_t_full.npy visual_features.npy head_features.npy fused_features.npy
                 mesh.obj overlay.png result.json
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from animax.smal.io import save_obj

ARRAY_FILES = ("vertices", "keypoints3d", "keypoints2d", "betas", "pose", "cam", "cam_t_full",
               "visual_features", "head_features", "fused_features")
RESULT_FILE = "result.json"
FILES = tuple(f"{name}.npy" for name in ARRAY_FILES) + ("mesh.obj", "overlay.png", RESULT_FILE)


def write_animal(folder, result: dict, faces, overlay, info: dict) -> None:
    """Writes the files above into `folder` (replacing an earlier one).

    result: a Predictor result; faces [F, 3]; overlay uint8 RGB image; info: JSON-ready
    metadata, saved in result.json with the array shapes and file list added.
    mesh.obj holds the mesh in the full image's camera frame: vertices + cam_t_full.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        for name in ARRAY_FILES:
            np.save(tmp / f"{name}.npy", result[name])
        save_obj(tmp / "mesh.obj", result["vertices"] + result["cam_t_full"], faces)
        Image.fromarray(overlay).save(tmp / "overlay.png")
        shapes = {name: list(np.shape(result[name])) for name in ARRAY_FILES}
        (tmp / RESULT_FILE).write_text(json.dumps({**info, "arrays": shapes, "files": list(FILES)}, indent=2))
        _replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_folder(new, target):
    """Renames `new` onto `target`; an existing target is moved aside first and then deleted
    (os.replace cannot replace a non-empty folder)."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".old"))
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def remove_stale(folder) -> None:
    """Deletes an earlier run's output folder (recognised by its result.json), so that an
    animal that fails now leaves no folder behind."""
    folder = Path(folder)
    if (folder / RESULT_FILE).is_file():
        shutil.rmtree(folder)
