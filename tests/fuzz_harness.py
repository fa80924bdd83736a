"""Fuzzing cfm's readers (issue 11): seeded mutations of model files, data
files (libsvm / libffm / libFM text, gzip, .cfmdata caches) and xLearn text
models, run through the Python API and the command line.

Used by tests/test_fuzz.py; also a script::

    python tests/fuzz_harness.py run CASES.json MEM_BYTES   # the runner (below)

Layout: the parent (pytest) makes a few small seed files, derives mutated
files from them with a seeded ``random.Random`` (deterministic: the same
seed and count give the same files), writes them to a folder and hands the
cases to runner subprocesses.  A runner limits its address space
(``RLIMIT_AS``: baseline + MEM_BYTES, so a blow-up is a MemoryError, not a
dead machine), arms a per-case alarm, runs each case and prints one JSON
line per case (``start`` before, the outcome after, flushed), so that the
parent knows which case a crash or a hang happened in and can restart the
runner after it.

Allowed outcomes of a case: success with sane output, or the documented
exception (ModelFileError for model files and xLearn models, DataFormatError
for data files) whose message names the file; the command line must exit
with status 0 or 1 and print one line without "internal error".  Anything
else -- another exception type (even a ValueError that is not the
documented subclass), a signal, a hang, a MemoryError -- is a failure.
"""
import contextlib
import gzip
import io
import json
import os
import random
import struct
import sys
import time
import zlib

# --------------------------------------------------------------------------
# Extreme JSON values (raw JSON text: some are not valid Python JSON output)
# --------------------------------------------------------------------------

EXTREMES = [
    "null", "true", "false", "0", "-1", "1", "0.5", "-0.0", "2147483648", "4294967296",
    "9223372036854775807", "9223372036854775808", "18446744073709551616",
    "-9223372036854775809", "1" + "0" * 400, "-" + "9" * 1000, "1e400", "-1e400", "1e308",
    "NaN", "Infinity", "-Infinity", '""', '"x"', '"' + "x" * 100_000 + '"', '"\\u0000"',
    '"<U536870911"', '"<U200000000"', '"|O"', '"object"', '"<f8"', '"<c16"', '"V8"', '"S0"',
    '">f4"', '"<M8[ns]"', "[]", "[[]]", "{}", '{"a": 1}', "[4294967296, 4294967296]",
    "[-1]", "[0]", "[1, 1, 1, 1, 1, 1, 1, 1, 1]", "[" + ",".join(["0"] * 100_000) + "]",
    "[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000,
    "[" * 500 + "]" * 500, '["a", "a"]', "[1, 1]", "[null, null]", '[1, "a"]', "[true, false]",
    "[1e400, 1]", "[0.5, 1.5]", "[2, 18446744073709551616]",
]
DTYPES = ['"<U536870911"', '"<U200000000"', '"<U0"', '"|O"', '"O"', '"<f16"', '"<c16"',
          '"V8"', '"S0"', '">f4"', '"<M8[ns]"', '"bool"', '"<i1"', '"<u8"', '"<f2"', '"<i4"',
          '"<f4"', '"<f8"', '"<i8"', '"int"', '"float64"', '""', "null", "1"]
SHAPES = ["[4294967296, 4294967296]", "[-1]", "[0]", "[]", "[1, 1, 1, 1, 1, 1, 1, 1, 1]",
          "[4611686018427387904, 0]", "[0, 4611686018427387904]", "[1e400]", "[1.5]",
          "[9223372036854775807]", '["1"]', "[null]", "[2, 2]", "[1000000]", "1"]
OFFSETS = ["-64", "-1", "0", "1", "63", "64", "9223372036854775807", "18446744073709551616",
           "1e400", "1.5", '"0"', "null", "[0]", "1" + "0" * 30]


def _raw_json(obj, path, raw):
    """JSON text of ``obj`` with the value at ``path`` (a tuple of keys /
    indices; an absent last key is added) replaced by the raw JSON text
    ``raw`` (None: the key is deleted)."""
    obj = json.loads(json.dumps(obj))
    mark = "\x00RAW\x00"
    parent = obj
    for p in path[:-1]:
        parent = parent[p]
    if raw is None:
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
        else:
            del parent[path[-1]]
        return json.dumps(obj, sort_keys=True)
    parent[path[-1]] = mark
    text = json.dumps(obj, sort_keys=True)
    return text.replace(json.dumps(mark), raw, 1)


# --------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------

