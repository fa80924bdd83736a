"""Reading and writing *data files*: fast readers and writers for libsvm /
libFM / libffm text files, cfm's binary data cache (``.cfmdata``) and block
sources for out-of-core training and batch scoring.

(Not :mod:`cfm.datasets`, which makes *synthetic* data sets in memory, nor
``benchmarks/datasets.py``, which fetches the benchmark data sets.)

Text parsing runs in a Cython kernel without the GIL (``cfm._parse``): the
file is read in large chunks (64 MB, cut at the last newline; gzip is
detected by its magic bytes and decompressed in a background thread while
the previous chunk is parsed), each chunk is split at newlines into pieces
that OpenMP threads parse in parallel, and the pieces are concatenated in
order.  Numbers are converted exactly as Python's ``float()`` does, so the
output is bit-identical to :func:`sklearn.datasets.load_svmlight_file`.

Limits (what a data file can make cfm allocate is bounded by them; input
beyond them raises :class:`cfm.DataFormatError` naming file and line):

* a line is at most :data:`MAX_LINE_BYTES` (64 MiB) long;
* libffm field and feature ids are at most :data:`MAX_ID_32` (2**31 - 2):
  ids are 32-bit, as in libffm and xLearn, and their counts fit in int32;
* libsvm / libFM ids are at most 2**63 - 2 (the column count fits in
  int64); a model trained on a file has one parameter row per id up to the
  largest, and a model that would not fit in this machine's memory is
  refused before anything is allocated, naming the line of the id.

Every read of a file is checked: a truncated or corrupted gzip stream and a
cache whose checksums or structure do not match raise DataFormatError too.

Modules (each imports only those above it in this list, and cfm's lower layers):

* ``_source``: opening plain / gzip files and streams, chunks of lines, format sniffing;
* ``text``: the libsvm / libFM / libffm readers (``load_libsvm``, ``load_libffm``);
* ``writers``: ``dump_libsvm``, ``dump_libffm``;
* ``cache``: the ``.cfmdata`` cache (``convert_to_cache``, ``load_cache``; layout there);
* ``blocks``: ``scan_file``, ``iter_blocks`` and the block source of batch scoring;
* ``interactions``: ``load_interactions`` (``user item [value]`` files for ranking).
"""
import sys
import types

from . import _source
from ._source import (CACHE_MAGIC, CHUNK_BYTES, MAX_ID_32, MAX_LINE_BYTES, _GZIP_ERRORS,  # noqa: F401
                      _MAX_ID_64, _LineTooLong, _detect_format, _gzip_error, _is_cache,
                      _open_binary, _read_chunks, _resolve_format, _too_long)
from .text import (_REASONS, _Chunk, _ParseError, _check_dtype, _check_n,  # noqa: F401
                   _first_line_above, _line_of_row, _load_text, _locate_largest_ids,
                   _parse_stream, _where_row, load_libffm, load_libfm, load_libsvm)
from .writers import dump_libffm, dump_libsvm  # noqa: F401
from .cache import (CACHE_VERSION, _CACHE_PREFIX, _VERIFIED, _CacheFile,  # noqa: F401
                    _first_nonfinite, convert_to_cache, load_cache)
from .blocks import _scan, iter_blocks, scan_file  # noqa: F401
from .interactions import load_interactions  # noqa: F401

__all__ = ["load_libsvm", "load_libfm", "load_libffm", "dump_libsvm", "dump_libffm",
           "convert_to_cache", "load_cache", "iter_blocks", "scan_file", "load_interactions"]

# Settings the readers read at call time, where they live (cfm.data._source).
_SETTINGS = ("MAX_LINE_BYTES",)


class _DataPackage(types.ModuleType):
    """``cfm.data.MAX_LINE_BYTES = n`` sets the limit the readers use, as it
    did when cfm.data was one module."""

    def __setattr__(self, name, value):
        if name in _SETTINGS:
            setattr(_source, name, value)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _DataPackage
