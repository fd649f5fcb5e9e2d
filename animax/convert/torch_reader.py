"""Reads PyTorch checkpoints (`torch.save` zip format) without torch and without running code.

`data.pkl` inside the zip is unpickled by `RestrictedUnpickler`: tensors become `LazyTensor`s
that point at their storage file in the archive and are read one at a time on demand, so
converting a multi-GB checkpoint never holds more than one extra tensor in memory.
Configuration objects (omegaconf `DictConfig`/`ListConfig`, yacs `CfgNode`, Lightning's
`AttributeDict`) load as inert containers of their content (`animax.convert.pickled_configs`).

The file is untrusted. Before anything is read, the archive and every tensor are checked
against what the archive really holds (see `_check_zip`, `_tensor_problem`); every refusal is an
`UnsafeCheckpointError` (a ValueError) naming the file and, for a tensor, its key path
(`state_dict/backbone.blocks.0.attn.qkv.weight`). Storages are read with bounded reads, never
past their declared size, once per storage (`_Archive.storage_bytes`).
"""

from __future__ import annotations

import collections
import dataclasses
import io
import re
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import ml_dtypes
import numpy as np

from animax.convert.pickled_configs import PICKLED_CONFIG_GLOBALS
from animax.safe_pickle import (
    BASIC_GLOBALS,
    NUMPY_GLOBALS,
    RefusedFileError,
    RestrictedUnpickler,
    UnsafePickleError,
)

# torch.<Name>Storage -> element dtype.
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "UntypedStorage": np.uint8,
}

# Limits (bytes unless said otherwise). A checkpoint outside them is refused.
MAX_PICKLE_BYTES = 256 << 20      # data.pkl: AniMer's Lightning checkpoint holds < 1 MB
MAX_INFLATION = 64                 # a compressed member may inflate to 64x its compressed size ...
INFLATION_ALLOWANCE = 1 << 20      # ... or to 1 MiB, whichever is larger (torch.save never compresses)
MAX_DIMS = 64                      # tensor rank
BROADCAST_ALLOWANCE = 16 << 20     # a tensor may exceed its storage's bytes (0-stride views) up to this
CACHE_BYTES = 64 << 20             # storage bytes kept for further views of the same storage
MAX_EXTENT = 1 << 62               # product of the non-zero sizes x itemsize (numpy's own limit is 2**63)


class UnsafeCheckpointError(RefusedFileError):
    """A checkpoint the reader refuses: malformed, inconsistent or hostile. The message names
    the file and, where a tensor is at fault, its key path."""


@dataclasses.dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclasses.dataclass(frozen=True, eq=False)
class _Storage:
    """One `data/<key>` member. `problem` says why it cannot be used (checked before any read)."""
    archive: _Archive
    member: str
    dtype: np.dtype
    numel: int
    problem: str | None = None

    @property
    def nbytes(self) -> int:
        return self.numel * self.dtype.itemsize

    def array(self, where: str) -> np.ndarray:
        """The whole storage as a read-only flat array (read once, then cached)."""
        raw = self.archive.storage_bytes(self.member, self.nbytes, where)
        return np.frombuffer(raw, dtype=self.dtype.newbyteorder("<"), count=self.numel)


