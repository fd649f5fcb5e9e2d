"""DeepLabCut label files: `labeled-data/<video>/CollectedData_<scorer>.csv` (or `.h5`).

A CSV has header rows named in its first column — `scorer`, `individuals` (multi-animal
projects only), `bodyparts`, `coords` — then one row per labelled frame. The frame's path
is either one column (`labeled-data/<video>/img001.png`, `\\` on Windows) or three index
columns (`labeled-data`, `<video>`, `img001.png`). Coordinates come in x, y (and, for
machine labels, likelihood) columns per body part; an empty or NaN cell is an unlabelled
part. The `.h5` file holds the same table as a pandas DataFrame and is read only when
pandas and PyTables are installed.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np

_HEADER_NAMES = ("scorer", "individuals", "bodyparts", "coords")


@dataclasses.dataclass(frozen=True)
class LabeledFrame:
    """One animal in one frame."""
    image: str                      # path as written in the label file, '/'-separated
    individual: str                 # '' in single-animal projects
    bodyparts: tuple[str, ...]
    xy: np.ndarray                  # [N, 2] float64 pixels, NaN = unlabelled


def label_files(video_dir: Path) -> list[Path]:
    """The video's CollectedData files: the CSV, else the .h5 (they hold the same labels)."""
    csvs = sorted(video_dir.glob("CollectedData_*.csv"))
    return csvs or sorted(video_dir.glob("CollectedData_*.h5"))


def read_labels(path: Path) -> list[LabeledFrame]:
    """All labelled animals of a CollectedData file. Raises ValueError if it is malformed,
    ImportError for an .h5 without pandas and PyTables."""
    if path.suffix == ".h5":
        return _read_h5(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if any(cell.strip() for cell in row)]
    headers = {}
    while rows and rows[0] and rows[0][0].strip().lower() in _HEADER_NAMES:
        row = rows.pop(0)
        headers[row[0].strip().lower()] = row
    if "bodyparts" not in headers or "coords" not in headers:
        raise ValueError(f"{path}: no bodyparts/coords header rows")
    coords = [c.strip().lower() for c in headers["coords"]]
    # Index columns are those before the first coordinate column: 1 (a path) or 3.
    num_index = next((i for i, c in enumerate(coords) if c in ("x", "y", "likelihood")), None)
    if num_index is None or num_index < 1:
        raise ValueError(f"{path}: no x/y columns in the coords row")
    individuals = headers.get("individuals", [""] * len(coords))
    columns = [(individuals[i].strip(), headers["bodyparts"][i].strip(), coords[i])
               for i in range(num_index, len(coords))]
    paths, values = [], []
    for line, row in enumerate(rows, start=len(headers) + 1):
        paths.append("/".join(cell.strip() for cell in row[:num_index] if cell.strip()))
        cells = row[num_index:num_index + len(columns)]
        cells += [""] * (len(columns) - len(cells))
        try:
            values.append([float(c) if c.strip() else np.nan for c in cells])
        except ValueError as e:
            raise ValueError(f"{path}: line {line}: {e}") from None
    return _frames(paths, columns, np.array(values, np.float64).reshape(len(paths), len(columns)))


def _read_h5(path: Path) -> list[LabeledFrame]:
    try:
        import pandas
    except ImportError:
        raise ImportError(f"{path}: reading DeepLabCut .h5 labels needs pandas and tables "
                          "(pip install pandas tables), or export the CSV") from None
    table = pandas.read_hdf(path)
    levels = list(table.columns.names)
    columns = [(str(key[levels.index("individuals")]) if "individuals" in levels else "",
                str(key[levels.index("bodyparts")]), str(key[levels.index("coords")]).lower())
               for key in table.columns]
    paths = ["/".join(map(str, key)) if isinstance(key, tuple) else str(key) for key in table.index]
    return _frames(paths, columns, table.to_numpy(np.float64))


def _frames(paths, columns, values) -> list[LabeledFrame]:
    """Groups a label table (columns (individual, bodypart, coord), values [rows, columns])
    into one LabeledFrame per frame and individual."""
    frames = []
    for individual in dict.fromkeys(ind for ind, _, _ in columns):
        bodyparts = list(dict.fromkeys(bp for ind, bp, _ in columns if ind == individual))
        where = {(bp, c): j for j, (ind, bp, c) in enumerate(columns) if ind == individual}
        missing = np.full(len(paths), np.nan)
        xy = np.stack([np.stack([values[:, where[bp, c]] if (bp, c) in where else missing
                                 for c in ("x", "y")], -1) for bp in bodyparts], 1)
        for row, image in enumerate(paths):
            frames.append(LabeledFrame(image.replace("\\", "/"), individual, tuple(bodyparts),
                                       xy[row]))
    return frames
