"""What every ``cfm`` command shares on the way in: the argument parser that
reports usage errors as one line, option value types, and the options that
several commands declare (``--threads``, ``--zero-based``, ``--block-rows``,
``-q``)."""
import argparse
import sys

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPT, EXIT_PIPE = 0, 1, 2, 130, 141
MAX_COUNT = 2**31 - 1  # epochs, sweeps, patience: counts the estimators accept


class UsageError(Exception):
    """Bad option values (exit status 2)."""

    def __init__(self, message, prog=None):
        super().__init__(message)
        self.prog = prog


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors raised as UsageError (no sys.exit, no usage dump)."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')", prog=self.prog)


class Log:
    """Messages for the user on stderr, one line each; nothing when ``quiet``."""

    def __init__(self, quiet):
        self.quiet = quiet

    def __call__(self, msg):
        if not self.quiet:
            print(msg, file=sys.stderr, flush=True)


def fmt_int(n):
    return f"{n:,}"


# --------------------------------------------------------------------------
# Option value types (argparse ``type=``): ArgumentTypeError names the problem
# --------------------------------------------------------------------------

def _parse(text, convert, expected):
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None


def int_range(low, high=None):
    """An integer in ``[low, high]`` (no upper bound when ``high`` is None)."""
    def conv(text):
        v = _parse(text, int, "an integer")
        if v < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {v}")
        if high is not None and v > high:
            raise argparse.ArgumentTypeError(f"must be <= {high}, got {v}")
        return v
    return conv


def float_range(low=0.0, low_open=False):
    """A finite number ``>= low`` (``> low`` when ``low_open``)."""
    def conv(text):
        v = _parse(text, float, "a number")
        if v != v or v in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        if v < low or (low_open and v == low):
            raise argparse.ArgumentTypeError(f"must be {'>' if low_open else '>='} {low:g}, "
                                             f"got {text}")
        return v
    return conv


def layer_sizes(text):
    """Hidden layer sizes ``256,128`` as a tuple; ``none`` (or empty): ()."""
    t = text.strip().lower()
    if t in ("", "none"):
        return ()
    parts = t.split(",")
    if not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected sizes such as 256,128 (or none), got "
                                         f"{text!r}")
    return tuple(int(p) for p in parts)


def class_weight(text):
    """``balanced`` or ``LABEL:WEIGHT,...`` (numeric labels, as in data files)."""
    t = text.strip()
    if t.lower() == "balanced":
        return "balanced"
    out = {}
    for part in t.split(","):
        label, sep, w = part.partition(":")
        try:
            lab, wt = float(label), float(w)
        except ValueError:
            lab = wt = None
        if not sep or lab is None or not (wt >= 0 and wt < float("inf")) or lab != lab:
            raise argparse.ArgumentTypeError(f"expected 'balanced' or LABEL:WEIGHT pairs such "
                                             f"as 1:5,0:1 (weights >= 0), got {text!r}")
        out[int(lab) if lab.is_integer() else lab] = wt
    return out


def threads(text):
    """A thread count as ``n_jobs``: N > 0, or negative (-1: all cores)."""
    v = _parse(text, int, "an integer")
    if v == 0:
        raise argparse.ArgumentTypeError("0 threads has no meaning (use N > 0, or -1 for all "
                                         "cores)")
    return v


def zero_based(text):
    """``auto``, or a boolean spelled true/false, yes/no, on/off, 1/0."""
    t = text.strip().lower()
    if t in ("auto",):
        return "auto"
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected auto, true or false, got {text!r}")


# --------------------------------------------------------------------------
# Options declared by several commands
# --------------------------------------------------------------------------

def add_zero_based(p, default, help=None):
    p.add_argument("--zero-based", type=zero_based, default=default,
                   metavar="{auto,true,false}", help=help)


def add_block_rows(p, default, help):
    p.add_argument("--block-rows", type=int_range(1), default=default, metavar="N", help=help)


def add_threads(p, help=None):
    p.add_argument("--threads", type=threads, default=None, metavar="N", help=help)


def add_quiet(p, help=None):
    p.add_argument("-q", "--quiet", action="store_true", help=help)
