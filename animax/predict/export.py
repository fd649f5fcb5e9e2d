"""One animal's outputs on disk, written atomically (`animax.files.AtomicFolder`): a folder
that exists is always whole.

    OUT/<name>/  vertices.npy keypoints3d.npy keypoints2d.npy betas.npy pose.npy cam.npy
                 cam_t_full.npy visual_features.npy head_features.npy fused_features.npy
                 mesh.obj overlay.png result.json

or the part of them that `outputs` names: "arrays" (the .npy files), "mesh", "overlay", "json".
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from animax.files import AtomicFile, AtomicFolder
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
    with AtomicFolder(folder) as tmp:
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


def remove_stale(folder) -> None:
    """Deletes an earlier run's output folder (recognised as holding only files this module
    writes), so that an animal that fails now leaves no folder behind."""
    folder = Path(folder)
    if folder.is_dir() and all(p.is_file() and p.name in FILES for p in folder.iterdir()):
        shutil.rmtree(folder)


class ArraysFile:
    """The arrays of a whole run in one .npz instead of .npy files per folder: row r of each
    array (ARRAY_FILES) is animal r, plus `valid` [N] (False where that animal failed), `image`
    [N] (input paths) and `box_index` [N]. Rows are filled from the export threads into
    memory-mapped files beside the target, so memory stays flat; `close` zips them into place
    atomically and `abort` leaves nothing."""

    def __init__(self, path, images, box_indices):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".rows"))
        self.images, self.box_indices = list(images), np.asarray(box_indices, np.int32)
        self.valid = np.zeros(len(self.images), bool)
        self.arrays = {}
        self.lock = threading.Lock()

    def put(self, row: int, result: dict) -> None:
        self._open({name: np.shape(result[name]) for name in ARRAY_FILES})
        # Rows are distinct per animal: filling them needs no lock.
        for name, array in self.arrays.items():
            array[row] = result[name]
        self.valid[row] = True

    def put_rows(self, first: int, part) -> None:
        """Rows first, first + 1, ... from another arrays file's contents (`part`: a loaded .npz);
        one whose animals all failed holds no arrays and leaves its rows invalid."""
        if not part["valid"].any():
            return
        self._open({name: part[name].shape[1:] for name in ARRAY_FILES})
        for name, array in self.arrays.items():
            rows = part[name]
            array[first:first + len(rows)] = rows
        self.valid[first:first + len(part["valid"])] = part["valid"]

    def _open(self, shapes: dict) -> None:
        """Makes the row files with the first result, whose shapes (one row's) they take."""
        with self.lock:
            if not self.arrays:
                self.arrays = {name: np.lib.format.open_memmap(self.tmp / f"{name}.npy", "w+", np.float32,
                                                               (len(self.images),) + tuple(shapes[name]))
                               for name in ARRAY_FILES}

    def close(self) -> None:
        with AtomicFile(self.path) as tmp:
            np.savez(tmp, valid=self.valid, image=np.array(self.images, str), box_index=self.box_indices,
                     **self.arrays)
        self.abort()

    def abort(self) -> None:
        self.arrays = {}
        shutil.rmtree(self.tmp, ignore_errors=True)


def part_path(path, index: int, count: int) -> Path:
    """Where process `index` of `count` writes its rows of the arrays file `path` (hidden, beside
    it) for `join_parts`."""
    path = Path(path)
    return path.with_name(f".{path.name}.part{index}-of-{count}.npz")


def join_parts(path, count: int) -> None:
    """The arrays file `path` from the `count` processes' parts (`part_path`; each process wrote its
    contiguous share of the jobs, so the rows join in process order), written atomically; the parts
    are then removed. Memory holds one part's array at a time."""
    parts = [np.load(part_path(path, i, count)) for i in range(count)]
    joined = ArraysFile(path, [image for part in parts for image in part["image"]],
                        np.concatenate([part["box_index"] for part in parts]))
    try:
        first = 0
        for part in parts:
            joined.put_rows(first, part)
            first += len(part["valid"])
    except BaseException:
        joined.abort()
        raise
    joined.close()
    for i, part in enumerate(parts):
        part.close()
        part_path(path, i, count).unlink()
