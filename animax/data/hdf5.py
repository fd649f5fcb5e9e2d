"""pandas DataFrames in HDF5 files (`DataFrame.to_hdf`), read with h5py and nothing else.

`pandas.read_hdf` unpickles object columns and PyTables unpickles any byte-string attribute
that ends in '.', so opening a label file someone sent runs whatever code it names. This reader
only reads numeric and fixed-width byte-string datasets, parses the few pickled attributes
pandas writes (column labels, index names) with `animax.safe_pickle.RestrictedUnpickler` and no
global at all (plain lists, tuples, dicts, strings and numbers), and refuses everything else
with an `HDF5Error` naming the file and the node: object/pickled datasets (PyTables' ObjectAtom
VLArrays, object blocks), external or virtual storage, links out of the file, and datasets whose
declared size is absurd (more than `max_rows` rows or `max_bytes` bytes, or uncompressed data
larger than the file).

Layouts read (those `to_hdf` writes for a 2-D frame of numbers):

* `format="fixed"` (`pandas_type` 'frame'): the group holds `axis0` (columns) and `axis1` (rows),
  each either one dataset (`<axis>`, attribute `kind`) or, for a MultiIndex, `<axis>_level<i>`
  (the level's values) and `<axis>_label<i>` (one code per entry, -1 = NaN) with `<axis>_nlevels`;
  then `nblocks` blocks, `block<i>_items` (the block's column labels, laid out the same way)
  and `block<i>_values` [rows, items].
* `format="table"` (`pandas_type` 'frame_table', DeepLabCut's `key="df_with_missing"`): one
  compound dataset `table` with a field per index column (`index_cols`, usually 'index') and per
  value block (`values_cols`); each block's column labels are the pickled list `<field>_kind` of
  the table's attributes, the frame's column order the pickled `non_index_axes`, the column
  level names `info[1]["names"]`. A row MultiIndex ('appendable_multiframe') is stored as
  string data columns named by the pickled `levels` list.
"""

from __future__ import annotations

import io
import math
import os
import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np

from animax.safe_pickle import RestrictedUnpickler, UnsafePickleError

# Beyond these a file is refused before anything is read. A DeepLabCut project labels thousands
# of frames; machine labels of a long video hold one row per frame (an hour at 60 fps: 216,000).
MAX_ROWS = 10_000_000
MAX_BYTES = 1 << 30            # declared size of any one dataset, after decompression
_MAX_BLOCKS = 10_000
_MAX_LEVELS = 64
_MAX_GROUPS = 10_000           # groups visited when looking for the frames of a file
_ENCODINGS = {"utf-8", "utf8", "ascii", "latin1", "latin-1", "iso-8859-1"}
_ERRORS = {"strict", "surrogatepass", "surrogateescape", "replace", "ignore", "backslashreplace"}
_LABEL_KINDS = {"string", "integer", "float", "bool"}
_REQUIRED = object()
_NOT_PICKLE = object()
_NAN_KEY = ("<nan>",)


class HDF5Error(ValueError):
    """The file is no frame this reader accepts; the message names the file and the node."""


class Frame(NamedTuple):
    """A DataFrame's content: one tuple per row of the index (1-tuples for a plain index), one
    tuple per column, the column levels' names (None where unnamed) and the values [rows,
    columns] as float64 (NaN where missing)."""
    index: list[tuple]
    columns: list[tuple]
    column_names: tuple
    values: np.ndarray


def read_frame(path, key=None, max_rows=MAX_ROWS, max_bytes=MAX_BYTES) -> Frame:
    """The numeric DataFrame stored under `key` of an HDF5 file written by pandas' `to_hdf`.

    key None: the file's only frame, else the one named 'df_with_missing' (DeepLabCut's key).
    Raises HDF5Error naming the file (and node) for anything else; see the module docstring.
    """
    import h5py

    path = Path(path)
    try:
        file = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise HDF5Error(f"{path}: not a readable HDF5 file ({e})") from None
    with file:
        reader = _Reader(path, file, max_rows, max_bytes)
        try:
            return reader.read(key)
        except HDF5Error:
            raise
        except (OSError, ValueError, TypeError, KeyError, IndexError, UnicodeDecodeError, RecursionError) as e:
            raise HDF5Error(f"{path}: malformed pandas HDF5 layout ({type(e).__name__}: {e})") from None


