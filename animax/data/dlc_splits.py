"""A DeepLabCut project's own train/test splits, and the Horse-10 benchmark's split and scale files.

DeepLabCut's `create_training_dataset` writes into
`training-datasets/iteration-<i>/UnaugmentedDataSet_<Task><date>/`:

* `CollectedData_<scorer>.h5`: every labelled frame of the project in one DataFrame (key
  'df_with_missing'; one row per frame, indexed by its path 'labeled-data/<video>/<image>', or by
  the MultiIndex ('labeled-data', video, image) in newer DeepLabCut). Its row numbers are what
  the split indices count; the order is DeepLabCut's concatenation of the videos, not sorted.
* `Documentation_data-<Task>_<int(100 * trainFraction)>shuffle<k>.pickle`: the pickled list
  [data, trainIndices, testIndices, trainFraction]. `data` holds one dict per training frame
  with labels ({'image': its path, 'size': array [channels, height, width], 'joints': int array
  [n, 3] of (part, x, y)}); the indices are integer arrays (or lists) of rows of that table.

The Horse-10 benchmark (github.com/amathislab/Horse-10-benchmark) publishes the same three
shuffles as `TrainTestInfo_shuffle<k>.csv` (its export_splits.py: an unnamed row-number column,
then `trainIndices`, `testIndices_withinDomain`, `testIndices_acrossDomain`, each a column of
frame paths, empty below its last frame) and the PCK length as `Horsescale.h5` (a DataFrame under
'df_with_missing', one row per frame of the combined table, one column 'scale': the horse's
nose-to-eye distance in pixels, the same for all frames of a horse).

Horse-10's protocol (the benchmark's normalize_errors.py): the training horses are the videos of
the train frames; test frames of a training horse are within-domain, all other test frames
out-of-domain.

Everything here reads files a user could have been sent: the pickle with
`animax.safe_pickle.RestrictedUnpickler` allowing plain containers and numpy arrays only, the .h5
files with `animax.data.hdf5.read_frame` (never pandas/PyTables), the CSV within size limits.
Problems raise ValueError (UnsafePickleError for a refused global) naming the file.
"""

from __future__ import annotations

import builtins
import codecs
import csv
import dataclasses
import re
from pathlib import Path

import numpy as np

from animax.data import hdf5
from animax.safe_pickle import NUMPY_GLOBALS, RestrictedUnpickler

MAX_PICKLE_BYTES = 256 << 20      # Horse-10's Documentation pickles are a few MB
MAX_CSV_BYTES = 64 << 20          # its TrainTestInfo CSVs some 300 kB
MAX_LINE_CHARS = 1 << 16
MAX_FRAMES = 1_000_000

DOCUMENTATION = re.compile(r"Documentation_data-(?P<task>.+)_(?P<percent>\d+)shuffle(?P<shuffle>\d+)\.pickle")
TRAIN_TEST_INFO = "TrainTestInfo_shuffle{}.csv"
TRAIN_TEST_INFO_COLUMNS = ("trainIndices", "testIndices_withinDomain", "testIndices_acrossDomain")
HORSE_SCALE = "Horsescale.h5"

_numeric = np._core.numeric if hasattr(np, "_core") else np.core.numeric
# What a Documentation pickle references: numpy arrays (protocol 5, DeepLabCut's
# pickle.HIGHEST_PROTOCOL on Python >= 3.8, writes them through `_frombuffer`; protocols 2-4 through
# `_reconstruct`), numpy scalars, and, in protocols 0-2, bytes and a few builtin containers.
DOCUMENTATION_GLOBALS = dict(NUMPY_GLOBALS)
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    DOCUMENTATION_GLOBALS[(_module, "_frombuffer")] = _numeric._frombuffer
for _name in ("list", "dict", "tuple", "set", "frozenset", "int", "float", "bool", "str", "bytes", "bytearray"):
    DOCUMENTATION_GLOBALS[("builtins", _name)] = getattr(builtins, _name)
DOCUMENTATION_GLOBALS[("_codecs", "encode")] = codecs.encode


@dataclasses.dataclass(frozen=True)
class ShuffleSplit:
    """One shuffle's frames per split, as '/'-separated paths ('labeled-data/<video>/<image>')."""
    train: list[str]
    test_within: list[str]              # test frames of the training horses
    test: list[str]                     # test frames of the other horses (out-of-domain)
    source: str                         # "documentation pickle" or "TrainTestInfo CSV"
    files: tuple[Path, ...]             # the files read, the split file first
    train_fraction: float | None = None