def make_seeds(folder):
    """Small seed files in ``folder``; returns {name: (kind, path)} and the
    auxiliary files {"svm": data for FM models, "ffm": data for FFM models}."""
    import numpy as np

    import cfm

    rng = np.random.default_rng(0)
    X, y = cfm.make_fm_classification(60, n_features=24, random_state=0)
    Xr, yr = cfm.make_fm_regression(60, n_features=24, random_state=0)
    fields = np.arange(24) % 3
    seeds = {}

    def p(name):
        return os.path.join(folder, name)

    fm = cfm.FMClassifier(n_factors=4, n_epochs=2, n_jobs=1, random_state=0).fit(X, y)
    fm.save(p("fm.cfm"))
    seeds["model_fm"] = ("model", p("fm.cfm"))
    ffm = cfm.FFMClassifier(n_factors=4, n_epochs=2, n_jobs=1, random_state=0).fit(
        X, y, fields=fields)
    ffm.save(p("ffm.cfm"))
    seeds["model_ffm"] = ("model", p("ffm.cfm"))
    deep = cfm.DeepFMClassifier(n_factors=3, hidden_layer_sizes=(5, 4), batch_size=16,
                                n_epochs=2, n_jobs=1, random_state=0).fit(X, y, fields=fields)
    deep.save(p("deepfm.cfm"))
    seeds["model_deepfm"] = ("model", p("deepfm.cfm"))
    mc = cfm.FMRegressor(n_factors=3, solver="mcmc", n_epochs=5, n_jobs=1,
                         random_state=0).fit(Xr, yr)
    mc.save(p("mcmc.cfm"))
    seeds["model_mcmc"] = ("model", p("mcmc.cfm"))
    labels = np.where(y > 0, "spam", "ham")
    st = cfm.FMClassifier(n_factors=2, n_epochs=2, n_jobs=1, random_state=0).fit(X, labels)
    st.save(p("str.cfm"))
    seeds["model_str"] = ("model", p("str.cfm"))

    cfm.dump_libsvm(X[:30], y[:30], p("a.svm"), zero_based=False)
    seeds["libsvm"] = ("libsvm", p("a.svm"))
    cfm.dump_libffm(X[:30], y[:30], fields, p("a.ffm"))
    seeds["libffm"] = ("libffm", p("a.ffm"))
    cfm.dump_libsvm(Xr[:30], yr[:30], p("a.libfm"), zero_based=True)
    seeds["libfm"] = ("libfm", p("a.libfm"))
    with open(p("a.svm"), "rb") as f:
        raw = f.read()
    with open(p("a.svm.gz"), "wb") as f:
        f.write(gzip.compress(raw, mtime=0))
    seeds["gzip"] = ("gzip", p("a.svm.gz"))
    cfm.convert_to_cache(p("a.svm"), p("a.cfmdata"))
    seeds["cache_svm"] = ("cache", p("a.cfmdata"))
    cfm.convert_to_cache(p("a.ffm"), p("f.cfmdata"))
    seeds["cache_ffm"] = ("cache", p("f.cfmdata"))

    # xLearn text models: FM (k=3) and FFM (3 fields, k=2) over 24 features
    def xl(lines):
        return "".join(f"{a}: {b}\n" for a, b in lines)

    w = [f"{v:.6f}" for v in rng.normal(0, 0.1, 24)]
    fm_lines = [("bias", "0.1")] + [(f"i_{j}", w[j]) for j in range(24)] + \
        [(f"v_{j}", " ".join(f"{v:.6f}" for v in rng.normal(0, 0.1, 3))) for j in range(24)]
    with open(p("xfm.txt"), "w") as f:
        f.write(xl(fm_lines))
    seeds["xlearn_fm"] = ("xlearn", p("xfm.txt"))
    ffm_lines = [("bias", "0.1")] + [(f"i_{j}", w[j]) for j in range(24)] + \
        [(f"v_{j}_{g}", " ".join(f"{v:.6f}" for v in rng.normal(0, 0.1, 2)))
         for j in range(24) for g in range(3)]
    with open(p("xffm.txt"), "w") as f:
        f.write(xl(ffm_lines))
    seeds["xlearn_ffm"] = ("xlearn", p("xffm.txt"))
    aux = {"svm": p("a.svm"), "ffm": p("a.ffm")}
    return seeds, aux


# --------------------------------------------------------------------------
# Mutations
# --------------------------------------------------------------------------

def _fix_model_crc(raw):
    return raw[:-4] + struct.pack("<I", zlib.crc32(raw[:-4]))


def _model_header(raw):
    hlen = struct.unpack_from("<I", raw, 12)[0]
    return json.loads(raw[16:16 + hlen]), hlen


def _with_model_header(raw, text):
    """``raw`` with its JSON header replaced by ``text`` (arrays kept at their
    offsets when it fits), checksum recomputed."""
    hlen = struct.unpack_from("<I", raw, 12)[0]
    text = text.encode("utf-8", "surrogatepass")
    if len(text) <= hlen:
        text += b" " * (hlen - len(text))
    return _fix_model_crc(raw[:12] + struct.pack("<I", len(text)) + text + raw[16 + hlen:])


def _header_paths(h, rng):
    """Paths into a header worth replacing (top-level keys, array entries,
    labels, parameters) plus a few absent keys."""
    paths = [(k,) for k in h] + [("n_fields",), ("classes",), ("feature_names",), ("mcmc",),
                                 ("rng_state",), ("xlearn_fm_norm",), ("input_zero_based",)]
    for i, e in enumerate(h.get("arrays", [])):
        paths += [("arrays", i, k) for k in e]
    if isinstance(h.get("classes"), dict):
        paths += [("classes", "dtype"), ("classes", "values"), ("classes", "values", 0)]
    for k in h.get("params", {}):
        paths.append(("params", k))
    if isinstance(h.get("rng_state"), dict):
        paths += [("rng_state", "state", "state"), ("rng_state", "bit_generator")]
    if isinstance(h.get("mcmc"), dict):
        paths += [("mcmc", k) for k in h["mcmc"]]
    if isinstance(h.get("history"), list) and h["history"]:
        paths.append(("history", 0))
    return paths


