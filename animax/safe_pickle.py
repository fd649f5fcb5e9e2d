"""Restricted unpickling: data files load, code never runs.

A pickle can name any importable callable (`os.system`, say) and have the loader call it.
`RestrictedUnpickler` resolves only globals on an explicit allow-list; every other global is
refused with an `UnsafePickleError` naming it, before anything is called.
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


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list."""



def _python3_name(module: str, name: str) -> tuple[str, str]:
    """Python 2 names (`__builtin__.long`, `copy_reg._reconstructor`) as Python 3 spells them.
    Protocol 0-2 pickles written by Python 3 use them too (`int` is written as `__builtin__.long`)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


# Plain containers and the helper that rebuilds objects of (allow-listed) classes.
BASIC_GLOBALS = {("builtins", name): getattr(builtins, name)
                 for name in ("object", "set", "frozenset", "list", "dict", "tuple", "int",
                              "float", "complex", "bool", "str", "bytes", "bytearray", "slice")}
BASIC_GLOBALS[("copyreg", "_reconstructor")] = copyreg._reconstructor
BASIC_GLOBALS[("collections", "OrderedDict")] = collections.OrderedDict
# omegaconf's metadata pickles `defaultdict(dict)`; it loads as a plain dict, its factory unused.
BASIC_GLOBALS[("collections", "defaultdict")] = lambda factory=None, *items: dict(*items)
# Python 3 writes bytes into protocol 0-2 pickles as codecs.encode(text, "latin1").
BASIC_GLOBALS[("_codecs", "encode")] = codecs.encode

# What numpy arrays and scalars pickle through, under numpy 1 and numpy 2 module paths.
_multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
NUMPY_GLOBALS = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    NUMPY_GLOBALS[(_module, "_reconstruct")] = _multiarray._reconstruct
    NUMPY_GLOBALS[(_module, "scalar")] = _multiarray.scalar
for _module in ("numpy.dtypes",):
    for _name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "UInt32DType",
                  "UInt64DType", "BoolDType", "UInt8DType", "Int16DType", "Float16DType"):
        if hasattr(np.dtypes, _name):
            NUMPY_GLOBALS[(_module, _name)] = getattr(np.dtypes, _name)


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only allow-listed globals.

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
