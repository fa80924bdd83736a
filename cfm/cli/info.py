"""``cfm info MODEL``: describe a model file (or a ``.cfmdata`` cache)."""
import json
import os

from ._options import EXIT_OK
from ._paths import cache_header, check_model_path, is_cache


def add_parser(sub, common):
    i = sub.add_parser("info", parents=[common], help="describe a model file (or a .cfmdata cache)",
                       description="Show a model file's kind, task, shapes, solver, training "
                       "parameters, history and checksums (or a .cfmdata cache's header).")
    i.add_argument("model", metavar="MODEL")
    i.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    return i


def _model_summary(path):
    from .. import FORMAT_VERSION
    from .._model_file import describe_model_file

    # validated and checksum-verified, read in bounded memory
    header, shapes, facts = describe_model_file(path)
    classes = header.get("classes")
    out = {
        "file": os.fspath(path),
        "kind": header["kind"],
        "model": ("lr" if header["kind"] in ("fm", "fm_softmax") and header["n_factors"] == 0
                  else header["kind"]),
        "estimator": header["estimator"],
        "task": header["task"],
        "n_features": header["n_features"],
        "n_factors": header["n_factors"],
        "n_fields": header.get("n_fields"),
        "entry_fields": header.get("entry_fields") is True,
        "hidden_layer_sizes": header.get("hidden") if header["kind"] == "deepfm" else None,
        "dtype": header["dtype"],
        "solver": header["solver"],
        "normalize": header["normalize"],
        "classes": classes["values"] if classes else None,
        "n_epochs": header.get("n_epochs_"),
        "best_epoch": header.get("best_epoch_"),
        "input_zero_based": header.get("input_zero_based"),
        "params": dict(header.get("params", {})),
        "history": header.get("history", []),
        "cfm_version": header.get("cfm_version"),
        "format_version": facts["format_version"],
        "reader_format_version": f"{FORMAT_VERSION[0]}.{FORMAT_VERSION[1]}",
        "file_bytes": facts["file_bytes"],
        "crc32": facts["crc32"],
        "sha256": facts["sha256"],
        "arrays": {k: {"shape": list(shape), "dtype": dt} for k, (shape, dt) in shapes.items()},
    }
    enc = header.get("encoder")
    if isinstance(enc, dict) and isinstance(enc.get("columns"), list):  # raw columns in
        kinds = [c.get("kind") for c in enc["columns"] if isinstance(c, dict)]
        out["encoder"] = {"columns": [c.get("name") for c in enc["columns"]
                                      if isinstance(c, dict)],
                          "kinds": {k: kinds.count(k) for k in sorted(set(map(str, kinds)))},
                          "params": enc.get("params")}
        out["params"]["encoder"] = "FieldEncoder"
    if out["hidden_layer_sizes"] is not None and out["params"].get("hidden_layer_sizes") is None:
        # a tuple is not a flat header value: the sizes are the model's "hidden"
        out["params"]["hidden_layer_sizes"] = out["hidden_layer_sizes"]
    return out


def _cache_summary(path):
    h = {k: v for k, v in cache_header(path).items() if not k.startswith("_")}
    return {"file": os.fspath(path), "kind": "cfmdata cache",
            **{k: h.get(k) for k in ("n_rows", "n_features", "nnz", "has_fields",
                                     "source_format", "source", "file_size")},
            "arrays": {a["name"]: {"shape": a["shape"], "dtype": a["dtype"],
                                   "crc32": f"{a['crc32']:08x}"} for a in h.get("arrays", [])}}


def _cache_lines(s):
    lines = [f"file          {s['file']}", "kind          cfmdata cache (binary data)"]
    for k in ("n_rows", "n_features", "nnz", "has_fields", "source_format", "source",
              "file_size"):
        lines.append(f"{k:<13} {s[k]}")
    for name, a in s["arrays"].items():
        lines.append(f"array         {name} {a['dtype']} {a['shape']} crc32 {a['crc32']}")
    return lines


def _model_lines(s):
    shape = f"n_features={s['n_features']}, n_factors={s['n_factors']}"
    if s["n_fields"] is not None:
        shape += f", n_fields={s['n_fields']}" + (" (per entry)" if s["entry_fields"] else "")
    if s["hidden_layer_sizes"] is not None:
        sizes = "-".join(str(h) for h in s["hidden_layer_sizes"]) or "none"
        shape += f", MLP hidden {sizes}"
    p = s["params"]
    lines = [
        f"file          {s['file']} ({s['file_bytes']:,} bytes, format {s['format_version']})",
        f"model         {s['model']} ({s['estimator']})",
        f"task          {s['task']}" + (f", classes {s['classes']}" if s["classes"] else ""),
        f"shape         {shape}, dtype {s['dtype']}",
        f"solver        {s['solver']}, normalize={s['normalize']}",
        f"training      {s['n_epochs']} epochs, best epoch {s['best_epoch']}",
        "params        " + ", ".join(f"{k}={p[k]}" for k in sorted(p)),
    ]
    if s.get("encoder"):
        e = s["encoder"]
        lines.append(f"encoder       {len(e['columns'])} columns ("
                     + ", ".join(f"{n} {k}" for k, n in e["kinds"].items()) + "): "
                     + ", ".join(map(str, e["columns"][:8]))
                     + (", ..." if len(e["columns"]) > 8 else ""))
    if s["input_zero_based"] is not None:
        lines.append(f"input ids     {'zero' if s['input_zero_based'] else 'one'}-based (libsvm)")
    if s["history"]:
        last = s["history"][-1]
        lines.append("last epoch    " + ", ".join(
            f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in last.items()))
    lines += [f"checksum      crc32 {s['crc32']} (verified), sha256 {s['sha256']}",
              f"cfm version   {s['cfm_version']}"]
    return lines


def run(args, log):
    check_model_path(args.model)
    cache = is_cache(args.model)
    s = _cache_summary(args.model) if cache else _model_summary(args.model)
    if args.json:
        print(json.dumps(s, indent=2, sort_keys=False, default=str))
    else:
        print("\n".join(_cache_lines(s) if cache else _model_lines(s)))
    return EXIT_OK
