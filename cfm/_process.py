"""What kind of process imports cfm (no NumPy import here: it runs first)."""
import os
import sys


def is_cli_process():
    """True in a ``cfm`` command-line process (console script or
    ``python -m cfm``)."""
    argv = list(getattr(sys, "orig_argv", None) or [])
    if "-m" in argv[:-1] and argv[argv.index("-m") + 1] == "cfm":
        return True
    return os.path.basename(sys.argv[0] if sys.argv else "") in ("cfm", "cfm.exe")


def configure_cli_process():
    """In the command line, OpenBLAS gets one thread (unless the user set
    OPENBLAS_NUM_THREADS): cfm's kernels use their own OpenMP threads and
    the commands call no multi-threaded BLAS, while OpenBLAS's idle threads
    spin for a while after NumPy's import, competing with the first blocks
    of work (``cfm predict`` on a 1M-row file: about 6% of its time).  Must
    run before NumPy is imported."""
    if is_cli_process() and "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
