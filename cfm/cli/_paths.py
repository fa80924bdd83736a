"""Checks of the paths a command is given, before any work starts: the input
exists and is the right kind of file, the output does not replace an input.

The few private names of lower layers that the command line still reads
(a model file's magic bytes, the ``.cfmdata`` cache's header) are used here
and only here."""
import os
import stat

from ._options import UsageError


def check_input(path, what="file"):
    """``path`` exists and is not a directory ('-', stdin, passes)."""
    if path == "-":
        return
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such {what}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, expected a {what}")


def is_model_file(path):
    """True when ``path`` is a regular file starting with a cfm model's magic
    bytes (a pipe or device is not opened for reading: nothing is consumed)."""
    from .._files import open_regular, pread_into
    from .._model_file import MAGIC

    try:
        fd, _ = open_regular(path)
    except (OSError, ValueError):
        return False
    try:
        head = bytearray(len(MAGIC))
        return pread_into(fd, head, 0) == len(MAGIC) and bytes(head) == MAGIC
    except OSError:
        return False
    finally:
        os.close(fd)


def check_model_path(path):
    """A model path must name an existing regular file (a FIFO or a device
    would block or never end)."""
    from .._files import _kind
    from ..exceptions import ModelFileError

    check_input(path, "model file")
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise ModelFileError(f"{path} is {_kind(mode)}, not a model file (only regular files "
                             "are read)")


def check_data_file(path, not_stdin=None):
    """A data file exists and is not a model file.  ``not_stdin``: the usage
    error's message when the command cannot read '-' (stdin)."""
    check_input(path, "data file")
    if path == "-":
        if not_stdin is not None:
            raise UsageError(not_stdin)
    elif is_model_file(path):
        raise ValueError(f"{path} is a cfm model file, not a data file")


def check_output(path, inputs, what="-o/--output"):
    """Refuse an empty output path or one naming an input file (it would be
    replaced by the output)."""
    from .._files import same_file

    if path == "":
        raise UsageError(f"{what} must not be empty")
    for name in inputs:
        if name not in (None, "-") and os.path.exists(path) and same_file(path, name):
            raise UsageError(f"{what} {path} is the input file {name}: it would be "
                             "overwritten; choose another output path")


def is_cache(path):
    """True when ``path`` is a ``.cfmdata`` cache (by its magic bytes)."""
    from .. import data as cfm_data

    return cfm_data._is_cache(path)


def cache_header(path):
    """A ``.cfmdata`` cache's validated header (n_rows, n_features, nnz,
    arrays with their CRC32 ...)."""
    from .. import data as cfm_data

    return cfm_data._CacheFile(path).header