def frame_path(path) -> str:
    """A frame's path as a '/'-separated string, from a string (either separator) or the parts of
    a row MultiIndex."""
    parts = path if isinstance(path, (tuple, list)) else (path,)
    return "/".join(str(p) for p in parts).replace("\\", "/")


def frame_key(path) -> str:
    """'<video>/<image>': what names a frame across label files, split files and machines (label
    files often keep the labelling machine's absolute paths)."""
    return "/".join(frame_path(path).split("/")[-2:])


def video_of(path) -> str:
    parts = frame_path(path).split("/")
    return parts[-2] if len(parts) > 1 else ""


def training_set_folders(project: Path) -> list[Path]:
    return sorted(p for p in Path(project).glob("training-datasets/iteration-*/UnaugmentedDataSet_*") if p.is_dir())


def find_documentation(project: Path, shuffle: int) -> list[Path]:
    """The project's Documentation_data-*shuffle<shuffle>.pickle files (any iteration, any train
    fraction)."""
    return [p for folder in training_set_folders(project) for p in sorted(folder.glob("Documentation_data-*.pickle"))
            if (m := DOCUMENTATION.fullmatch(p.name)) and int(m["shuffle"]) == shuffle]


def find_in_project(project: Path, name: str) -> list[Path]:
    """`name` in the project folder, then in its training-set folders."""
    candidates = [Path(project) / name] + [folder / name for folder in training_set_folders(project)]
    return [p for p in candidates if p.is_file()]


def combined_table(documentation: Path) -> Path:
    """The CollectedData_<scorer>.h5 beside a Documentation pickle: the table its indices count."""
    tables = sorted(Path(documentation).parent.glob("CollectedData_*.h5"))
    if len(tables) != 1:
        found = f"there are {len(tables)} ({', '.join(t.name for t in tables)})" if tables else "there is none"
        raise ValueError(f"{documentation}: its indices count the rows of the CollectedData_<scorer>.h5 beside it; "
                         + found)
    return tables[0]