@dataclasses.dataclass(frozen=True, eq=False)
class LazyTensor:
    """A tensor of a checkpoint, read from the archive when `numpy()` is called.

    Fields hold what the pickle said; `read_torch_checkpoint` returns only tensors whose
    geometry lies inside their storage. `name` is the key path, for messages."""
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    name: str = dataclasses.field(default="tensor", compare=False)

    @property
    def dtype(self):
        return np.dtype(self.storage.dtype)

    @property
    def nbytes(self) -> int:
        numel = 1
        for d in self.shape:
            numel *= d
        return numel * self.dtype.itemsize

    def numpy(self) -> np.ndarray:
        """The tensor as a new contiguous array (little-endian, as torch writes it)."""
        problem = _tensor_problem(self.storage, self.offset, self.shape, self.stride)
        if problem is not None:
            raise UnsafeCheckpointError(f"{self.storage.archive.path}: {self.name}: {problem}")
        if 0 in self.shape:
            return np.empty(self.shape, self.dtype)
        flat = self.storage.array(self.name)
        itemsize = self.dtype.itemsize
        # A size-1 dimension's stride is never used (and may be any size): 0 keeps it in range.
        strides = [0 if d == 1 else s * itemsize for d, s in zip(self.shape, self.stride)]
        view = np.lib.stride_tricks.as_strided(flat[self.offset:], shape=self.shape, strides=strides,
                                               writeable=False)
        return np.array(view, dtype=self.dtype, copy=True)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _tensor_problem(storage, offset, shape, stride) -> str | None:
    """Why a tensor (offset, shape, stride into storage) cannot be read, or None.
    Python ints throughout: no overflow."""
    if not isinstance(storage, _Storage):
        return f"its storage is a {type(storage).__name__}, not a storage of the archive"
    if storage.problem is not None:
        return storage.problem
    if not (isinstance(shape, tuple) and isinstance(stride, tuple)):
        return f"shape {shape!r} / stride {stride!r} are not tuples"
    if not all(_is_int(x) for x in (offset, *shape, *stride)):
        return f"offset {offset!r}, shape {shape!r}, stride {stride!r}: not all integers"
    offset, shape, stride = int(offset), tuple(map(int, shape)), tuple(map(int, stride))
    where = f"shape {shape}, stride {stride}, offset {offset} on storage {storage.member} of {storage.numel} elements"
    if len(shape) != len(stride):
        return f"{where}: shape and stride differ in length"
    if len(shape) > MAX_DIMS:
        return f"{where}: more than {MAX_DIMS} dimensions"
    if offset < 0 or any(d < 0 for d in shape) or any(s < 0 for s in stride):
        return f"{where}: negative offset, size or stride"
    if offset > storage.numel:
        return f"{where}: offset past the end of the storage"
    numel = extent = 1
    for d in shape:
        numel *= d
        extent *= max(d, 1)
    if extent * storage.dtype.itemsize > MAX_EXTENT:
        return f"{where}: sizes beyond what an array can describe"
    if numel == 0:
        return None
    last = offset + sum((d - 1) * s for d, s in zip(shape, stride))
    if last >= storage.numel:
        return f"{where}: its last element (index {last}) lies outside the storage"
    nbytes = numel * storage.dtype.itemsize
    if nbytes > max(storage.nbytes, BROADCAST_ALLOWANCE):
        return (f"{where}: {nbytes} bytes, more than its storage's {storage.nbytes} "
                f"(and over the {BROADCAST_ALLOWANCE} bytes allowed to repeating views)")
    return None


class _Archive:
    """The zip file, checked as a whole; storage reads are bounded and cached."""

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size
        self.zip, self.prefix = _open_zip(path)
        self.infos = {info.filename: info for info in self.zip.infolist()}
        self._cache: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._cached_bytes = 0

    def refuse(self, message: str):
        raise UnsafeCheckpointError(f"{self.path}: {message}")

    def member_problem(self, name: str, nbytes: int) -> str | None:
        """Why member `name` cannot hold exactly `nbytes` bytes, or None (checked before reading)."""
        info = self.infos.get(name)
        if info is None:
            return f"member {name} does not exist in the archive"
        if info.header_offset + 30 + len(info.orig_filename.encode()) + info.compress_size > self.size:
            return f"member {name} runs past the end of the file ({info.compress_size} bytes at {info.header_offset})"
        if info.file_size != nbytes:
            return f"member {name} holds {info.file_size} bytes, the pickle declares {nbytes}"
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                return f"stored member {name} has compressed size {info.compress_size} != size {info.file_size}"
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            if info.file_size > max(MAX_INFLATION * info.compress_size, INFLATION_ALLOWANCE):
                return (f"member {name} inflates {info.compress_size} bytes to {info.file_size} "
                        f"(over {MAX_INFLATION}x: a zip bomb is refused)")
        else:
            return f"member {name} uses zip compression method {info.compress_type} (only stored and deflated are read)"
        return None

    def read_member(self, name: str, nbytes: int, where: str) -> bytes:
        """Exactly `nbytes` bytes of member `name`: never more are inflated or held."""
        problem = self.member_problem(name, nbytes)
        if problem is not None:
            self.refuse(f"{where}: {problem}")
        try:
            with self.zip.open(name) as f:
                data = f.read(nbytes)
        except (zipfile.BadZipFile, EOFError, OSError, zlib.error, ValueError) as e:
            self.refuse(f"{where}: member {name} cannot be read ({type(e).__name__}: {e})")
        if len(data) != nbytes:
            self.refuse(f"{where}: member {name} is truncated ({len(data)} of {nbytes} bytes)")
        return data

    def storage_bytes(self, name: str, nbytes: int, where: str) -> bytes:
        """A storage's bytes, read once: kept while the cached storages total CACHE_BYTES (the
        latest is kept whatever its size), so the views of one storage share one read."""
        if name in self._cache:
            self._cache.move_to_end(name)
            return self._cache[name]
        while self._cache and self._cached_bytes + nbytes > CACHE_BYTES:
            _, old = self._cache.popitem(last=False)
            self._cached_bytes -= len(old)
        data = self.read_member(name, nbytes, where)
        self._cache[name] = data
        self._cached_bytes += nbytes
        return data


