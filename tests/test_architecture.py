"""cfm's package structure: imports point down the layers, no cycles, short modules.

The import graph is built from the sources (nothing is imported), counting
function-level imports too: a cycle through an import inside a function
still ties the modules together.  See docs/architecture.md for what each
layer owns; ``python /work/shared/tools/check_layers.py cfm`` reports the
same cycles and long modules.

To place a new module, add it (or a pattern covering it) to LAYERS.
"""
import ast
import fnmatch
from pathlib import Path


PKG = Path(__file__).resolve().parents[1] / "cfm"
MAX_LINES = 600

# Lowest layer first.  A module may import modules of its own layer or of a
# lower one, never of a higher one.  Patterns are module names relative to
# the package (fnmatch): "data" is cfm/data.py or cfm/data/__init__.py,
# "data.*" the modules of the cfm/data/ subpackage.  The compiled kernels
# (cfm._fm, ... built from src/cfm/*.pyx) are below everything and not listed.
LAYERS = [
    ("bottom", ["exceptions", "_validation", "_metrics", "_compat", "_lazy", "_process",
                "_files", "datasets", "_classes", "_fields"]),
    ("container", ["_container", "_readahead"]),
    ("data", ["data", "data.*", "encoder", "_encoding", "_encoder_file"]),
    ("scoring", ["scoring"]),
    ("model files", ["_model_file"]),
    ("model state", ["_state", "_state.*"]),
    ("training", ["_train", "_train.*"]),
    ("torch bridge", ["torch", "torch.*"]),
    ("estimators", ["_estimator", "_encoded", "_persist", "_tuning", "_to_torch", "models", "ffm",
                    "fwfm", "deepfm", "_classifier", "ranking"]),
    ("import", ["xlearn", "_xlearn_txt"]),
    ("loading", ["_loader"]),
    ("engines", ["dask", "_dask_rounds", "_dask_tasks", "spark"]),
    ("front ends", ["cli", "cli.*", "demo", "__main__"]),
]
# The package root (cfm/__init__.py) gathers the public API from every layer;
# importing it ("from cfm import __version__", "import cfm") is not an edge.
ROOT = "__init__"


def _modules(pkg=PKG):
    """{relative module name: path} of every .py file of the package."""
    out = {}
    for path in sorted(pkg.rglob("*.py")):
        parts = list(path.relative_to(pkg).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name, path, modules, top=PKG.name):
    """Modules of the package that ``name`` imports anywhere in its source
    (module level or inside functions), as {target: first line}."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg and name != ROOT else name.split(".")[:-1]
    if name == ROOT:
        here = []
    found = {}

    def add(target, line):
        target = target.strip(".")
        if target in modules and target not in (name, ROOT):
            found.setdefault(target, line)

    def absolute(mod):  # "cfm.x.y" -> "x.y"; "cfm" -> ""; other packages -> None
        if mod == top:
            return ""
        if mod.startswith(top + "."):
            return mod[len(top) + 1:]
        return None

    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                rel = absolute(alias.name)
                if rel is not None:
                    add(rel, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                head = ".".join(base + ([node.module] if node.module else []))
            else:
                head = absolute(node.module or "")
                if head is None:
                    continue
            add(head, node.lineno)
            for alias in node.names:  # "from . import data", "from .data import text"
                add(f"{head}.{alias.name}" if head else alias.name, node.lineno)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                node.func, "id", None)) == "import_module" and node.args \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            rel = absolute(node.args[0].value)
            if rel is not None:
                add(rel, node.lineno)
    return found


def _graph(pkg=PKG):
    modules = _modules(pkg)
    return modules, {m: _imports(m, p, modules, pkg.name) for m, p in modules.items()}


def _layer_of(module):
    for rank, (layer, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return rank, layer
    return None, None


def _cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_import_graph_sees_function_level_and_relative_imports():
    """The graph builder itself: a sanity check on modules that exist in
    every layout (the package root imports the estimators' layer)."""
    modules, graph = _graph()
    assert ROOT in modules and "exceptions" in modules
    assert graph[ROOT], "the package root imports nothing?"
    assert all(t in modules for edges in graph.values() for t in edges)


def test_graph_builder_on_a_small_package(tmp_path):
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import f\n",
        "a.py": "import os\n\ndef f():\n    from . import b\n    return b\n",
        "b.py": "from .sub.c import g\n",
        "sub/__init__.py": "",
        "sub/c.py": ("def g():\n    from .. import a\n    import toy.b\n"
                     "    import importlib\n    importlib.import_module('toy.d')\n"),
        "d.py": "from toy import __version__\nfrom toy.sub import c\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    modules, graph = _graph(pkg)
    assert set(modules) == {"__init__", "a", "b", "sub", "sub.c", "d"}
    assert set(graph["a"]) == {"b"}  # function-level, relative
    assert set(graph["b"]) == {"sub.c"}
    assert set(graph["sub.c"]) == {"a", "b", "d"}  # "..", absolute, import_module
    assert set(graph["d"]) == {"sub", "sub.c"}  # the package root is not an edge
    assert _cycles(graph) == [["a", "b", "d", "sub.c"]]


def test_no_import_cycles():
    _, graph = _graph()
    cycles = _cycles(graph)
    lines = []
    for comp in cycles:
        lines.append("import cycle: " + ", ".join(comp))
        lines += [f"    {a} -> {b} (line {graph[a][b]})" for a in comp for b in sorted(graph[a])
                  if b in comp]
    assert not cycles, "\n".join(lines)


def test_every_module_has_a_layer():
    modules, _ = _graph()
    missing = [m for m in modules if m != ROOT and _layer_of(m)[0] is None]
    assert not missing, f"modules in no layer of LAYERS (add them): {missing}"


def test_imports_point_down_the_layers():
    _, graph = _graph()
    bad = []
    for mod, edges in sorted(graph.items()):
        rank, layer = _layer_of(mod)
        if mod == ROOT or rank is None:
            continue
        for target, line in sorted(edges.items()):
            t_rank, t_layer = _layer_of(target)
            if t_rank is not None and t_rank > rank:
                bad.append(f"{mod} ({layer}) imports {target} ({t_layer}) at line {line}")
    assert not bad, "imports pointing up:\n" + "\n".join(bad)


def test_no_long_modules():
    modules, _ = _graph()
    long = {m: p.read_text().count("\n") for m, p in modules.items()}
    long = {m: n for m, n in long.items() if n > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: " + ", ".join(
        f"{m} ({n})" for m, n in sorted(long.items(), key=lambda kv: -kv[1]))