def _special_header(h, rng):
    """Structured corruptions: overlapping / negative offsets, huge shapes,
    duplicate labels, a table entry listed twice."""
    arrays = h.get("arrays", [])
    choice = rng.randrange(7)
    if choice == 0 and len(arrays) > 1:  # overlapping offsets
        i, j = rng.sample(range(len(arrays)), 2)
        return _raw_json(h, ("arrays", i, "offset"), str(arrays[j]["offset"] + rng.choice([0, 8])))
    if choice == 1 and arrays:  # a huge shape with nbytes to match
        i = rng.randrange(len(arrays))
        h2 = json.loads(json.dumps(h))
        h2["arrays"][i]["shape"] = [2**32, 2**32]
        h2["arrays"][i]["nbytes"] = 2**64 * 4
        return json.dumps(h2, sort_keys=True)
    if choice == 2 and isinstance(h.get("classes"), dict):  # duplicate labels
        v = h["classes"]["values"]
        return _raw_json(h, ("classes", "values"), json.dumps([v[0], v[0]]))
    if choice == 3 and arrays:  # an entry listed twice
        h2 = json.loads(json.dumps(h))
        h2["arrays"].append(dict(h2["arrays"][rng.randrange(len(arrays))]))
        return json.dumps(h2, sort_keys=True)
    if choice == 4 and arrays:  # dtype change keeping nbytes (e.g. f4 -> i4)
        i = rng.randrange(len(arrays))
        size = {"<f4": 4, "<i4": 4, "<f8": 8, "<i8": 8, "<u8": 8, "<f2": 2}
        old = arrays[i]["dtype"]
        same = [d for d in size if size[d] == size.get(old) and d != old]
        if same:
            return _raw_json(h, ("arrays", i, "dtype"), json.dumps(rng.choice(same)))
    if choice == 5 and arrays:  # shape transposed / reshaped with nbytes kept
        i = rng.randrange(len(arrays))
        shape = arrays[i]["shape"]
        n = 1
        for s in shape:
            n *= s
        alt = rng.choice([[n], [1, n], [n, 1], shape[::-1], [n, 1, 1]])
        return _raw_json(h, ("arrays", i, "shape"), json.dumps(alt))
    if choice == 6:  # a number field shifted by one
        keys = [k for k in ("n_features", "n_factors", "n_fields") if k in h]
        if keys:
            k = rng.choice(keys)
            return _raw_json(h, (k,), str(h[k] + rng.choice([-1, 1, 2**31])))
    return _raw_json(h, ("kind",), '"ffm"' if h.get("kind") == "fm" else '"fm"')


def _decode_model(raw):
    """(header, [(entry, bytes)]) of a model file."""
    h, hlen = _model_header(raw)
    start = 16 + hlen
    arrays = [(dict(e), raw[start + e["offset"]:start + e["offset"] + e["nbytes"]])
              for e in h["arrays"]]
    return h, arrays


