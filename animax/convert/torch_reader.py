"""Reads PyTorch checkpoints (`torch.save` zip format) without torch and without running code.

`data.pkl` inside the zip is unpickled by `RestrictedUnpickler`: tensors become `LazyTensor`s
that point at their storage file in the archive and are read one at a time on demand, so
converting a multi-GB checkpoint never holds more than one extra tensor in memory.
Configuration objects (omegaconf `DictConfig`/`ListConfig`, yacs `CfgNode`, Lightning's
`AttributeDict`) load as inert containers of their content (`animax.convert.pickled_configs`).
"""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np

from animax.convert.pickled_configs import PICKLED_CONFIG_GLOBALS
from animax.safe_pickle import BASIC_GLOBALS, NUMPY_GLOBALS, RestrictedUnpickler

# torch.<Name>Storage -> element dtype.
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16, "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8,
    "BoolStorage": np.bool_, "UntypedStorage": np.uint8,
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class _Storage:
    archive: zipfile.ZipFile
    member: str
    dtype: np.dtype
    numel: int


@dataclasses.dataclass(frozen=True)
class LazyTensor:
    """A tensor of a checkpoint, read from the archive when `numpy()` is called."""
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self):
        return np.dtype(self.storage.dtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    def numpy(self) -> np.ndarray:
        """The tensor as a new contiguous array (little-endian, as torch writes it)."""
        raw = self.storage.archive.read(self.storage.member)
        flat = np.frombuffer(raw, dtype=self.dtype, count=self.storage.numel)
        itemsize = self.dtype.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.shape, strides=[s * itemsize for s in self.stride])
        return np.array(view, copy=True)


def _rebuild_tensor(storage, offset, shape, stride, *unused):
    return LazyTensor(storage, int(offset), tuple(shape), tuple(stride))


def _rebuild_parameter(data, *unused):
    return data


_TORCH_GLOBALS = {
    **BASIC_GLOBALS, **NUMPY_GLOBALS,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(np.dtype(dtype)) for name, dtype in _STORAGE_DTYPES.items()},
    **PICKLED_CONFIG_GLOBALS,
}


class _CheckpointUnpickler(RestrictedUnpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, source: str):
        super().__init__(file, _TORCH_GLOBALS, source=source, encoding="utf-8")
        self._archive = archive
        self._prefix = prefix

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise ValueError(f"{self._source}: unsupported persistent id {pid[:2]!r}")
        _, storage_type, key, _location, numel = pid
        return _Storage(self._archive, f"{self._prefix}data/{key}", storage_type.dtype, int(numel))


def read_torch_checkpoint(path) -> dict:
    """Loads a `torch.save` file as nested dicts whose tensors are `LazyTensor`s.

    Raises `UnsafePickleError` (naming the global) for anything outside the allow-list and
    ValueError for files that are not zip-format torch checkpoints.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a zip-format PyTorch checkpoint (legacy torch<1.6 files: "
                         f"re-save them with torch.save in a current PyTorch)")
    archive = zipfile.ZipFile(path)
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
        raise ValueError(f"{path}: expected one '<name>/data.pkl' in the archive, found {pickles}")
    prefix = pickles[0][: -len("data.pkl")]
    with archive.open(pickles[0]) as f:
        return _CheckpointUnpickler(f, archive, prefix, str(path)).load()
