"""Where data text comes from (the lowest layer of :mod:`cfm.data`):
opening plain / gzip files and binary streams (stdin), reading them in
chunks of complete lines with a bounded line length, and telling the format
of a data file or buffer -- the one place that sniffs formats (training,
loading, caching and batch scoring all call it).

Not to be confused with :mod:`cfm.datasets` (synthetic data) or
``benchmarks/datasets.py`` (the benchmark data sets).
"""
import gzip
import os
import stat
import zlib
from concurrent.futures import ThreadPoolExecutor

from .. import _parse
from ..exceptions import DataFormatError

CHUNK_BYTES = 64 << 20
#: Longest line the text readers accept (bytes): a longer one -- or a file or
#: stream without newlines, such as /dev/zero -- raises DataFormatError
#: instead of being buffered until memory runs out.  (Setting
#: ``cfm.data.MAX_LINE_BYTES`` sets this one: see cfm/data/__init__.py.)
MAX_LINE_BYTES = 64 << 20
#: Largest libffm field / feature id (ids are 32-bit, as in libffm / xLearn).
MAX_ID_32 = int(_parse.MAX_ID_32)
# Largest libsvm id: the column count (id + 1) must fit in int64.
_MAX_ID_64 = 2**63 - 2
#: The magic bytes of a ``.cfmdata`` cache (cfm.data.cache), for sniffing.
CACHE_MAGIC = b"\x89CFMDAT\n"
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_ERRORS = (EOFError, zlib.error, gzip.BadGzipFile)
FORMATS = ("auto", "libsvm", "libfm", "libffm", "cache")


class _LineTooLong(DataFormatError):
    """Raised by the chunk readers; callers that count lines add the line."""


def _too_long():
    """Why a line is refused (for messages)."""
    return (f"line longer than {MAX_LINE_BYTES:,} bytes (cfm.data.MAX_LINE_BYTES); is this a "
            "text data file?")


def _gzip_error(name, exc):
    return DataFormatError(f"{name}: corrupted or truncated gzip data "
                           f"({exc or type(exc).__name__})")

# --------------------------------------------------------------------------
# Reading text in chunks
# --------------------------------------------------------------------------

def _open_binary(path):
    """Open ``path`` for reading bytes, transparently decompressing gzip."""
    path = os.fspath(path)
    f = open(path, "rb")
    try:
        magic = f.read(2)
        f.seek(0)
    except Exception:
        f.close()
        raise
    if magic == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=f, mode="rb"), f
    return f, f


def _is_cache(path):
    try:
        with open(os.fspath(path), "rb") as f:
            return f.read(8) == CACHE_MAGIC
    except IsADirectoryError:
        return False


def _read_chunks(path, chunk_bytes=CHUNK_BYTES):
    """Yield buffers of complete lines (the last one may lack its newline).

    The next buffer is read (and decompressed) in a background thread while
    the caller works on the current one.  A line longer than MAX_LINE_BYTES
    raises _LineTooLong; corrupted gzip data raises DataFormatError.
    """
    name = os.fspath(path)
    fh, raw = _open_binary(path)
    if fh is raw:
        try:
            st = os.fstat(raw.fileno())
            # only a regular file's size is known: /dev/zero says 0
            small = stat.S_ISREG(st.st_mode) and st.st_size < chunk_bytes
        except (OSError, AttributeError):
            small = False
        if small:  # no read-ahead thread for small files
            try:
                buf = raw.read(chunk_bytes + 1)
            finally:
                raw.close()
            if len(buf) <= chunk_bytes:  # else it grew meanwhile: read it in chunks
                if buf:
                    yield buf
                return
            fh, raw = _open_binary(path)
    state = {"rest": b"", "eof": False}

    def read_next():
        rest = state["rest"]
        while True:
            if state["eof"]:
                state["rest"] = b""
                return bytes(rest) if rest else None
            if len(rest) > MAX_LINE_BYTES:
                raise _LineTooLong(f"{name}: {_too_long()}")
            buf = bytearray(len(rest) + chunk_bytes)
            buf[:len(rest)] = rest
            mv = memoryview(buf)
            n = len(rest)
            try:
                while n < len(buf):
                    k = fh.readinto(mv[n:])
                    if not k:
                        state["eof"] = True
                        break
                    n += k
            except _GZIP_ERRORS as exc:
                raise _gzip_error(name, exc) from None
            finally:
                del mv
            if n < len(buf):
                del buf[n:]
            cut = buf.rfind(b"\n") + 1
            if cut == 0:  # no complete line yet: keep reading
                rest = buf
                continue
            if rest and buf.find(b"\n", len(rest)) > MAX_LINE_BYTES:
                raise _LineTooLong(f"{name}: {_too_long()}")
            state["rest"] = bytes(buf[cut:])
            del buf[cut:]
            return buf

    with ThreadPoolExecutor(max_workers=1) as ex:
        try:
            fut = ex.submit(read_next)
            while True:
                buf = fut.result()
                if buf is None:
                    return
                fut = ex.submit(read_next)
                yield buf
        finally:
            try:
                fut.result()
            except Exception:  # noqa: BLE001 - already failing or closing
                pass
            fh.close()
            raw.close()



