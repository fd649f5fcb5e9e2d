"""Restricted unpickling: data files load, code never runs.

A pickle can name any importable callable (`os.system`, say) and have the loader call it.
`RestrictedUnpickler` resolves only globals on an explicit allow-list; every other global is
refused with an `UnsafePickleError` naming it, before anything is called.

A pickle can also ask allow-listed callables for huge allocations (`bytes(2**40)`, a numpy
array header larger than its data, a memo index of 2**30 that makes CPython's C unpickler
allocate and zero gigabytes). So the unpickler is Python's pure-Python one (its memo is a dict),
`bytes`/`bytearray` refuse integer sizes, numpy's `_reconstruct` takes only the empty
placeholder numpy writes, and an array's `__setstate__` header must match its data. Any other
failure of a damaged or hostile pickle is an `UnsafePickleError` naming the file.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import codecs
import collections
import copyreg
import pickle
from typing import Any, Callable, Mapping

import numpy as np

from animax.untrusted import RefusedFileError


class UnsafePickleError(pickle.UnpicklingError, RefusedFileError):
    """The pickle references a global outside the allow-list, asks for more than its data
    holds, or is not a valid pickle."""


def _no_size(name, make):
    """`bytes(n)` / `bytearray(n)` allocate n zero bytes from a few pickle bytes: refused."""
    def build(*args, **kwargs):
        if args and isinstance(args[0], int):
            raise UnsafePickleError(f"{name}() of an integer size ({args[0]}) is refused")
        return make(*args, **kwargs)
    build.__name__ = name
    return build


def _encode(obj, encoding="utf-8", errors="strict"):
    """What protocol 0-2 pickles write for bytes: codecs.encode(text, 'latin1'); no other codec."""
    if encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "iso88591"):
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r} is refused")
    return codecs.encode(obj, encoding, errors)


def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Python 2 names (`__builtin__.long`, `copy_reg._reconstructor`) as Python 3 spells them.
    Protocol 0-2 pickles written by Python 3 use them too (`int` is written as `__builtin__.long`)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


# Plain containers and the helper that rebuilds objects of (allow-listed) classes.
BASIC_GLOBALS = {("builtins", name): getattr(builtins, name)
                 for name in ("object", "set", "frozenset", "list", "dict", "tuple", "int",
                              "float", "complex", "bool", "str", "slice")}
BASIC_GLOBALS[("builtins", "bytes")] = _no_size("bytes", bytes)
BASIC_GLOBALS[("builtins", "bytearray")] = _no_size("bytearray", bytearray)
BASIC_GLOBALS[("copyreg", "_reconstructor")] = copyreg._reconstructor
BASIC_GLOBALS[("collections", "OrderedDict")] = collections.OrderedDict
# omegaconf's metadata pickles `defaultdict(dict)`; it loads as a plain dict, its factory unused.
BASIC_GLOBALS[("collections", "defaultdict")] = lambda factory=None, *items: dict(*items)
# Python 3 writes bytes into protocol 0-2 pickles as codecs.encode(text, "latin1").
BASIC_GLOBALS[("_codecs", "encode")] = _encode

# What numpy arrays and scalars pickle through, under numpy 1 and numpy 2 module paths.
_multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
MAX_DIMS = 64


class _NDArrayName:
    """What the global `numpy.ndarray` resolves to: only `_reconstruct` accepts it (calling or
    instantiating `ndarray` itself would allocate whatever shape the pickle asks for)."""

    def __new__(cls, *args, **kwargs):
        raise UnsafePickleError("numpy.ndarray may only be named as numpy's _reconstruct argument")


def _reconstruct(subtype, shape, dtype):
    """numpy pickles arrays as _reconstruct(ndarray, (0,), b'b') + __setstate__: the placeholder
    must be empty (the data and its real shape come with the state, checked by `_check_array_state`)."""
    if subtype is not _NDArrayName:
        raise UnsafePickleError(f"numpy _reconstruct of {getattr(subtype, '__name__', type(subtype).__name__)} "
                                "is refused")
    if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)
            and len(shape) <= MAX_DIMS and 0 in shape):
        raise UnsafePickleError(f"numpy _reconstruct with shape {str(shape)[:80]} "
                                "(not an empty placeholder) is refused")
    return _multiarray._reconstruct(np.ndarray, shape, dtype)


def _check_array_state(state):
    """An ndarray's pickled state: (version,) shape, dtype, is_fortran, data. The shape must
    describe exactly the data that follows (numpy accepts 2**62 elements of a 0-byte dtype, and
    an object array's list shorter than its shape)."""
    if not isinstance(state, tuple) or len(state) not in (4, 5):
        raise UnsafePickleError("numpy array state is not a 4- or 5-tuple")
    shape, dtype, _, data = state[-4:]
    if not (isinstance(shape, tuple) and len(shape) <= MAX_DIMS
            and all(type(d) is int and d >= 0 for d in shape)):
        raise UnsafePickleError(f"numpy array shape {str(shape)[:80]} is refused")
    if not isinstance(dtype, np.dtype):
        raise UnsafePickleError(f"numpy array dtype {type(dtype).__name__} is not a dtype")
    numel = 1
    for d in shape:
        numel *= d
    if dtype.hasobject:
        if not (isinstance(data, list) and len(data) == numel and dtype == np.dtype(object)):
            raise UnsafePickleError(f"numpy object array of shape {shape}: its data is not a list of {numel} items")
    elif not (isinstance(data, (bytes, bytearray, str)) and numel * dtype.itemsize == len(data)
              and (dtype.itemsize > 0 or numel == 0)):
        raise UnsafePickleError(f"numpy array header (shape {shape}, {dtype}) does not match its "
                                f"{len(data) if hasattr(data, '__len__') else '?'} bytes of data")


NUMPY_GLOBALS = {("numpy", "ndarray"): _NDArrayName, ("numpy", "dtype"): np.dtype}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    NUMPY_GLOBALS[(_module, "_reconstruct")] = _reconstruct
    NUMPY_GLOBALS[(_module, "scalar")] = _multiarray.scalar
for _module in ("numpy.dtypes",):
    for _name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "UInt32DType",
                  "UInt64DType", "BoolDType", "UInt8DType", "Int16DType", "Float16DType"):
        if hasattr(np.dtypes, _name):
            NUMPY_GLOBALS[(_module, _name)] = getattr(np.dtypes, _name)


