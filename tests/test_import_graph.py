"""The library strictly below the app: the static import graph of `attention` and `viz_app`.

Every module is parsed (ast, no import), and every ``import`` / ``from … import`` it contains,
at module level or inside a function, is an edge (``from pkg import name`` goes to ``pkg.name``
when that is a module, else to ``pkg``; a package's parents, which Python also runs, are not edges).
Checked: no `attention` module imports `viz_app`; no import cycle; no import from a lower layer
to a higher one (`LAYERS` below, lowest first; a module belongs to the longest prefix listed).

The layers, read from the code:
- foundation: plain values and helpers that import nothing of the library above them (errors,
  token layouts, the registry idiom, translations, allocator, devices, images, the
  interception hooks, model state guards, preprocessing, mask scores);
- families: one descriptor per model family (what the capture knows about a model);
- capture: the forward with every attention map, and diagnostics of a capture;
- methods: capture -> maps (and `methods.menu`: which method applies to what);
- render: maps -> pictures;
- models: loading models by name (sources, checkpoints, the demo architectures);
- faithfulness and export: what is computed from a model, its maps and images;
- demo: the shapes dataset, training and evaluation of the demo models;
- lesson: the step-by-step explanation;
- audit: a whole dataset;
- entry points: the notebook helpers, the CLI, the package's own ``__init__`` / ``__main__``;
- the app (`viz_app`), above everything.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("attention", "viz_app")

LAYERS: list[tuple[str, ...]] = [
    ("attention.errors", "attention.layout", "attention.registry", "attention.i18n", "attention.allocator",
     "attention.device", "attention.images", "attention.interception", "attention.modelstate",
     "attention.preprocess", "attention.scoring"),
    ("attention.families",),
    ("attention.capture", "attention.diagnostics"),
    ("attention.methods",),
    ("attention.render",),
    ("attention.models",),
    ("attention.faithfulness", "attention.export"),
    ("attention.demo",),
    ("attention.lesson",),
    ("attention.audit",),
    ("attention.notebook", "attention.cli", "attention.__main__", "attention"),
    ("viz_app",),
]


def _modules() -> dict[str, tuple[pathlib.Path, bool]]:
    """dotted name -> (file, is a package ``__init__``) for every module of `PACKAGES`."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            is_pkg = parts[-1] == "__init__"
            out[".".join(parts[:-1] if is_pkg else parts)] = (path, is_pkg)
    return out


MODULES = _modules()


def _imports(name: str, path: pathlib.Path, is_pkg: bool):
    """(target module as written, line) for every import statement of the module, nested ones included."""
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            for alias in node.names:
                sub = f"{mod}.{alias.name}"
                yield (sub if sub in MODULES else mod), node.lineno


def _graph() -> dict[str, dict[str, int]]:
    """module -> {imported module of `PACKAGES`: first line}."""
    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_pkg) in MODULES.items():
        edges = graph.setdefault(name, {})
        for target, line in _imports(name, path, is_pkg):
            while target not in MODULES and "." in target:      # `import a.b.func`-like spellings
                target = target.rsplit(".", 1)[0]
            if target in MODULES and target != name:
                edges.setdefault(target, line)
    return graph


GRAPH = _graph()


def _layer(name: str) -> int:
    best, layer = -1, None
    for k, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best:
                best, layer = len(p), k
    assert layer is not None, f"{name} is in no layer of LAYERS: add it to the list (and to the docstring)"
    return layer


def _cycles(graph) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as a closed path."""
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_path_in(graph, c) for c in comps]


def _path_in(graph, comp: list[str]) -> list[str]:
    """One cycle through the component's first module, to report (a -> b -> … -> a)."""
    members, start = set(comp), comp[0]
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph.get(path[-1], ())):
            if w == start:
                return path + [start]
            if w in members and w not in seen:
                seen.add(w)
                paths.append(path + [w])
    return comp


def _where(a: str, b: str) -> str:
    return f"{MODULES[a][0].relative_to(ROOT)}:{GRAPH[a][b]} ({a} -> {b})"


def test_the_graph_covers_both_packages():
    assert "attention.methods.menu" in GRAPH and "viz_app.cli" in GRAPH
    assert "attention.methods.base" in GRAPH["attention.methods.rollout"]
    # an import inside a function counts: the CLI starts the app only through an entry point, but it
    # does import the audit's parser inside a function
    assert any(t.startswith("attention.audit") for t in GRAPH["attention.cli"])


def test_the_library_never_imports_the_app():
    bad = [_where(a, b) for a in GRAPH if a.split(".")[0] == "attention" for b in GRAPH[a] if b.split(".")[0] == "viz_app"]
    assert not bad, "attention imports viz_app (use an entry point, see attention/registry.py):\n" + "\n".join(bad)


def test_no_import_cycle():
    cycles = _cycles(GRAPH)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_every_module_has_a_layer():
    for name in MODULES:
        _layer(name)


def test_no_import_climbs_to_a_higher_layer():
    climbs = [f"{_where(a, b)}: layer {_layer(a)} imports layer {_layer(b)}"
              for a in sorted(GRAPH) for b in sorted(GRAPH[a]) if _layer(b) > _layer(a)]
    assert not climbs, "imports from a lower layer to a higher one:\n" + "\n".join(climbs)


@pytest.mark.parametrize("source, expected", [
    ("import attention.capture\n", ["attention.capture"]),
    ("def f():\n    from ..render import overlay, to_rgb_name\n", ["attention.render.overlay", "attention.render"]),
    ("from . import base, menu\n", ["attention.methods.base", "attention.methods.menu"]),
    ("from .base import Method\n", ["attention.methods.base"]),
])
def test_imports_are_read_as_python_resolves_them(tmp_path, source, expected):
    """The parser itself, on the spellings the code uses (relative, nested, `from pkg import module`)."""
    path = tmp_path / "m.py"
    path.write_text(source, encoding="utf-8")
    assert [t for t, _ in _imports("attention.methods.m", path, False)] == expected