def _member_name_problem(name: str, prefix: str | None) -> str | None:
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or "\\" in name or ":" in path.parts[0] or ".." in path.parts or "\0" in name:
        return f"member name {name!r} is absolute or leaves the archive"
    if prefix is not None and not name.startswith(prefix):
        return f"member {name!r} lies outside the archive's folder {prefix!r}"
    return None


def _open_zip(path: Path) -> tuple[zipfile.ZipFile, str]:
    """The zip file and its member prefix ('<name>/'), after checking the member list."""
    if path.stat().st_size == 0:
        raise UnsafeCheckpointError(f"{path}: empty file, not a PyTorch checkpoint")
    if not zipfile.is_zipfile(path):
        raise UnsafeCheckpointError(f"{path}: not a zip-format PyTorch checkpoint (legacy torch<1.6 files: "
                                    f"re-save them with torch.save in a current PyTorch)")
    try:
        archive = zipfile.ZipFile(path)
        names = [info.filename for info in archive.infolist()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as e:
        raise UnsafeCheckpointError(f"{path}: damaged zip archive ({type(e).__name__}: {e})") from e
    duplicates = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
    if duplicates:
        raise UnsafeCheckpointError(f"{path}: the archive holds members named twice: {duplicates[:5]}")
    for name in names:
        problem = _member_name_problem(name, None)
        if problem:
            raise UnsafeCheckpointError(f"{path}: {problem}")
    pickles = [n for n in names if re.fullmatch(r"[^/]+/data\.pkl", n)]
    if len(pickles) != 1:
        raise UnsafeCheckpointError(f"{path}: expected one '<name>/data.pkl' in the archive, found {pickles}")
    prefix = pickles[0][: -len("data.pkl")]
    for name in names:
        problem = _member_name_problem(name, prefix)
        if problem:
            raise UnsafeCheckpointError(f"{path}: {problem}")
    return archive, prefix


class _CheckpointUnpickler(RestrictedUnpickler):
    def __init__(self, file, archive: _Archive):
        allowed = {**_TORCH_GLOBALS, **{name: self.rebuild_tensor for name in _TENSOR_GLOBALS}}
        super().__init__(file, allowed, source=str(archive.path), encoding="utf-8")
        self._archive = archive
        self._storages: dict[str, _Storage] = {}
        self.tensors: list[LazyTensor] = []

    def persistent_load(self, pid):
        """A storage: validated against its member here, refused (with its tensor's name) later."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)):
            raise UnsafeCheckpointError(f"{self._source}: unsupported persistent id {str(pid)[:200]}")
        _, storage_type, key, _location, numel = pid
        dtype = storage_type.dtype
        member = f"{self._archive.prefix}data/{key}"
        problem = None
        if not re.fullmatch(r"[A-Za-z0-9_.]{1,64}", key) or ".." in key:
            problem, member = f"storage key {key[:80]!r} is not a member name", "data/?"
        elif not _is_int(numel) or numel < 0:
            problem, numel = f"storage {member} declares {str(numel)[:80]} elements", 0
        else:
            problem = self._archive.member_problem(member, int(numel) * dtype.itemsize)
            if problem is not None:
                problem = f"storage of {int(numel)} x {dtype.name}: {problem}"
        storage = _Storage(self._archive, member, dtype, int(numel), problem)
        first = self._storages.setdefault(member, storage)
        if problem is None and first is not storage and (first.dtype, first.numel) != (dtype, numel):
            return dataclasses.replace(first, problem=f"storage {member} declared as {first.numel} x "
                                              f"{first.dtype.name} and as {numel} x {dtype.name}")
        return first

    def rebuild_tensor(self, storage, offset, shape, stride, *unused):
        tensor = LazyTensor(storage, offset, shape, stride)
        self.tensors.append(tensor)
        return tensor


def _rebuild_parameter(data, *unused):
    return data


_TORCH_GLOBALS = {
    **BASIC_GLOBALS, **NUMPY_GLOBALS,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(np.dtype(dtype)) for name, dtype in _STORAGE_DTYPES.items()},
    **PICKLED_CONFIG_GLOBALS,
}
_TENSOR_GLOBALS = (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"))


def _printable(key) -> str:
    """A key as it appears in messages: one line, at most 200 characters."""
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(key)[:200])
    return text if len(str(key)) <= 200 else text + "..."


def _walk(tree):
    """(key path, value) for everything reachable through dicts, lists and tuples; each
    object once (pickles may hold cycles)."""
    seen = set()
    stack = [("", tree)]
    while stack:
        path, node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield path, node
        if isinstance(node, dict):
            items = [(_printable(k), v) for k, v in node.items()]
        elif isinstance(node, (list, tuple)):
            items = [(str(i), v) for i, v in enumerate(node)]
        else:
            continue
        stack.extend((f"{path}/{k}" if path else k, v) for k, v in reversed(items))


def _check_tensors(archive: _Archive, tree, tensors: list[LazyTensor]):
    """Names every tensor by its key path and refuses the file at the first one that does not
    fit its storage (tensors outside dicts and lists are checked too)."""
    named = set()
    for path, node in _walk(tree):
        if isinstance(node, LazyTensor):
            object.__setattr__(node, "name", path)
            named.add(id(node))
        if isinstance(node, (LazyTensor, _Storage)):
            problem = (_tensor_problem(node.storage, node.offset, node.shape, node.stride)
                       if isinstance(node, LazyTensor) else node.problem)
            if problem is not None:
                archive.refuse(f"{path or '<root>'}: {problem}")
    for i, tensor in enumerate(tensors):
        if id(tensor) not in named:
            problem = _tensor_problem(tensor.storage, tensor.offset, tensor.shape, tensor.stride)
            if problem is not None:
                archive.refuse(f"<tensor #{i}, not in a dict or list>: {problem}")


def read_torch_checkpoint(path) -> dict:
    """Loads a `torch.save` file as nested dicts whose tensors are `LazyTensor`s.

    Raises `UnsafePickleError` (naming the global) for anything outside the allow-list and
    `UnsafeCheckpointError` (both ValueErrors, naming the file) for files that are not
    well-formed zip-format torch checkpoints or whose tensors do not fit their storages.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    archive = _Archive(path)
    byteorder = archive.infos.get(f"{archive.prefix}byteorder")
    if byteorder is not None and archive.read_member(byteorder.filename, min(byteorder.file_size, 16),
                                                     "byteorder") != b"little":
        archive.refuse("not a little-endian checkpoint")
    pickle_name = f"{archive.prefix}data.pkl"
    size = archive.infos[pickle_name].file_size
    if size > MAX_PICKLE_BYTES:
        archive.refuse(f"{pickle_name} is {size} bytes (limit {MAX_PICKLE_BYTES})")
    raw = archive.read_member(pickle_name, size, "data.pkl")
    unpickler = _CheckpointUnpickler(io.BytesIO(raw), archive)
    try:
        tree = unpickler.load()
    except (UnsafeCheckpointError, UnsafePickleError):
        raise
    except Exception as e:  # any failure of a hostile or damaged pickle is a refusal of the file
        raise UnsafeCheckpointError(f"{path}: data.pkl is not a valid checkpoint pickle "
                                    f"({type(e).__name__}: {str(e)[:200]})") from e
    del raw
    _check_tensors(archive, tree, unpickler.tensors)
    return tree
