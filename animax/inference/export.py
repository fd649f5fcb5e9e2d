"""One animal's outputs on disk, written atomically: a hidden temp folder next to the target,
filled completely, then renamed onto it, so a folder that exists is always whole.

    OUT/<name>/  vertices.npy keypoints3d.npy keypoints2d.npy betas.npy pose.npy cam.npy
                 cam_t_full.npy visual_features.npy head_features.npy fused_features.npy
                 mesh.obj overlay.png result.json

or the part of them that `outputs` names: "arrays" (the .npy files), "mesh", "overlay", "json".
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
OUTPUTS = {"arrays": tuple(f"{name}.npy" for name in ARRAY_FILES), "mesh": ("mesh.obj",),
           "overlay": ("overlay.png",), "json": (RESULT_FILE,)}
FILES = sum(OUTPUTS.values(), ())


def files_of(outputs=tuple(OUTPUTS)) -> tuple[str, ...]:
    """The file names that `outputs` (keys of OUTPUTS) write, in FILES order."""
    return tuple(name for kind in OUTPUTS if kind in outputs for name in OUTPUTS[kind])


def write_animal(folder, result: dict, faces, overlay, info: dict, outputs=tuple(OUTPUTS)) -> None:
    """Writes the files of `outputs` into `folder` (replacing an earlier one).

    result: a Predictor result; faces [F, 3]; overlay uint8 RGB image (None without "overlay");
    info: JSON-ready metadata, saved in result.json with the array shapes and file list added.
    mesh.obj holds the mesh in the full image's camera frame: vertices + cam_t_full.
    """
    folder = Path(folder)
    tmp = new_folder_beside(folder)
    try:
        if "arrays" in outputs:
            for name in ARRAY_FILES:
                np.save(tmp / f"{name}.npy", result[name])
        if "mesh" in outputs:
            save_obj(tmp / "mesh.obj", result["vertices"] + result["cam_t_full"], faces)
        if "overlay" in outputs:
            Image.fromarray(overlay).save(tmp / "overlay.png")
        if "json" in outputs:
            shapes = {name: list(np.shape(result[name])) for name in ARRAY_FILES}
            (tmp / RESULT_FILE).write_text(json.dumps({**info, "arrays": shapes, "files": list(files_of(outputs))},
                                                      indent=2))
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def new_folder_beside(folder) -> Path:
    """An empty hidden folder next to `folder` (parents created) to fill and then `replace_folder`
    onto it, readable by all as a plain mkdir's would be (mkdtemp's are owner-only; reading the
    umask would change it for the other export threads)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    tmp.chmod(0o755)
    return tmp


def replace_folder(new, target):
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
    """Deletes an earlier run's output folder (recognised as holding only files this module
    writes), so that an animal that fails now leaves no folder behind."""
    folder = Path(folder)
    if folder.is_dir() and all(p.is_file() and p.name in FILES for p in folder.iterdir()):
        shutil.rmtree(folder)
