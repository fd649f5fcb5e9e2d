"""DeepLabCut label files: `labeled-data/<video>/CollectedData_<scorer>.csv` (or `.h5`).

A CSV has header rows named in its first column — `scorer`, `individuals` (multi-animal
projects only), `bodyparts`, `coords` — then one row per labelled frame. The frame's path
is either one column (`labeled-data/<video>/img001.png`, `\\` on Windows) or three index
columns (`labeled-data`, `<video>`, `img001.png`). Coordinates come in x, y (and, for
machine labels, likelihood) columns per body part; an empty or NaN cell is an unlabelled
part. The `.h5` file holds the same table as a pandas DataFrame; it is read with h5py by
`animax.data.hdf5.read_frame`, never by pandas/PyTables (which unpickle, i.e. run code from, the
file).

Label files are read from users' projects, so their size is bounded: more than MAX_ROWS
labelled frames (or a CSV over MAX_CSV_BYTES) is refused with one line naming the file, before
the rows are held in memory.
"""

from __future__ import annotations

import array
import csv
import dataclasses
import itertools
from pathlib import Path

import numpy as np

from animax.data import hdf5

# A labelled DeepLabCut project has hundreds to a few thousand frames per video; machine labels
# of a video have one row per frame (an hour at 60 fps: 216,000). Beyond these, refused.
MAX_ROWS = 1_000_000
MAX_COLUMNS = 10_000
MAX_CSV_BYTES = 512 << 20
MAX_LINE_CHARS = 1 << 20       # one CSV line (a row of MAX_COLUMNS numbers fits easily)
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
    """All labelled animals of a CollectedData file. Raises ValueError naming the file if it is
    malformed, refused (pickled objects in an .h5) or beyond the size limits."""
    path = Path(path)
    if path.suffix == ".h5":
        return _read_h5(path)
    if path.stat().st_size > MAX_CSV_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, more than the limit of {MAX_CSV_BYTES} "
                         "for a label file")
    lines = _count_lines(path)
    if lines > MAX_ROWS + len(_HEADER_NAMES):
        raise ValueError(f"{path}: {lines} lines, more than the limit of {MAX_ROWS} labelled rows for a label file")
    with open(path, newline="", encoding="utf-8-sig") as f:
        try:
            return _read_csv(path, csv.reader(_bounded_lines(path, f)))
        except csv.Error as e:
            raise ValueError(f"{path}: not a readable CSV ({e})") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{path}: not UTF-8 text ({e})") from None


def _count_lines(path) -> int:
    """Line breaks in the file, counted in 1 MiB chunks: a file of too many rows is refused
    before any row is parsed or held."""
    count = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def _bounded_lines(path, f):
    """The file's lines, refusing one longer than MAX_LINE_CHARS before it is parsed."""
    while line := f.readline(MAX_LINE_CHARS + 1):
        if len(line) > MAX_LINE_CHARS:
            raise ValueError(f"{path}: a line longer than {MAX_LINE_CHARS} characters")
        yield line


def _read_csv(path, reader) -> list[LabeledFrame]:
    rows = (row for row in reader if any(cell.strip() for cell in row))
    headers = {}
    row = next(rows, None)
    while row and row[0].strip().lower() in _HEADER_NAMES:
        if len(row) > MAX_COLUMNS + 3:
            raise ValueError(f"{path}: {len(row)} columns, more than the limit of {MAX_COLUMNS}")
        headers[row[0].strip().lower()] = row
        row = next(rows, None)
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
    for line, row in enumerate(itertools.chain([row] if row else [], rows), start=len(headers) + 1):
        if len(paths) >= MAX_ROWS:
            raise ValueError(f"{path}: more than {MAX_ROWS} labelled rows (the limit for a label file)")
        paths.append("/".join(cell.strip() for cell in row[:num_index] if cell.strip()))
        cells = row[num_index:num_index + len(columns)]
        cells += [""] * (len(columns) - len(cells))
        try:
            values.append(array.array("d", [float(c) if c.strip() else np.nan for c in cells]))
        except ValueError as e:
            raise ValueError(f"{path}: line {line}: {e}") from None
    table = np.frombuffer(b"".join(values), np.float64) if values else np.zeros(0)
    return _frames(paths, columns, table.reshape(len(paths), len(columns)))


def _read_h5(path: Path) -> list[LabeledFrame]:
    frame = hdf5.read_frame(path, max_rows=MAX_ROWS)
    levels = [str(name).lower() if name is not None else None for name in frame.column_names]
    if "bodyparts" not in levels or "coords" not in levels:
        raise ValueError(f"{path}: columns are not DeepLabCut's (levels {frame.column_names}, "
                         "expected bodyparts and coords)")
    if len(frame.columns) > MAX_COLUMNS:
        raise ValueError(f"{path}: {len(frame.columns)} columns, more than the limit of {MAX_COLUMNS}")
    columns = [(str(key[levels.index("individuals")]) if "individuals" in levels else "",
                str(key[levels.index("bodyparts")]), str(key[levels.index("coords")]).lower())
               for key in frame.columns]
    paths = ["/".join(map(str, key)) for key in frame.index]
    return _frames(paths, columns, frame.values)


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