def frame_keys(file) -> list[str]:
    """Keys (group paths without the leading '/') of the pandas objects in an open h5py File,
    following hard links only."""
    import h5py

    found, todo, seen = [], [file], 0
    while todo:
        group = todo.pop(0)
        seen += 1
        if seen > _MAX_GROUPS:
            raise HDF5Error(f"{file.filename}: more than {_MAX_GROUPS} groups")
        if group is not file and "pandas_type" in group.attrs:
            found.append(group.name.lstrip("/"))
            continue
        for name in group:
            if isinstance(group.get(name, getlink=True), h5py.HardLink):
                child = group[name]
                if isinstance(child, h5py.Group):
                    todo.append(child)
    return sorted(found)


class _Reader:
    def __init__(self, path, file, max_rows, max_bytes):
        self.path, self.file = path, file
        self.max_rows, self.max_bytes = max_rows, max_bytes
        self.file_size = os.path.getsize(path)

    def fail(self, node, problem):
        name = node if isinstance(node, str) else node.name
        return HDF5Error(f"{self.path}: {name}: {problem}")

    # --- whole frames -------------------------------------------------------------------

    def read(self, key) -> Frame:
        import h5py

        keys = frame_keys(self.file)
        if key is None:
            if len(keys) == 1:
                key = keys[0]
            elif "df_with_missing" in keys:
                key = "df_with_missing"
            else:
                raise HDF5Error(f"{self.path}: {len(keys)} pandas objects ({', '.join(keys) or 'none'}); "
                                "expected one, or one named 'df_with_missing'")
        key = str(key).strip("/")
        if key not in keys:
            raise HDF5Error(f"{self.path}: no pandas object '{key}' (the file holds: {', '.join(keys) or 'none'})")
        group = self.file[key]
        if "pandas_type" not in group.attrs:
            raise self.fail(group, "not a pandas object")
        self.encoding = self.text_attr(group, "encoding", "UTF-8") or "UTF-8"
        self.errors = self.text_attr(group, "errors", "strict") or "strict"
        if self.encoding.lower() not in _ENCODINGS or self.errors not in _ERRORS:
            raise self.fail(group, f"unsupported text encoding {self.encoding!r}/{self.errors!r}")
        kind = self.text_attr(group, "pandas_type")
        if kind == "frame":
            return self.read_fixed(group)
        if kind == "frame_table":
            table_type = self.text_attr(group, "table_type", "")
            if table_type not in ("appendable_frame", "appendable_multiframe"):
                raise self.fail(group, f"table type {table_type!r} is not a DataFrame table")
            table = self.dataset(group, "table")
            if not isinstance(table, h5py.Dataset):
                raise self.fail(group, "no 'table' dataset")
            return self.read_table(group, table)
        raise self.fail(group, f"pandas type {kind!r} is not a DataFrame")

    def read_fixed(self, group) -> Frame:
        if self.int_attr(group, "ndim") != 2:
            raise self.fail(group, "not a 2-dimensional frame")
        columns, names = self.read_index(group, "axis0")
        rows, _ = self.read_index(group, "axis1")
        if len(rows) > self.max_rows:
            raise self.fail(group, f"{len(rows)} rows, more than the limit of {self.max_rows}")
        where = {_label_key(c): j for j, c in enumerate(columns)}
        if len(where) != len(columns):
            raise self.fail(group, "repeated column labels")
        values = np.full((len(rows), len(columns)), np.nan)
        self.check_size(group, values.shape, values.itemsize)
        nblocks = self.int_attr(group, "nblocks")
        if not 0 <= nblocks <= _MAX_BLOCKS:
            raise self.fail(group, f"{nblocks} blocks")
        for i in range(nblocks):
            items, _ = self.read_index(group, f"block{i}_items")
            node = self.dataset(group, f"block{i}_values")
            block = self.numbers(node, rows=True)
            if block.ndim != 2:
                raise self.fail(node, f"shape {block.shape}, expected [rows, items]")
            if not self.truthy_attr(node, "transposed", True):
                block = block.T
            if block.size == 0 and "shape" in node.attrs:     # pandas' sentinel for an empty block
                continue
            if block.shape != (len(rows), len(items)):
                raise self.fail(node, f"shape {block.shape}, expected {(len(rows), len(items))}")
            try:
                targets = [where[_label_key(item)] for item in items]
            except KeyError as e:
                raise self.fail(node, f"column {e.args[0]!r} is not among the frame's columns") from None
            values[:, targets] = block
        return Frame(rows, columns, names, values)

    def read_table(self, group, table) -> Frame:
        if table.ndim != 1 or table.dtype.names is None:
            raise self.fail(table, "not a table of records")
        nrows = table.shape[0]
        if nrows > self.max_rows:
            raise self.fail(table, f"{nrows} rows, more than the limit of {self.max_rows}")
        self.check_dataset(table, rows=True)
        for field in table.dtype.names:
            base = table.dtype.fields[field][0].base
            if base.kind not in "fiubS":
                raise self.fail(table, f"field '{field}' has type {base}, not numbers or text")
        index_cols = self.pickled_attr(group, "index_cols")
        values_cols = self.pickled_attr(group, "values_cols")
        non_index_axes = self.pickled_attr(group, "non_index_axes")
        info = self.pickled_attr(group, "info", {}) or {}
        levels = self.pickled_attr(group, "levels", None)
        levels = levels if isinstance(levels, list) else []
        if (not isinstance(index_cols, list) or len(index_cols) != 1 or not isinstance(values_cols, list)
                or not isinstance(non_index_axes, list) or len(non_index_axes) != 1 or not isinstance(info, dict)):
            raise self.fail(group, "unexpected index_cols/values_cols/non_index_axes/info attributes")
        (index_axis, index_field), (column_axis, order) = index_cols[0], non_index_axes[0]
        if index_axis != 0 or column_axis != 1 or not isinstance(order, list):
            raise self.fail(group, "not a frame indexed by rows")
        column_info = info.get(1, {}) if isinstance(info.get(1, {}), dict) else {}
        multi = column_info.get("type") == "MultiIndex"
        names = column_info.get("names")

        index = self.table_strings_or_numbers(group, table, index_field,
                                              self.text_attr(table, f"{index_field}_kind", "") or
                                              self.text_attr(table, "index_kind", ""),
                                              nan_rep=self.nan_rep(table, f"{index_field}_nan_rep", "nan"))
        level_values = {}
        found = {}                   # column label key -> (field, position in the field)
        for field in values_cols:
            if not isinstance(field, str) or field not in table.dtype.names:
                raise self.fail(table, f"no field {field!r}")
            labels = self.pickled_attr(table, f"{field}_kind")
            if not isinstance(labels, list):
                raise self.fail(table, f"attribute {field}_kind is not a list of column labels")
            if table.dtype.fields[field][0].base.kind == "S":
                if field not in levels:
                    raise self.fail(table, f"column {field!r} holds text, not numbers")
                uses_col = (self.truthy_attr(group, "data_col_nan_rep", False)
                            or self.truthy_attr(group, "mi_level_nan_rep", False))
                group_rep = self.text_attr(group, "nan_rep", None)
                nan_rep = (self.nan_rep(table, f"{field}_nan_rep", None) if uses_col
                           else group_rep if group_rep is not None else "nan")
                level_values[field] = self.table_strings_or_numbers(group, table, field, "string", nan_rep)
                continue
            for j, label in enumerate(labels):
                found[_label_key(tuple(label) if multi and isinstance(label, (list, tuple)) else label)] = (field, j)
        row_names = [level for level in levels if level in level_values] if levels else []
        if row_names:
            if set(row_names) != set(levels):
                raise self.fail(table, "row index levels missing from the table")
            rows = list(zip(*(level_values[name] for name in levels)))
        else:
            rows = [(v,) for v in index]
        columns = []
        for label in order:
            if isinstance(label, str) and label in levels:
                continue
            label = tuple(label) if multi and isinstance(label, (list, tuple)) else label
            if _label_key(label) not in found:
                raise self.fail(table, f"column {label!r} has no values")
            columns.append(label)
        values = np.empty((nrows, len(columns)))
        self.check_size(table, values.shape, values.itemsize)
        cache = {}
        for j, label in enumerate(columns):
            field, k = found[_label_key(label)]
            if field not in cache:
                data = np.asarray(table.fields(field)[()])
                cache[field] = data.reshape(nrows, -1)
            values[:, j] = cache[field][:, k]
        columns = [label if isinstance(label, tuple) else (label,) for label in columns]
        if not isinstance(names, list):
            names = [None] * (len(columns[0]) if columns else 1)
        return Frame(rows, columns, tuple(_plain(n) for n in names), values)

    # --- indexes -----------------------------------------------------------------------

    def read_index(self, group, key) -> tuple[list[tuple], tuple]:
        """An axis or block-items index of a fixed frame: (tuples, level names)."""
        variety = self.text_attr(group, f"{key}_variety")
        rows = key == "axis1"
        if variety == "regular":
            values, name = self.index_node(self.dataset(group, key), rows)
            return [(v,) for v in values], (name,)
        if variety != "multi":
            raise self.fail(group, f"index {key!r} of variety {variety!r}")
        nlevels = self.int_attr(group, f"{key}_nlevels")
        if not 1 <= nlevels <= _MAX_LEVELS:
            raise self.fail(group, f"index {key!r} with {nlevels} levels")
        levels, names, codes = [], [], []
        for i in range(nlevels):
            values, name = self.index_node(self.dataset(group, f"{key}_level{i}"), rows)
            node = self.dataset(group, f"{key}_label{i}")
            level_codes = self.numbers(node, rows=rows)
            if level_codes.ndim != 1 or level_codes.dtype.kind not in "iu":
                raise self.fail(node, "codes are not a list of integers")
            if level_codes.size and (level_codes.min() < -1 or level_codes.max() >= len(values)):
                raise self.fail(node, f"codes outside the level's {len(values)} values")
            levels.append(values + [math.nan])            # code -1: NaN
            names.append(name)
            codes.append(level_codes)
        if len({len(c) for c in codes}) > 1:
            raise self.fail(group, f"index {key!r} has levels of different lengths")
        columns = ([level[c] for c in level_codes.tolist()] for level, level_codes in zip(levels, codes))
        return list(zip(*columns)), tuple(names)

    def index_node(self, node, rows=False) -> tuple[list, object]:
        kind = self.text_attr(node, "kind", "")
        if kind not in _LABEL_KINDS:
            raise self.fail(node, f"index of kind {kind!r} (only text and numbers are read)")
        name = _plain(self.pickled_attr(node, "name", None)) if "name" in node.attrs else None
        data = self.numbers(node, text=kind == "string", rows=rows)
        if "shape" in node.attrs and data.size <= 1 and 0 in np.atleast_1d(node.attrs["shape"]):
            return [], name                                    # pandas' sentinel for an empty index
        if data.ndim != 1:
            raise self.fail(node, f"index of shape {data.shape}")
        if kind == "string":
            return self.decode(data, self.nan_rep(node, "nan_rep", "nan")), name
        return [v.item() for v in data], name

    def table_strings_or_numbers(self, group, table, field, kind, nan_rep):
        if field not in table.dtype.names:
            raise self.fail(table, f"no field {field!r}")
        if kind not in _LABEL_KINDS:
            raise self.fail(table, f"index of kind {kind!r} (only text and numbers are read)")
        data = np.asarray(table.fields(field)[()])
        if data.ndim != 1:
            raise self.fail(table, f"field '{field}' of shape {data.shape}")
        if kind == "string":
            if data.dtype.kind != "S":
                raise self.fail(table, f"field '{field}' is said to be text but holds {data.dtype}")
            return self.decode(data, nan_rep)
        if data.dtype.kind not in "fiub":
            raise self.fail(table, f"field '{field}' holds {data.dtype}, not numbers")
        return [v.item() for v in data]

    def decode(self, data, nan_rep) -> list:
        strings = [b.decode(self.encoding, self.errors) for b in data.tolist()]
        return [math.nan if nan_rep is not None and s == nan_rep else s for s in strings]

    # --- datasets and attributes ----------------------------------------------------------

    def dataset(self, group, name):
        import h5py

        link = group.get(name, getlink=True)
        if link is None:
            raise self.fail(group, f"no node '{name}'")
        if not isinstance(link, h5py.HardLink):
            raise self.fail(f"{group.name}/{name}", f"a {type(link).__name__} (links out of the file are not followed)")
        node = group[name]
        if not isinstance(node, h5py.Dataset):
            raise self.fail(node, "not a dataset")
        return node

    def check_dataset(self, node, rows=False) -> None:
        """Refuses storage outside the file and declared sizes beyond the limits (rows: the
        first axis counts the frame's rows)."""
        if node.dtype.kind == "O" or node.dtype.hasobject or h5py_vlen(node.dtype):
            raise self.fail(node, f"object/pickled data ({node.dtype}) is never read")
        if node.is_virtual or node.external:
            raise self.fail(node, "data stored outside the file is never read")
        shape = node.shape or ()
        if rows and shape and shape[0] > self.max_rows:
            raise self.fail(node, f"{shape[0]} rows, more than the limit of {self.max_rows}")
        self.check_size(node, shape, node.dtype.itemsize)
        if node.chunks is None and math.prod(shape) * node.dtype.itemsize > self.file_size:
            raise self.fail(node, f"declares {math.prod(shape) * node.dtype.itemsize} bytes, "
                                  f"more than the file's {self.file_size}")

    def check_size(self, node, shape, itemsize) -> None:
        size = math.prod(shape) * itemsize
        if size > self.max_bytes:
            raise self.fail(node, f"shape {tuple(shape)} is {size} bytes, more than the limit of {self.max_bytes}")

    def numbers(self, node, text=False, rows=False) -> np.ndarray:
        """A dataset of numbers (or, with text, fixed-width byte strings), read whole once checked."""
        self.check_dataset(node, rows)
        allowed = "fiubS" if text else "fiub"
        if node.dtype.kind not in allowed or node.dtype.names is not None:
            raise self.fail(node, f"holds {node.dtype}, not {'text or ' if text else ''}numbers")
        return np.asarray(node[()])

    def raw_attr(self, node, name, default):
        if name not in node.attrs:
            if default is _REQUIRED:
                raise self.fail(node, f"no attribute '{name}'")
            return default
        try:
            return node.attrs[name]
        except (OSError, TypeError, ValueError) as e:
            raise self.fail(node, f"attribute '{name}' cannot be read ({e})") from None

    def text_attr(self, node, name, default=_REQUIRED):
        value = self.raw_attr(node, name, default)
        if value is default:
            return value
        value = _empty_to_text(value)
        if isinstance(value, (bytes, np.bytes_)):
            value = bytes(value)
            unpickled = self.maybe_unpickle(node, name, value)
            if unpickled is not _NOT_PICKLE:
                return unpickled if unpickled is None or isinstance(unpickled, str) else str(unpickled)
            return value.decode("utf-8", "replace")
        if isinstance(value, str):
            return value
        raise self.fail(node, f"attribute '{name}' is {type(value).__name__}, not text")

    def int_attr(self, node, name) -> int:
        value = self.raw_attr(node, name, _REQUIRED)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        raise self.fail(node, f"attribute '{name}' is not an integer")

    def truthy_attr(self, node, name, default) -> bool:
        value = self.raw_attr(node, name, default)
        return bool(value) if isinstance(value, (bool, int, np.integer, np.bool_)) else default

    def nan_rep(self, node, name, default):
        """A string column's NaN sentinel: the attribute's text, None when empty, default when absent."""
        if name not in node.attrs:
            return default
        return self.text_attr(node, name, "") or None

    def pickled_attr(self, node, name, default=_REQUIRED):
        """An attribute PyTables stores pickled (pandas' lists, dicts and names): parsed with no
        global allowed; a plain value passes through."""
        value = self.raw_attr(node, name, default)
        if value is default:
            return value
        value = _empty_to_text(value)
        if isinstance(value, (bytes, np.bytes_)):
            unpickled = self.maybe_unpickle(node, name, bytes(value))
            return bytes(value).decode("utf-8", "replace") if unpickled is _NOT_PICKLE else unpickled
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            raise self.fail(node, f"attribute '{name}' is an array")
        return value

    def maybe_unpickle(self, node, name, value: bytes):
        """What PyTables would unpickle (byte strings ending in '.'), parsed safely; _NOT_PICKLE
        for a byte string that is no pickle (PyTables then keeps the bytes too)."""
        if not value.endswith(b".") or value in (b"0", b"0."):
            return _NOT_PICKLE
        try:
            result = RestrictedUnpickler(io.BytesIO(value), allowed={},
                                         source=f"{self.path}: {node.name} attribute '{name}'").load()
        except UnsafePickleError as e:
            raise HDF5Error(f"{e}; pickled code is never run") from None
        except RecursionError:
            raise self.fail(node, f"attribute '{name}' nests too deeply") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError,
                AttributeError, UnicodeDecodeError, OverflowError, MemoryError):
            return _NOT_PICKLE
        try:
            _check_plain(result)
        except (TypeError, RecursionError):
            raise self.fail(node, f"attribute '{name}' holds {type(result).__name__} objects, "
                                  "not plain lists, strings and numbers") from None
        return result


def h5py_vlen(dtype) -> bool:
    import h5py

    return h5py.check_vlen_dtype(dtype) is not None or (
        dtype.names is not None and any(h5py_vlen(dtype.fields[f][0]) for f in dtype.names))


def _empty_to_text(value):
    import h5py

    return b"" if isinstance(value, h5py.Empty) else value


def _check_plain(value, depth=0) -> None:
    if depth > 64:
        raise RecursionError
    if value is None or isinstance(value, (str, bytes, bool, int, float, complex)):
        return
    if isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _check_plain(item, depth + 1)
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_plain(k, depth + 1)
            _check_plain(v, depth + 1)
        return
    raise TypeError(type(value).__name__)


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def _label_key(label):
    """A hashable key equal for equal labels, NaN included (NaN != NaN)."""
    if isinstance(label, tuple):
        return tuple(_label_key(v) for v in label)
    if isinstance(label, float) and math.isnan(label):
        return _NAN_KEY
    return label
