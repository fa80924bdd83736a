"""Build script for cfm's compiled kernels.

Extensions are built as ``cfm._name`` from ``src/cfm/_name.pyx``. OpenMP is
probed by compiling and linking a tiny program with the real compiler; when
that fails (or ``CFM_NO_OPENMP=1``) the kernels build single-threaded and give
the same results.

Environment switches:
  CFM_NO_OPENMP=1     build without OpenMP
  CFM_DEBUG=1         Cython bounds/wraparound checks on, -O0 -g
  CFM_NATIVE=1        add -march=native (local benchmark builds only; the
                      resulting binary may crash on other CPUs)
"""
import os
import sys
import tempfile
import textwrap
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

MODULES = ["_pool", "_fm", "_ffm", "_fwfm", "_utils", "_parse", "_mcmc", "_format", "_fastparse",
           "_deepfm", "_rank", "_mix"]


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _openmp_flags(compiler):
    """Return (compile_args, link_args) for OpenMP, or None if unavailable."""
    if _flag("CFM_NO_OPENMP"):
        return None
    if compiler.compiler_type == "msvc":
        candidates = [(["/openmp"], [])]
    elif sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"]), (["-fopenmp"], ["-fopenmp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    code = textwrap.dedent(
        """
        #include <omp.h>
        #include <stdio.h>
        int main(void) {
            int n = 0;
            #pragma omp parallel reduction(+:n)
            n += 1;
            printf("%d", n);
            return omp_get_max_threads() > 0 ? 0 : 1;
        }
        """
    )
    for cflags, lflags in candidates:
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "omp_probe.c")
            with open(src, "w") as f:
                f.write(code)
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(objs, "omp_probe", output_dir=tmp, extra_postargs=lflags)
            except Exception:  # noqa: BLE001 - any compiler/link failure means "no OpenMP"
                continue
            return cflags, lflags
    return None


class BuildExt(build_ext):
    def build_extensions(self):
        omp = _openmp_flags(self.compiler)
        if omp is None:
            warnings.warn(
                "cfm: OpenMP not available (or CFM_NO_OPENMP set); building single-threaded "
                "kernels. Results are identical, n_jobs is ignored.",
                stacklevel=1,
            )
        is_msvc = self.compiler.compiler_type == "msvc"
        for ext in self.extensions:
            if is_msvc:
                ext.extra_compile_args += ["/O2"]
            elif _flag("CFM_DEBUG"):
                ext.extra_compile_args += ["-O0", "-g"]
            else:
                # -fno-math-errno lets sqrt vectorise; unlike -ffast-math it
                # keeps IEEE semantics (NaN/inf checks still work).
                ext.extra_compile_args += ["-O3", "-fno-math-errno"]
                if _flag("CFM_NATIVE"):
                    ext.extra_compile_args += ["-march=native"]
            if omp is not None:
                ext.extra_compile_args += omp[0]
                ext.extra_link_args += omp[1]
                ext.define_macros = list(ext.define_macros or []) + [("CFM_OPENMP", "1")]
        super().build_extensions()


debug = _flag("CFM_DEBUG")
directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": debug,
    "initializedcheck": debug,
    "cdivision": True,
    "nonecheck": False,
    "embedsignature": True,
}

extensions = [
    Extension(
        f"cfm.{name}",
        [f"src/cfm/{name}.pyx"],
        include_dirs=[np.get_include(), "src/cfm"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    )
    for name in MODULES
]

setup(
    ext_modules=cythonize(extensions, include_path=["src"], compiler_directives=directives),
    cmdclass={"build_ext": BuildExt},
)
