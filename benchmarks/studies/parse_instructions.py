"""Instructions the text parsers execute on a slice of a data file (callgrind).

Wall-clock parse times on this shared 2-core machine vary by +-30% with other
work; the number of instructions the parse kernels retire does not.  This
counts them for the general parser (``cfm._parse.parse_chunk``) and the
scoring fast path (``cfm._fastparse.parse_plain``, on the 1 MB pieces it
accepts), one thread, under valgrind's callgrind: run it once per checkout
(PYTHONPATH) to compare two versions of the parsers.

Usage::

    PYTHONPATH=. python benchmarks/studies/parse_instructions.py FILE [--mb 12]

FILE: libsvm (one-based) or libffm (``.ffm``) text, e.g. the files
``bench_parse.py`` writes (``/tmp/cfm_bench/criteo_520mb.svm``).  Needs
valgrind; about a minute per file.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

# the task each kernel runs on cfm's worker pool (cfm._pool) per piece: the
# parse loop and what it calls ("fast_count": the fast path's line count)
KERNELS = {"general": "__pyx_f_3cfm_6_parse_parse_task",
           "fast": "__pyx_f_3cfm_10_fastparse_parse_task",
           "fast_count": "__pyx_f_3cfm_10_fastparse_count_task"}


def child(path):
    from cfm import _fastparse, _parse

    buf = np.frombuffer(open(path, "rb").read(), dtype=np.uint8)
    ffm = path.endswith(".ffm")
    r = _parse.parse_chunk(buf, _parse.FMT_LIBFFM if ffm else _parse.FMT_LIBSVM, True, True,
                           False, 2**63 - 2, -1, 1)
    assert r["error"] is None
    for s in range(0, len(buf), 1 << 20):
        piece = bytes(buf[s:s + (1 << 20)])
        a, z = piece.find(b"\n") + 1, piece.rfind(b"\n") + 1
        _fastparse.parse_plain(np.frombuffer(piece[a:z], np.uint8), ffm, not ffm, 2**31 - 1, 1, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--mb", type=int, default=12, help="slice of the file parsed (MB)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.file)
    if shutil.which("valgrind") is None or shutil.which("callgrind_annotate") is None:
        sys.exit("valgrind (callgrind) is needed")
    with tempfile.TemporaryDirectory() as tmp:
        data = open(args.file, "rb").read(args.mb << 20)
        data = data[:data.rfind(b"\n") + 1]
        sl = os.path.join(tmp, "slice" + (".ffm" if args.file.endswith(".ffm") else ".svm"))
        open(sl, "wb").write(data)
        out = os.path.join(tmp, "cg.out")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        counts = {}
        for name, fn in KERNELS.items():
            # only the instructions inside the kernel's task (and what it
            # calls): the parse loop, its inlined helpers, strtod, realloc
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                            f"--toggle-collect=*{fn}", os.path.realpath(sys.executable),
                            os.path.abspath(__file__), sl, "--child"],
                           env=env, check=True, capture_output=True)
            m = re.search(r"^(?:summary|totals): (\d+)", open(out).read(), re.M)
            counts[name] = int(m.group(1)) if m else float("nan")
    import cfm

    print(f"{args.file} (first {len(data) / 1e6:.1f} MB), cfm from "
          f"{os.path.dirname(os.path.dirname(os.path.abspath(cfm.__file__)))}")
    for name, n in counts.items():
        print(f"  {name:8s} parser: {n:,} instructions")


if __name__ == "__main__":
    main()