class RestrictedUnpickler(pickle._Unpickler):
    """An Unpickler that resolves only allow-listed globals.

    Python's pure-Python unpickler (CPython's C one sizes its memo by the largest index a
    pickle names); the pickles read here (a checkpoint's data.pkl, SMAL files) are small.

    allowed: (module, name) -> the object to use for it.
    substitute: optional hook (module, name) -> replacement object or None, for whole families
        of classes that are replaced by stand-ins (e.g. chumpy's `Ch`).
    """

    def __init__(self, file, allowed: Mapping[tuple[str, str], Any],
                 substitute: Callable[[str, str], Any] | None = None, source: str = "pickle",
                 **kwargs):
        kwargs.setdefault("encoding", "latin1")
        super().__init__(file, **kwargs)
        self._allowed = allowed
        self._substitute = substitute
        self._source = source

    def find_class(self, module: str, name: str):
        module, name = _python3_name(module, name)
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if self._substitute is not None:
            replacement = self._substitute(module, name)
            if replacement is not None:
                return replacement
        raise UnsafePickleError(
            f"{self._source}: refusing to load global '{module}.{name}' (not on the allow-list)")

    def load_build(self):
        inst = self.stack[-2] if len(self.stack) >= 2 else None
        if isinstance(inst, np.ndarray):
            _check_array_state(self.stack[-1])
        super().load_build()

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build

    def load(self):
        try:
            return super().load()
        except RefusedFileError as e:
            if str(e).startswith(self._source):
                raise
            raise type(e)(f"{self._source}: {e}") from e
        except Exception as e:  # a damaged or hostile pickle: one line naming the file
            raise UnsafePickleError(f"{self._source}: refused: not a valid pickle or not the data "
                                    f"expected ({type(e).__name__}: {str(e)[:200]})") from e
