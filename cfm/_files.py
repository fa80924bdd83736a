"""File plumbing shared by model files, batch scoring and the command line.

Reading: :func:`open_regular` opens only regular files (a FIFO, a device such
as ``/dev/zero`` or a socket is refused before anything is read, so that no
reader can block forever or read until memory runs out) and reports their
size, which bounds everything read from them.

Writing: :func:`atomic_output` writes a file the way a user expects a save to
behave:

* a path that does not exist yet, or a regular file, is written through a
  temporary file created next to it (a unique name per call, so that
  concurrent writers in one process never share it) and renamed onto it
  only when everything was written: a failure or a kill leaves the old file
  intact, and concurrent saves to one path leave one complete file;
* a symbolic link is followed: its target is what is written (the link
  stays a link);
* anything else that exists -- ``/dev/null``, a FIFO, a character device --
  is opened and written in place, never replaced by a regular file;
* the temporary file is removed on every exit path: an exception, Ctrl-C,
  and SIGTERM / SIGHUP (a handler removes it and the process then dies of
  the signal as it would have; installed only while a temporary file exists,
  only from the main thread, and only where the signal had its default
  action).

:func:`check_writable` tells early (before a long training run) whether a
path could be written that way.
"""
import contextlib
import errno
import os
import signal
import stat
import threading

from .exceptions import ModelFileError

__all__ = ["open_regular", "atomic_output", "check_writable", "same_file", "scratch_file",
           "scratch_dir"]


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

def _kind(mode):
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path, what="a model file", error=ModelFileError):
    """``(fd, size)`` of the regular file ``path`` opened for reading.

    The file is opened without blocking (a FIFO without a writer would block
    ``open``) and checked with ``fstat`` on the open descriptor (no race
    between a check and the open).  A directory raises IsADirectoryError, a
    missing file FileNotFoundError, anything but a regular file ``error``
    (ModelFileError by default) naming the path."""
    path = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) \
        | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, f"is a directory, not {what}", path)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{path!r} is {_kind(st.st_mode)}, not {what} (only regular files "
                        "are read)")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def pread_into(fd, buf, offset):
    """Fill the writable buffer ``buf`` from ``offset`` of ``fd``; returns the
    number of bytes read (less than ``len(buf)`` only at the end of the file)."""
    mv = memoryview(buf).cast("B")
    n, got = len(mv), 0
    preadv = getattr(os, "preadv", None)
    while got < n:
        if preadv is not None:
            k = preadv(fd, [mv[got:]], offset + got)
        else:  # pragma: no cover - platforms without preadv
            chunk = os.pread(fd, min(n - got, 1 << 26), offset + got)
            k = len(chunk)
            mv[got:got + k] = chunk
        if k == 0:
            break
        got += k
    return got


