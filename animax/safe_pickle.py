"""Restricted unpickling: data files load, code never runs.

A pickle can name any importable callable (`os.system`, say) and have the loader call it.
`RestrictedUnpickler` resolves only globals on an explicit allow-list; every other global is
refused with an `UnsafePickleError` naming it, before anything is called.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import copyreg
import pickle
from typing import Any, Callable, Mapping

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list."""


# Python 2 pickles name builtins and copyreg by their old module names.
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}

# Plain containers and the helper that rebuilds objects of (allow-listed) classes.
BASIC_GLOBALS = {("builtins", name): getattr(builtins, name)
                 for name in ("object", "set", "frozenset", "list", "dict", "tuple", "int",
                              "float", "complex", "bool", "bytes", "bytearray", "slice")}
BASIC_GLOBALS[("copyreg", "_reconstructor")] = copyreg._reconstructor
BASIC_GLOBALS[("collections", "OrderedDict")] = collections.OrderedDict
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
        module = _PY2_MODULES.get(module, module)
        if (module, name) in self._allowed:
            return self._allowed[(module, name)]
        if self._substitute is not None:
            replacement = self._substitute(module, name)
            if replacement is not None:
                return replacement
        raise UnsafePickleError(
            f"{self._source}: refusing to load global '{module}.{name}' (not on the allow-list)")