def read_documentation(path) -> tuple[list, np.ndarray, np.ndarray, float | None]:
    """A Documentation pickle's (data, trainIndices, testIndices, trainFraction), the indices as
    int64 arrays. Nothing but containers and numpy arrays is unpickled (UnsafePickleError naming the
    file and the global otherwise); anything not of DeepLabCut's structure raises ValueError."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_PICKLE_BYTES:
            raise ValueError(f"{path}: {size} bytes, more than the limit of {MAX_PICKLE_BYTES} "
                             "for a Documentation pickle")
        with open(path, "rb") as f:
            content = RestrictedUnpickler(f, DOCUMENTATION_GLOBALS, source=str(path)).load()
    except OSError as e:
        raise ValueError(f"{path}: cannot read the Documentation pickle ({e.strerror or e})") from None
    # RestrictedUnpickler turns any other failure of a damaged or hostile pickle into an
    # UnsafePickleError (a ValueError) naming the file.
    if not isinstance(content, (list, tuple)) or len(content) != 4:
        raise ValueError(f"{path}: not DeepLabCut's Documentation structure "
                         f"([data, trainIndices, testIndices, trainFraction]; got {type(content).__name__})")
    data, train, test, fraction = content
    if not isinstance(data, (list, tuple)) or not all(isinstance(d, dict) for d in data):
        raise ValueError(f"{path}: its data element is not a list of dicts (one per training frame)")
    try:
        fraction = float(fraction)
    except (TypeError, ValueError):
        fraction = None
    return list(data), _indices(path, "trainIndices", train), _indices(path, "testIndices", test), fraction


def _indices(path, what, value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        array = value
    elif isinstance(value, (list, tuple, range)) and len(value) <= MAX_FRAMES:
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value):
            raise ValueError(f"{path}: {what} holds something other than integers")
        array = np.asarray(value, dtype=np.int64).reshape(-1)
    else:
        raise ValueError(f"{path}: {what} is not a list or array of row numbers ({type(value).__name__})")
    if array.ndim != 1 or array.size > MAX_FRAMES or array.dtype.kind not in "iu":
        raise ValueError(f"{path}: {what} is not a list of row numbers (array {array.dtype} {array.shape})")
    return array.astype(np.int64)


def read_combined_index(path) -> list[str]:
    """The frame paths of a combined CollectedData .h5, in row order."""
    frame = hdf5.read_frame(path, max_rows=MAX_FRAMES)
    return [frame_path(row) for row in frame.index]


def documentation_split(documentation, table=None) -> ShuffleSplit:
    """A shuffle from its Documentation pickle and the combined table beside it (or `table`)."""
    documentation = Path(documentation)
    table = Path(table) if table else combined_table(documentation)
    data, train, test, fraction = read_documentation(documentation)
    frames = read_combined_index(table)
    for what, rows in (("trainIndices", train), ("testIndices", test)):
        bad = rows[(rows < 0) | (rows >= len(frames))]
        if bad.size:
            raise ValueError(f"{documentation}: {what} has row {int(bad[0])}, but {table} has {len(frames)} rows")
    if np.intersect1d(train, test).size or len(np.unique(train)) != len(train) or len(np.unique(test)) != len(test):
        raise ValueError(f"{documentation}: trainIndices and testIndices repeat or share rows")
    # DeepLabCut's data element lists the training frames (those with a label inside the image):
    # every one must be a train row, or the table is not the one the indices were drawn on.
    train_keys = {frame_key(frames[i]) for i in train}
    for item in data:
        image = item.get("image")
        if isinstance(image, (str, tuple, list)) and frame_key(image) not in train_keys:
            raise ValueError(f"{documentation}: training frame {frame_path(image)} of its data is not at any of its "
                             f"trainIndices in {table}: the table's rows are not the ones the split was made on")
    train_paths = [frames[i] for i in sorted(train)]
    within, out = split_test_by_domain(train_paths, [frames[i] for i in sorted(test)])
    return ShuffleSplit(train_paths, within, out, "documentation pickle", (documentation, table), fraction)


def split_test_by_domain(train_paths, test_paths) -> tuple[list[str], list[str]]:
    """Test frames of the training horses (videos of the train frames), and the others."""
    horses = {video_of(p) for p in train_paths}
    return ([p for p in test_paths if video_of(p) in horses], [p for p in test_paths if video_of(p) not in horses])


def read_train_test_info(path) -> ShuffleSplit:
    """A shuffle from the benchmark's TrainTestInfo_shuffle<k>.csv."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_CSV_BYTES:
            raise ValueError(f"{path}: {size} bytes, more than the limit of {MAX_CSV_BYTES} for a TrainTestInfo CSV")
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = csv.reader(_bounded_lines(path, f))
            header = [cell.strip() for cell in next(rows, [])]
            if tuple(header[1:4]) != TRAIN_TEST_INFO_COLUMNS or len(header) != 4:
                raise ValueError(f"{path}: columns {header}, expected an index column and "
                                 f"{', '.join(TRAIN_TEST_INFO_COLUMNS)} (the benchmark's TrainTestInfo export)")
            columns = ([], [], [])
            for line, row in enumerate(rows, start=2):
                if line > MAX_FRAMES + 1:
                    raise ValueError(f"{path}: more than {MAX_FRAMES} rows")
                if len(row) > 4:
                    raise ValueError(f"{path}: line {line}: {len(row)} cells, expected 4")
                for column, cell in zip(columns, row[1:]):
                    if cell.strip():
                        column.append(frame_path(cell.strip()))
    except OSError as e:
        raise ValueError(f"{path}: cannot read the TrainTestInfo CSV ({e.strerror or e})") from None
    except csv.Error as e:
        raise ValueError(f"{path}: not a readable CSV ({e})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    train, within, out = columns
    seen = {}
    for name, column in zip(TRAIN_TEST_INFO_COLUMNS, columns):
        for frame in column:
            key = frame_key(frame)
            if key in seen:
                raise ValueError(f"{path}: frame {frame} is in {seen[key]}" + (f" and {name}" if seen[key] != name
                                                                               else " twice"))
            seen[key] = name
    return ShuffleSplit(train, within, out, "TrainTestInfo CSV", (path,))


def _bounded_lines(path, f):
    while line := f.readline(MAX_LINE_CHARS + 1):
        if len(line) > MAX_LINE_CHARS:
            raise ValueError(f"{path}: a line longer than {MAX_LINE_CHARS} characters")
        yield line


def read_scales(path) -> dict[str, float]:
    """Horsescale.h5 as {frame key ('<video>/<image>'): scale in pixels}; frames whose scale is
    not a positive number are left out."""
    frame = hdf5.read_frame(path, max_rows=MAX_FRAMES)
    columns = [tuple(str(c) for c in column) for column in frame.columns]
    if len(columns) == 1:
        column = 0
    elif columns.count(("scale",)) == 1:
        column = columns.index(("scale",))
    else:
        raise ValueError(f"{path}: columns {columns}, expected one ('scale'): the benchmark's per-frame horse scale")
    values = frame.values[:, column]
    return {frame_key(row): float(v) for row, v in zip(frame.index, values) if np.isfinite(v) and v > 0}