def same_file(a, b):
    """True when paths ``a`` and ``b`` name the same existing file (or the
    same path, once symbolic links are resolved)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError, TypeError):
        pass
    try:
        return os.path.realpath(os.fspath(a)) == os.path.realpath(os.fspath(b))
    except (OSError, ValueError, TypeError):
        return False


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

# (pid, path) of the temporary files alive (removed by the signal handler)
_TEMPS = set()
_TEMPS_LOCK = threading.RLock()  # re-entrant: the handler may interrupt its holder
_GUARD = {"depth": 0, "saved": {}}
_GUARD_LOCK = threading.Lock()
_GUARDED_SIGNALS = tuple(getattr(signal, s) for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s))


def _on_signal(signum, frame):  # pragma: no cover - exercised in a subprocess test
    with _TEMPS_LOCK:
        temps = list(_TEMPS)
    for pid, p in temps:
        if pid == os.getpid():  # not a forked child's copy of the set
            try:
                os.remove(p)
            except OSError:
                pass
    # die of the signal, as the process would have without this handler
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@contextlib.contextmanager
def _signal_guard():
    """Remove temporary files on SIGTERM / SIGHUP while the block runs (see
    the module docstring for when the handler is installed)."""
    installed = []
    if threading.current_thread() is threading.main_thread():
        with _GUARD_LOCK:
            if _GUARD["depth"] == 0:
                for s in _GUARDED_SIGNALS:
                    try:
                        if signal.getsignal(s) == signal.SIG_DFL:
                            signal.signal(s, _on_signal)
                            _GUARD["saved"][s] = signal.SIG_DFL
                    except (ValueError, OSError):  # not the main interpreter
                        pass
            _GUARD["depth"] += 1
            installed.append(True)
    try:
        yield
    finally:
        if installed:
            with _GUARD_LOCK:
                _GUARD["depth"] -= 1
                if _GUARD["depth"] == 0:
                    for s, old in list(_GUARD["saved"].items()):
                        try:
                            if signal.getsignal(s) is _on_signal:
                                signal.signal(s, old)
                        except (ValueError, OSError):
                            pass
                    _GUARD["saved"].clear()


def _resolve(path):
    """The path to write: ``path`` with symbolic links resolved (a dangling
    link resolves to the file it names)."""
    p = os.fspath(path)
    if p == "":
        raise FileNotFoundError("cannot write to an empty path")
    return os.path.realpath(p)


def _temp_in(directory, base):
    """Create a unique temporary file next to the target; returns (fd, path).
    Created with mode 0o666 (the umask applies, as for any new file)."""
    base = base[:200]  # the name stays within NAME_MAX
    for _ in range(100):
        name = os.path.join(directory, f".{base}.{os.urandom(6).hex()}.tmp")
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
                         | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return fd, name
    raise FileExistsError(errno.EEXIST, "cannot create a unique temporary file", directory)


def _write_error(shown, exc):
    """An OSError of the same kind whose message names the target (not a
    temporary file) without an errno prefix."""
    msg = (exc.strerror or str(exc)) if isinstance(exc, OSError) else str(exc)
    err = (type(exc) if isinstance(exc, OSError) else OSError)(f"cannot write {shown}: {msg}")
    err.errno = getattr(exc, "errno", None)
    return err


def _target(path):
    """``(target, st)``: the file to write (symbolic links resolved) and its
    stat (None when it does not exist yet); a directory raises."""
    target = _resolve(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", os.fspath(path))
    return target, st


def check_writable(path):
    """Raise OSError (naming ``path``) unless ``path`` can be written by
    :func:`atomic_output`: an existing non-regular file must be writable, a
    directory is refused, and a new or regular file needs a writable folder
    (checked by creating and removing a temporary file there)."""
    target, st = _target(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        if not os.access(target, os.W_OK):
            raise PermissionError(f"cannot write {os.fspath(path)}: permission denied")
        return
    directory = os.path.dirname(target) or "."
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {os.fspath(path)}: no such directory "
                                f"{directory}")
    try:
        fd, tmp = _temp_in(directory, os.path.basename(target))
    except OSError as exc:
        raise _write_error(os.fspath(path), exc) from None
    os.close(fd)
    os.remove(tmp)


def scratch_dir(path):
    """The folder for intermediate files of a write to ``path``: the target's
    own folder (symbolic links resolved) when it is a regular file or does not
    exist yet, else (``/dev/null``, a FIFO...) the system's temporary folder."""
    import tempfile

    target = _resolve(path)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is None or stat.S_ISREG(st.st_mode):
        return os.path.dirname(target) or "."
    return tempfile.gettempdir()


@contextlib.contextmanager
def _registered_temp(directory, base, shown):
    """Context manager: ``(fd, path)`` of a new temporary file in
    ``directory`` (a unique name derived from ``base``), registered for the
    SIGTERM / SIGHUP handler and removed when the block ends; an error
    creating it names ``shown``."""
    with _signal_guard():
        try:
            fd, tmp = _temp_in(directory, base)
        except OSError as exc:
            raise _write_error(shown, exc) from None
        with _TEMPS_LOCK:
            _TEMPS.add((os.getpid(), tmp))
        try:
            yield fd, tmp
        finally:
            with _TEMPS_LOCK:
                _TEMPS.discard((os.getpid(), tmp))
            try:
                os.remove(tmp)
            except OSError:
                pass


@contextlib.contextmanager
def scratch_file(directory, base):
    """Context manager: the path of a new, empty temporary file in
    ``directory`` (a unique name derived from ``base``), removed when the
    block ends, and by the SIGTERM / SIGHUP handler (see the module
    docstring) if the process is killed meanwhile."""
    with _registered_temp(directory, base, os.path.join(directory, base)) as (fd, tmp):
        os.close(fd)
        yield tmp


@contextlib.contextmanager
def atomic_output(path, buffering=1 << 20):
    """Context manager: a binary file object that writes ``path`` (see the
    module docstring).  The target is replaced only when the block ends
    without an exception; then its content is exactly what was written."""
    shown = os.fspath(path)
    target, st = _target(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        # /dev/null, a FIFO, a terminal...: written in place, never replaced
        try:
            fh = open(target, "wb", buffering=buffering)
        except OSError as exc:
            raise _write_error(shown, exc) from None
        with fh:
            yield fh
        return
    directory = os.path.dirname(target) or "."
    with _registered_temp(directory, os.path.basename(target), shown) as (fd, tmp):
        if st is not None:  # keep the permissions of the file it replaces
            try:
                os.chmod(tmp, stat.S_IMODE(st.st_mode))
            except OSError:
                pass
        fh = open(fd, "wb", buffering=buffering)
        try:
            yield fh
        except BaseException:
            try:
                fh.close()
            except OSError:
                pass
            raise
        try:
            fh.close()  # flushes: a full disk fails here or in a write
            os.replace(tmp, target)
        except OSError as exc:
            raise _write_error(shown, exc) from exc
