"""``scipy.sparse``, imported on first use.

The command line scores text files without ever building a SciPy matrix, and
importing ``scipy.sparse`` is about a third of its start-up (~0.1 s); modules
on that path refer to it through this proxy instead of importing it at load
time.  ``issparse`` answers without the import when SciPy was never loaded
(no object can then be a SciPy sparse matrix).
"""
import importlib
import sys


class _LazySparse:
    __slots__ = ()

    def __getattr__(self, name):
        mod = importlib.import_module("scipy.sparse")
        return getattr(mod, name)

    @staticmethod
    def issparse(x):
        mod = sys.modules.get("scipy.sparse")
        return mod is not None and mod.issparse(x)

    def __repr__(self):
        return "<lazy module 'scipy.sparse'>"


sparse = _LazySparse()