def _is_fileobj(obj):
    return hasattr(obj, "read") and not isinstance(obj, (str, bytes, os.PathLike))


def _name(src):
    """How a path or a binary file object is named in messages."""
    if _is_fileobj(src):
        name = getattr(src, "name", None)
        return "<stdin>" if name in (None, 0, "<stdin>") or not isinstance(name, str) else name
    return os.fspath(src)


def _fileobj_chunks(fh, chunk_bytes, name="<stdin>"):
    """Buffers of complete lines read from a binary file object (a pipe is
    fine; gzip recognised by its magic bytes); a line longer than
    MAX_LINE_BYTES raises _LineTooLong, corrupted gzip data DataFormatError."""
    head = fh.peek(2)[:2] if hasattr(fh, "peek") else b""
    if head == _GZIP_MAGIC:
        fh = gzip.GzipFile(fileobj=fh, mode="rb")
    parts, n_rest = [], 0  # the last line so far, without a newline yet
    while True:
        try:
            block = fh.read(chunk_bytes)
        except _GZIP_ERRORS as exc:
            raise _gzip_error(name, exc) from None
        if not block:
            if parts:
                yield b"".join(parts)
            return
        cut = block.rfind(b"\n") + 1
        if cut == 0:
            parts.append(block)
            n_rest += len(block)
            if n_rest > MAX_LINE_BYTES:
                raise _LineTooLong(f"{name}: {_too_long()}")
            continue
        if n_rest + cut - 1 > MAX_LINE_BYTES:
            raise _LineTooLong(f"{name}: {_too_long()}")
        buf = b"".join(parts + [memoryview(block)[:cut]]) if parts else block[:cut]
        parts, n_rest = ([block[cut:]], len(block) - cut) if cut < len(block) else ([], 0)
        yield buf


# --------------------------------------------------------------------------
# Format sniffing (once, for files and buffers)
# --------------------------------------------------------------------------

def _format_of_lines(lines):
    """'libffm' or 'libsvm' from the first data line among ``lines`` (bytes):
    libffm when its first feature token has two colons."""
    for line in lines:
        toks = line.split(b"#", 1)[0].split()
        feats = [t for t in toks[1:] if not t.startswith(b"qid")]
        if feats:
            return "libffm" if feats[0].count(b":") >= 2 else "libsvm"
    return "libsvm"


def _sniff_format(buf):
    """'libffm' or 'libsvm' from the first data line of a buffer (a stream's
    first chunk)."""
    return _format_of_lines(bytes(buf[:1 << 20]).split(b"\n"))


def _line_prefixes(fh, max_lines=10_000, head=1 << 16, budget=16 << 20):
    """The first ``head`` bytes of each of the first lines of a binary file
    object, reading at most about ``budget`` bytes (a file without newlines
    is not read to its end)."""
    used = 0
    for _ in range(max_lines):
        line = fh.readline(head)
        if not line:
            return
        used += len(line)
        yield line
        while not line.endswith(b"\n"):  # skip the rest of a long line
            if used > budget:
                return
            line = fh.readline(head)
            if not line:
                return
            used += len(line)
        if used > budget:
            return



def _detect_format(path):
    """'cache', 'libffm' or 'libsvm' from the magic bytes / first data line."""
    if _is_cache(path):
        return "cache"
    fh, raw = _open_binary(path)
    try:
        return _format_of_lines(_line_prefixes(fh))
    except _GZIP_ERRORS as exc:
        raise _gzip_error(os.fspath(path), exc) from None
    finally:
        fh.close()
        raw.close()


def _check_format(format):
    if format not in FORMATS:
        raise ValueError(f"format must be 'auto', 'libsvm', 'libfm', 'libffm' or 'cache', "
                         f"got {format!r}")
    return "libsvm" if format == "libfm" else format


def _resolve_format(path, format, allow_cache=True):
    format = _check_format(format)
    if format == "auto":
        format = _detect_format(path)
    if format == "cache" and not allow_cache:
        raise ValueError("expected a text file, got a .cfmdata cache")
    return format