def _build_model(h, arrays):
    """A model file laid out as cfm writes one (64-byte aligned arrays, valid
    checksum) from a header and [(entry, bytes)] (offsets recomputed)."""
    entries, blobs, off = [], [], 0
    for e, b in arrays:
        e = dict(e, offset=off)
        e.setdefault("nbytes", len(b))
        entries.append(e)
        blobs.append(b + b"\0" * (-(-len(b) // 64) * 64 - len(b)))
        off += len(blobs[-1])
    h = dict(h, arrays=entries)
    text = json.dumps(h, sort_keys=True).encode()
    text += b" " * (-(-(16 + len(text)) // 64) * 64 - 16 - len(text))
    body = struct.pack("<8sHHI", b"\x89CFM\r\n\x1a\n", 1, 0, len(text)) + text + b"".join(blobs)
    return body + struct.pack("<I", zlib.crc32(body))


_SPECIAL_F = [float("nan"), float("inf"), -float("inf"), 3.0e38, -3.0e38, 1e-45, -0.0, 65504.0,
              1e300]
_SPECIAL_I = [-1, -2**31, 2**31 - 1, 3, 24, 25, 2**16, -7]


def _semantic(raw, rng):
    """Structured changes that keep the file valid (layout, sizes, checksum)
    so that they reach the model's import and the kernels: resized tables,
    special values, out-of-range field ids, changed dtypes, counts that
    disagree between the header and the tables."""
    import numpy as np

    h, arrays = _decode_model(raw)
    done = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        op = rng.randrange(9)
        if not arrays and op in (1, 2, 3, 7):
            continue
        if op == 0:  # resize the feature dimension consistently
            n = h["n_features"]
            n2 = rng.choice([1, 2, n - 1, n + 1, 2 * n, 1000])
            h["n_features"] = n2
            out = []
            for e, b in arrays:
                if e["shape"] and e["shape"][0] == n:
                    row = len(b) // n if n else 0
                    b2 = (b * (n2 // n + 1))[:row * n2]
                    if e["name"] == "fields":
                        b2 = np.array([rng.randrange(max(1, h.get("n_fields", 1))) for _ in range(n2)],
                                      dtype="<i4").tobytes()
                    e = dict(e, shape=[n2] + e["shape"][1:], nbytes=len(b2))
                    b = b2
                elif len(e["shape"]) == 3 and e["shape"][1] == n:  # mcmc samples
                    per = len(b) // (e["shape"][0] * n)
                    rows = [b[i * n * per:(i + 1) * n * per] for i in range(e["shape"][0])]
                    b = b"".join((r * (n2 // n + 1))[:per * n2] for r in rows)
                    e = dict(e, shape=[e["shape"][0], n2, e["shape"][2]], nbytes=len(b))
                out.append((e, b))
            arrays = out
            done.append(f"n_features={n2}")
        elif op == 1:  # special values in a table
            i = rng.randrange(len(arrays))
            e, b = arrays[i]
            if not b:
                continue
            a = np.frombuffer(b, dtype=e["dtype"]).copy()
            for _ in range(rng.choice([1, 3, len(a)])):
                j = rng.randrange(len(a))
                if a.dtype.kind == "f":
                    with np.errstate(over="ignore"):
                        a[j] = rng.choice(_SPECIAL_F)
                else:
                    a[j:j + 1] = np.array([rng.choice(_SPECIAL_I)]).astype(a.dtype)
            arrays[i] = (e, a.tobytes())
            done.append(f"values {e['name']}")
        elif op == 2:  # a table's dtype changed, values converted
            i = rng.randrange(len(arrays))
            e, b = arrays[i]
            dt = rng.choice(["<f2", "<f4", "<f8", "<i4", "<i8", "<u8"])
            with np.errstate(all="ignore"):
                a = np.frombuffer(b, dtype=e["dtype"]).astype(dt)
            arrays[i] = (dict(e, dtype=dt, nbytes=a.nbytes), a.tobytes())
            done.append(f"dtype {e['name']}={dt}")
        elif op == 3:  # a table dropped, renamed or duplicated
            i = rng.randrange(len(arrays))
            e, b = arrays[i]
            how = rng.randrange(3)
            if how == 0:
                del arrays[i]
            elif how == 1:
                arrays[i] = (dict(e, name=rng.choice(["w", "V", "lin", "fields", "opt_state",
                                                       "mcmc_samples", "x"])), b)
            else:
                arrays.append((dict(e, name=e["name"] + "_"), b))
            done.append(f"table {e['name']} op{how}")
        elif op == 4:  # counts in the header changed alone
            k = rng.choice(["n_factors", "n_fields", "n_features"]
                           + (["hidden", "deepfm_format"] if "hidden" in h else []))
            if k == "hidden":  # DeepFM's layer sizes
                h[k] = rng.choice([[], [1], [5], [5, 4, 3], [4, 5], [0], [-1, 4], [2**16],
                                   [2**31, 1], [5.0, 4], "5,4", None, [1] * 100])
            else:
                h[k] = rng.choice([0, 1, 2, 3, 5, 8, 64, 4096, 2**31 - 1])
            done.append(f"{k}={h[k]}")
        elif op == 5:  # another estimator / kind / task / dtype / solver
            k = rng.choice(["estimator", "kind", "task", "dtype", "solver", "normalize"])
            h[k] = rng.choice({"estimator": ["FMClassifier", "FMRegressor", "FFMClassifier",
                                             "FFMRegressor", "XLearnFMClassifier",
                                             "XLearnFMRegressor", "DeepFMClassifier",
                                             "DeepFMRegressor"],
                               "kind": ["fm", "ffm", "deepfm"],
                               "task": ["binary", "regression"],
                               "dtype": ["float16", "float32", "float64"],
                               "solver": ["adagrad", "sgd", "ftrl", "als", "mcmc", "x", "adam"],
                               "normalize": [True, False]}[k])
            if k == "task" and h[k] == "binary" and "classes" not in h:
                h["classes"] = {"dtype": "<i8", "values": [0, 1]}
            if k == "task" and h[k] == "regression":
                h.pop("classes", None)
            done.append(f"{k}={h[k]}")
        elif op == 6:  # labels of another kind
            h["classes"] = rng.choice([{"dtype": "<U3", "values": ["a", "b"]},
                                       {"dtype": "<f8", "values": [0.5, 1e300]},
                                       {"dtype": "|b1", "values": [False, True]},
                                       {"dtype": "object", "values": [1, 2.5]},
                                       {"dtype": "<i8", "values": [-2**63, 2**63 - 1]},
                                       {"dtype": "<u1", "values": [0, 255]}])
            done.append("classes")
        elif op == 7:  # a table reshaped with its size kept
            i = rng.randrange(len(arrays))
            e, b = arrays[i]
            n = 1
            for d in e["shape"]:
                n *= d
            shape = rng.choice([[n], [1, n], [n, 1], e["shape"][::-1], [n, 1, 1], [0, n]])
            if 0 in shape:
                b = b""
            arrays[i] = (dict(e, shape=shape, nbytes=len(b)), b)
            done.append(f"shape {e['name']}={shape}")
        else:  # mcmc state changed
            h["mcmc"] = rng.choice([{"clip": [1e308, -1e308]}, {"clip": [0, 0], "alpha": -1},
                                    {"clip": [-1, 1], "alpha": 0}, {"clip": [float("nan"), 1]}])
            done.append(f"mcmc={h['mcmc']}")
    return "semantic " + "; ".join(done), _build_model(h, arrays)


def mutate_model(raw, rng):
    """(description, bytes) of one mutation of a model file."""
    n = len(raw)
    hlen = struct.unpack_from("<I", raw, 12)[0]
    r = rng.random()
    if r < 0.15:
        cut = rng.choice([rng.randrange(n), rng.randrange(min(n, 16 + hlen + 64)),
                          n - rng.randrange(1, 9), rng.randrange(20)])
        return f"truncate@{cut}", raw[:cut]
    if r < 0.28:
        i = rng.randrange(n)
        b = bytearray(raw)
        b[i] ^= rng.randrange(1, 256)
        return f"flip@{i}", bytes(b)
    if r < 0.50:  # flips with the checksum recomputed: the file is "valid"
        b = bytearray(raw)
        where = rng.choice(["prefix", "header", "data", "any"])
        span = {"prefix": (0, 16), "header": (16, 16 + hlen), "data": (16 + hlen, n - 4),
                "any": (0, n - 4)}[where]
        k = rng.choice([1, 1, 1, 2, 8])
        idx = []
        for _ in range(k):
            i = rng.randrange(*span) if span[1] > span[0] else 0
            b[i] ^= rng.choice([1, 0x80, rng.randrange(1, 256)])
            idx.append(i)
        return f"flip+crc{where}@{idx}", _fix_model_crc(bytes(b))
    if r < 0.62:
        return _semantic(raw, rng)
    h, _ = _model_header(raw)
    if r < 0.85:  # a header field replaced by an extreme value, or deleted
        path = rng.choice(_header_paths(h, rng))
        last = path[-1]
        if last == "dtype":
            val = rng.choice(DTYPES + EXTREMES[:10])
        elif last == "shape":
            val = rng.choice(SHAPES)
        elif last in ("offset", "nbytes"):
            val = rng.choice(OFFSETS + EXTREMES[:12])
        else:
            val = rng.choice(EXTREMES + [None])
        try:
            text = _raw_json(h, path, val)
        except (KeyError, IndexError, TypeError):
            text = _raw_json(h, (path[0],), val or "null")
        return f"header{list(path)}={str(val)[:30]}", _with_model_header(raw, text)
    if r < 0.95:
        return "header-special", _with_model_header(raw, _special_header(h, rng))
    # raw header text damage with a valid checksum (bad JSON, bad UTF-8, nesting)
    text = raw[16:16 + hlen]
    i = rng.randrange(max(1, len(text)))
    junk = rng.choice([b"\xff\xfe", b"{", b"}", b"\x00", b'"', b"[" * 100_000, b"1e400"])
    return f"header-text@{i}", _fix_model_crc(raw[:16] + text[:i] + junk + text[i + 1:]
                                              + raw[16 + hlen:])


def _fix_cache(raw, hbytes):
    """A cache with its header replaced (header CRC recomputed; the length
    field set to the new header's, data kept where it was when it fits)."""
    pre = struct.Struct("<8sHHII")
    magic, major, minor, hlen, _ = pre.unpack_from(raw)
    if len(hbytes) <= hlen:
        hbytes += b" " * (hlen - len(hbytes))
    return pre.pack(magic, major, minor, len(hbytes), zlib.crc32(hbytes)) + hbytes + \
        raw[pre.size + hlen:]


def mutate_cache(raw, rng):
    pre = struct.Struct("<8sHHII")
    hlen = pre.unpack_from(raw)[3]
    h = json.loads(raw[pre.size:pre.size + hlen])
    n = len(raw)
    r = rng.random()
    if r < 0.15:
        cut = rng.randrange(n)
        return f"truncate@{cut}", raw[:cut]
    if r < 0.3:
        i = rng.randrange(n)
        b = bytearray(raw)
        b[i] ^= rng.randrange(1, 256)
        return f"flip@{i}", bytes(b)
    if r < 0.55:  # an array's bytes changed with its CRC recomputed: a "valid" cache
        a = rng.choice(h["arrays"])
        if a["nbytes"] == 0:
            return "noop", raw
        b = bytearray(raw)
        idx = []
        for _ in range(rng.choice([1, 1, 4])):
            i = a["offset"] + rng.randrange(a["nbytes"])
            b[i] = rng.choice([0xFF, 0x7F, 0x80, 0, rng.randrange(256)])
            idx.append(i)
        a2 = dict(a, crc32=zlib.crc32(bytes(b[a["offset"]:a["offset"] + a["nbytes"]])))
        h2 = dict(h, arrays=[a2 if e["name"] == a["name"] else e for e in h["arrays"]])
        return f"array+crc {a['name']}@{idx}", _fix_cache(bytes(b), json.dumps(
            h2, sort_keys=True).encode())
    paths = [(k,) for k in h] + [("arrays", i, k) for i, e in enumerate(h["arrays"]) for k in e]
    path = rng.choice(paths)
    last = path[-1]
    if last == "dtype":
        val = rng.choice(DTYPES)
    elif last == "shape":
        val = rng.choice(SHAPES)
    elif last in ("offset", "nbytes"):
        val = rng.choice(OFFSETS + EXTREMES[:12])
    elif last in ("n_rows", "n_features", "nnz") and rng.random() < 0.5:
        val = str(h[last] + rng.choice([-1, 1, 64, 2**31, 2**40]))
    else:
        val = rng.choice(EXTREMES + [None])
    text = _raw_json(h, path, val)
    return f"header{list(path)}={str(val)[:30]}", _fix_cache(raw, text.encode("utf-8"))


TOKENS = [b"4294967296", b"2147483648", b"1099511627776", b"99999999999999999999999",
          b"-1", b"nan", b"NaN", b"inf", b"-inf", b"1e400", b"", b":", b"::", b":::", b"0",
          b"1:nan", b"1:inf", b"4294967299:1:1", b"2147483648:1:1", b"1:2147483648:1",
          b"1099511627776:1", b"0:0", b"-5:1", b"1:1e400", b"\x00", b"\xff\xfe", b"1:",
          b":1", b"1:1:1:1", b"+1", b"0x10", b"1_000", b" " * 1000]


def mutate_text(raw, rng):
    """(description, bytes) of one mutation of a text data file."""
    n = len(raw)
    r = rng.random()
    b = bytearray(raw)
    if r < 0.2:  # random byte flips / insertions / deletions
        ops = []
        for _ in range(rng.choice([1, 1, 2, 5])):
            i = rng.randrange(max(1, len(b)))
            op = rng.randrange(3)
            if op == 0 and b:
                b[i] ^= rng.randrange(1, 256)
            elif op == 1:
                b[i:i] = bytes([rng.randrange(256)])
            elif b:
                del b[i]
            ops.append((op, i))
        return f"bytes{ops}", bytes(b)
    if r < 0.6:  # a token replaced by an extreme one
        toks = [i for i in range(n) if i == 0 or raw[i - 1:i] in b" \n:"]
        i = rng.choice(toks)
        j = i
        while j < n and raw[j:j + 1] not in b" \n:":
            j += 1
        t = rng.choice(TOKENS)
        return f"token@{i}={t[:20]!r}", raw[:i] + t + raw[j:]
    if r < 0.7:  # truncation, missing final newline
        cut = rng.choice([n - 1, rng.randrange(n)])
        return f"truncate@{cut}", raw[:cut]
    if r < 0.8:  # binary junk inserted
        i = rng.randrange(n)
        junk = bytes(rng.randrange(256) for _ in range(rng.choice([1, 16, 300])))
        return f"junk@{i}", raw[:i] + junk + raw[i:]
    if r < 0.9:  # structural: CRLF, a very long line, an empty line, NULs
        what = rng.randrange(5)
        if what == 0:
            return "crlf", raw.replace(b"\n", b"\r\n")
        if what == 1:
            line = b"1 " + b" ".join(b"%d:1" % (j + 1) for j in range(20_000)) + b"\n"
            return "long-line", raw + line
        if what == 2:
            return "blank-lines", raw.replace(b"\n", b"\n\n", 3)
        if what == 3:
            return "nul-line", raw + b"\x00" * 100 + b"\n"
        return "only-labels", b"1\n0\n1\n"
    # huge ids: a new line with an extreme id / field
    big = rng.choice([2**31 - 1, 2**31, 2**32, 2**40, 2**62, 2**63, 2**64, 10**30])
    line = rng.choice([b"1 %d:1\n" % big, b"1 0:%d:1\n" % big, b"1 %d:0:1\n" % big,
                       b"0 1:1 %d:1\n" % big])
    return f"huge-id {big}", raw + line


def mutate_gzip(raw_text, rng):
    gz = gzip.compress(raw_text, mtime=0)
    n = len(gz)
    r = rng.random()
    if r < 0.3:
        cut = rng.choice([rng.randrange(n), n - rng.randrange(1, 9), rng.randrange(12)])
        return f"truncate@{cut}", gz[:cut]
    if r < 0.55:
        i = rng.randrange(n)
        b = bytearray(gz)
        b[i] ^= rng.randrange(1, 256)
        return f"flip@{i}", bytes(b)
    if r < 0.7:
        junk = rng.choice([b"\x00", b"garbage", b"\x1f\x8b", b"\x1f\x8b\x08\x00" + b"\x00" * 6,
                           bytes(rng.randrange(256) for _ in range(64))])
        return f"trailing{junk[:8]!r}", gz + junk
    if r < 0.8:
        return "two-members", gz + gzip.compress(raw_text[: len(raw_text) // 2], mtime=0)
    desc, text = mutate_text(raw_text, rng)
    return "gz-of-" + desc, gzip.compress(text, mtime=0)


def mutate_xlearn(raw, rng):
    r = rng.random()
    lines = raw.split(b"\n")
    if r < 0.35:
        big = rng.choice([b"100000000", b"99999999999999999999", b"4294967296", b"1000000",
                          b"-1", b"007", b"", b"1e3"])
        kind = rng.randrange(4)
        if kind == 0:
            line = b"i_" + big + b": 1"
        elif kind == 1:
            line = b"v_0_" + big + b": 0.1 0.2"
        elif kind == 2:
            line = b"v_" + big + b": 0.1 0.2 0.3"
        else:
            line = b"v_" + big + b"_0: 0.1 0.2"
        i = rng.randrange(len(lines))
        return f"line@{i}={line[:30]!r}", b"\n".join(lines[:i] + [line] + lines[i:])
    if r < 0.45:  # huge k
        k = rng.choice([5000, 100_000])
        i = rng.randrange(1, len(lines))
        key = lines[i].split(b":")[0] if b":" in lines[i] else b"v_0"
        return f"k={k}@{i}", b"\n".join(lines[:i] + [key + b": " + b"0.1 " * k]
                                        + lines[i + 1:])
    if r < 0.55:
        return "bias-only+" , rng.choice([b"bias: 0\ni_100000000: 1\n", b"bias: 0\n",
                                          b"bias: 0\nv_0_100000000: 1\n", b"",
                                          b"bias: 0\ni_0: 1\nv_0: " + b"1 " * 5000 + b"\n"])
    return mutate_text(raw, rng)


def generate_cases(seeds, aux, folder, n_cases, seed=0, cli_every=8):
    """Write ``n_cases`` mutated files to ``folder``; returns the case list.
    Every ``cli_every``-th case also goes through the command line (in the
    runner, as ``cfm.cli.main``)."""
    rng = random.Random(seed)
    weights = {"model_fm": 6, "model_ffm": 5, "model_mcmc": 3, "model_str": 3,
               "model_deepfm": 4, "libsvm": 4,
               "libffm": 3, "libfm": 2, "gzip": 3, "cache_svm": 3, "cache_ffm": 2,
               "xlearn_fm": 2, "xlearn_ffm": 2}
    names = sorted(weights)
    raws = {}
    for name in names:
        with open(seeds[name][1], "rb") as f:
            raws[name] = f.read()
    with open(aux["svm"], "rb") as f:
        svm_text = f.read()
    cases = []
    for i in range(n_cases):
        name = rng.choices(names, [weights[n] for n in names])[0]
        kind, seed_path = seeds[name]
        raw = raws[name]
        if kind == "model":
            desc, data = mutate_model(raw, rng)
        elif kind == "cache":
            desc, data = mutate_cache(raw, rng)
        elif kind == "gzip":
            desc, data = mutate_gzip(svm_text, rng)
        elif kind == "xlearn":
            desc, data = mutate_xlearn(raw, rng)
        else:
            desc, data = mutate_text(raw, rng)
        ext = os.path.splitext(seed_path)[1]
        path = os.path.join(folder, f"case{i:06d}_{name}{ext}")
        with open(path, "wb") as f:
            f.write(data)
        cases.append({"id": i, "seed": name, "kind": kind, "desc": desc, "path": path,
                      "cli": i % cli_every == 0, "scoring_only": rng.random() < 0.5,
                      "aux": aux, "good_model": seeds["model_ffm" if "ffm" in name
                                                      else "model_fm"][1]})
    return cases


# --------------------------------------------------------------------------
# The runner (a subprocess)
# --------------------------------------------------------------------------

class Hang(BaseException):
    pass


def _sane_data(X, y, fields=None):
    import numpy as np

    n, m = X.shape
    assert len(y) == n, f"{len(y)} labels for {n} rows"
    assert X.indptr[0] == 0 and X.indptr[-1] == X.nnz and np.all(np.diff(X.indptr) >= 0), \
        "bad row offsets"
    if X.nnz:
        assert X.indices.min() >= 0 and X.indices.max() < m, "column index out of range"
    if fields is not None:
        assert len(fields) == m, "fields do not match the columns"


def _sane_model(model, rng):
    import numpy as np
    import scipy.sparse as sp

    m = model.n_features_in_
    cols = rng.choice(min(m, 30), size=min(m, 5), replace=False)
    X = sp.csr_matrix((np.ones(len(cols) * 3), (np.repeat([0, 1, 2], len(cols)),
                                                np.tile(cols, 3))), shape=(3, m))
    out = model.predict(X)
    assert len(out) == 3, f"{len(out)} predictions for 3 rows"
    if hasattr(model, "predict_proba"):
        p = model.predict_proba(X)
        assert p.shape == (3, 2), f"predict_proba shape {p.shape}"
        assert set(out) <= set(model.classes_.tolist()), "predictions outside classes_"


def _api(case, rng):
    """Run the Python API on a case; returns a short success note."""
    import numpy as np

    import cfm

    path, kind = case["path"], case["kind"]
    if kind == "model":
        model = cfm.load(path, scoring_only=case["scoring_only"])
        _sane_model(model, rng)
        return "loaded"
    if kind in ("libsvm", "libfm", "gzip"):
        loader = cfm.load_libfm if kind == "libfm" else cfm.load_libsvm
        X, y = loader(path, n_jobs=1 + case["id"] % 2)
        _sane_data(X, y)
        if case["id"] % 4 == 1:
            info = cfm.scan_file(path)
            assert info is not None
        if case["id"] % 4 == 3:
            dst = path + ".conv.cfmdata"
            cfm.convert_to_cache(path, dst)
            X2, y2, _ = cfm.load_cache(dst)
            same = (X2.shape == X.shape and np.array_equal(X2.indptr, X.indptr)
                    and np.array_equal(X2.indices, X.indices)
                    and np.array_equal(X2.data, X.data, equal_nan=True)
                    and np.array_equal(y2, y, equal_nan=True))
            assert same, "cache differs from the text"
            os.remove(dst)
        return f"parsed {X.shape}"
    if kind == "libffm":
        X, y, fields = cfm.load_libffm(path, n_jobs=1 + case["id"] % 2)
        _sane_data(X, y, fields)
        return f"parsed {X.shape}"
    if kind == "cache":
        X, y, fields = cfm.load_cache(path)
        _sane_data(X, y, fields)
        rows = 0
        for block in cfm.iter_blocks(path, block_rows=7):
            rows += block[0].shape[0]
        assert rows == X.shape[0], f"iter_blocks gave {rows} rows of {X.shape[0]}"
        return f"loaded {X.shape}"
    if kind == "xlearn":
        ffm = "xffm" in case["seed"] or "ffm" in case["seed"]
        model = cfm.load_xlearn(path, fields=case["aux"]["ffm"] if ffm else None)
        _sane_model(model, rng)
        return "loaded"
    raise AssertionError(kind)


_DOC = {"model": "ModelFileError", "xlearn": "ModelFileError", "cache": "DataFormatError",
        "libsvm": "DataFormatError", "libfm": "DataFormatError", "libffm": "DataFormatError",
        "gzip": "DataFormatError"}


def _check_error(case, exc):
    """None when ``exc`` is the documented outcome for the case, else why not."""
    import cfm

    want = cfm.ModelFileError if _DOC[case["kind"]] == "ModelFileError" else cfm.DataFormatError
    if not isinstance(exc, want):
        return f"{type(exc).__name__} (expected {want.__name__}): {str(exc)[:300]}"
    if os.path.basename(case["path"]) not in str(exc):
        return f"message does not name the file: {str(exc)[:300]}"
    return None


_LAST_CLI = [None]  # the command the last _cli call ran


def _cli(case, tmp):
    """The case through the command line (``cfm.cli.main`` in this process);
    None when the exit status and message are the documented ones."""
    from cfm import cli

    path, kind = case["path"], case["kind"]
    out = os.path.join(tmp, "cli-out")
    if kind == "model":
        argv = (["info", path] + (["--json"] if case["id"] % 2 else []) if case["id"] % 3 == 0
                else ["predict", path, case["aux"]["ffm" if "ffm" in case["seed"] else "svm"],
                      "-o", out, "-q", "--threads", "1", "--eval"])
    elif kind == "cache" and case["id"] % 3 == 0:
        argv = ["info", path]
    elif kind == "xlearn":
        argv = ["predict", path, case["aux"]["svm"], "-o", out, "-q", "--threads", "1"]
        if "ffm" in case["seed"]:
            argv += ["--xlearn-fields", case["aux"]["ffm"]]
    elif case["id"] % 2 == 0:
        argv = ["train", path, "-o", out, "-e", "1", "-k", "2", "-q", "--threads", "1"]
        if kind == "libffm" or case["seed"] == "cache_ffm":
            argv += ["--model", "ffm"]
    else:
        argv = ["predict", case["good_model"], path, "-o", out, "-q", "--threads", "1"]
    _LAST_CLI[0] = argv[0]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        status = cli.main(argv)
    msg = err.getvalue()
    if status not in (0, 1):
        return f"cli {argv[0]}: exit status {status}: {msg[-300:]}"
    if "internal error" in msg or "Traceback" in msg:
        return f"cli {argv[0]}: {msg[-300:]}"
    # divergence of a training run (e.g. labels of 1e300) is an error of the
    # run, not of the file: documented, exit status 1
    # an error names the file at fault: the case's file, or the other input
    # (e.g. labels of the data file that a mutated model's classes do not hold)
    named = any(os.path.basename(a) in msg for a in argv[1:] if os.path.sep in a)
    if status == 1 and not named and not (
            argv[0] == "train" and "training diverged" in msg):
        return f"cli {argv[0]}: error does not name the file: {msg[-300:]}"
    return None


def run(cases_path, mem_bytes, per_case_seconds=20):
    import resource
    import signal
    import tempfile

    import numpy as np

    import cfm  # noqa: F401
    import cfm.cli  # noqa: F401
    import cfm.xlearn  # noqa: F401

    vm = [int(ln.split()[1]) * 1024 for ln in open("/proc/self/status")
          if ln.startswith("VmSize")][0]
    resource.setrlimit(resource.RLIMIT_AS, (vm + mem_bytes, vm + mem_bytes))

    def alarm(signum, frame):
        raise Hang()

    signal.signal(signal.SIGALRM, alarm)
    with open(cases_path) as f:
        cases = json.load(f)
    tmp = tempfile.mkdtemp(prefix="cfm-fuzz-")
    rss_growth = 256 << 20
    last_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = sys.stdout
    for case in cases:
        rng = np.random.default_rng(case["id"])
        out.write(json.dumps({"start": case["id"]}) + "\n")
        out.flush()
        res = {"id": case["id"], "fail": None, "outcome": None, "cli": None}
        t0 = time.perf_counter()
        signal.alarm(per_case_seconds)
        try:
            try:
                res["outcome"] = "ok: " + _api(case, rng)
            except Hang:
                raise
            except AssertionError as exc:
                res["fail"] = f"insane output: {exc}"
            except BaseException as exc:  # noqa: BLE001 - classified
                res["outcome"] = "error: " + type(exc).__name__
                res["fail"] = _check_error(case, exc)
            if case["cli"]:
                try:
                    res["cli"] = "ran"
                    why = _cli(case, tmp)
                except Hang:
                    raise
                except BaseException as exc:  # noqa: BLE001 - main() must not raise
                    why = f"cli raised {type(exc).__name__}: {str(exc)[:300]}"
                if why and not res["fail"]:
                    res["fail"] = why
        except Hang:
            res["fail"] = f"hang (> {per_case_seconds} s)"
        finally:
            signal.alarm(0)
        res["t"] = round(time.perf_counter() - t0, 4)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        trained = case["cli"] and _LAST_CLI[0] == "train"
        _LAST_CLI[0] = None
        if peak - last_peak > rss_growth and not res["fail"] and not trained:
            # the input files are kilobytes: no case needs hundreds of MiB to
            # read them (training does: its model has a row per id up to the
            # largest, and an FFM a block per field id up to the largest, as
            # documented; it is bounded by the memory available, RLIMIT_AS)
            res["fail"] = f"peak memory grew by {(peak - last_peak) >> 20} MiB"
        last_peak = peak
        out.write(json.dumps(res) + "\n")
        out.flush()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "run":
        run(sys.argv[2], int(sys.argv[3]))
    else:  # pragma: no cover
        sys.exit("usage: fuzz_harness.py run CASES.json MEM_BYTES")
