"""The library's import graph, read from the source with `ast` (nothing is imported or run).

    python scripts/import_graph.py            # markdown: package -> package edges, cycles (docs/architecture/)

A *module* is one file of the installed package tree (mu_llama/, encoders/ -> mu_llama.encoders, adapters/ ->
mu_llama.adapters, demo/ -> mu_llama.demo); a *unit* is what sits directly under mu_llama: a subpackage
(mu_llama.emotion) or a top-level module (mu_llama.tagger). Every `import` statement counts, wherever it stands:
module level, inside a function (lazy), or under `if TYPE_CHECKING:`, since each is a dependency of the code. Imports
made from strings (importlib.import_module, the lazy names of mu_llama/__init__.py, a labeler factory) are not read.
tests/test_packaging.py checks the layers and the absence of cycles on this graph.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# installed package name -> source folder (pyproject's [tool.setuptools.package-dir])
SOURCES = {"mu_llama": "mu_llama", "mu_llama.encoders": "encoders", "mu_llama.adapters": "adapters",
           "mu_llama.demo": "demo"}


@dataclass(frozen=True)
class Edge:
    src: str          # importing module
    dst: str          # imported module (the deepest module of ours that the statement names)
    line: int
    lazy: bool        # inside a function (or class) body rather than at module level


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the installed package tree."""
    found: dict[str, Path] = {}
    for package, folder in SOURCES.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            if package == "mu_llama" and parts[0] in ("encoders", "adapters", "demo"):
                continue
            name = ".".join((package, *parts))
            found[name.removesuffix(".__init__")] = path
    return found


def _lazy_nodes(tree: ast.Module) -> set[int]:
    """ids of the import nodes that stand inside a function or class body."""
    lazy: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            lazy.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom)))
    return lazy


def imports(name: str, path: Path, known: dict[str, Path]) -> list[Edge]:
    """The edges from module `name` (file `path`) to modules in `known`, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    lazy = _lazy_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: dict[str, Edge] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from pkg import sub` names the submodule when there is one, else the package itself
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                edge = Edge(name, target, node.lineno, id(node) in lazy)
                old = edges.get(target)
                if old is None or (old.lazy and not edge.lazy):
                    edges[target] = edge
    return sorted(edges.values(), key=lambda e: e.dst)


def module_edges(root: Path = ROOT) -> list[Edge]:
    known = modules(root)
    return [e for name, path in known.items() for e in imports(name, path, known)]


def unit(module: str) -> str:
    """mu_llama.emotion.audio -> mu_llama.emotion; mu_llama.tagger -> mu_llama.tagger; mu_llama -> mu_llama."""
    return ".".join(module.split(".")[:2])


def short(unit_name: str) -> str:
    return unit_name.removeprefix("mu_llama.")


def package_edges(edges: list[Edge]) -> dict[tuple[str, str], list[Edge]]:
    """(unit, unit) -> the module edges behind it, between distinct units (the root package's face left out)."""
    out: dict[tuple[str, str], list[Edge]] = defaultdict(list)
    for e in edges:
        a, b = unit(e.src), unit(e.dst)
        if a != b and "mu_llama" not in (a, b):
            out[a, b].append(e)
    return dict(sorted(out.items()))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan, iterative), each sorted; sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    nodes = sorted(set(graph) | {v for vs in graph.values() for v in vs})
    for start in nodes:
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return sorted(found)


def graph_of(pairs) -> dict[str, set[str]]:
    g: dict[str, set[str]] = defaultdict(set)
    for a, b in pairs:
        g[a].add(b)
    return dict(g)


def markdown(root: Path = ROOT) -> str:
    """One row per unit: what it imports (count of module imports behind each arrow; "lazy" when all are lazy), then
    the cycles, each with the module imports that tie it."""
    edges = module_edges(root)
    packages = package_edges(edges)
    units = sorted({unit(m) for m in modules(root)} - {"mu_llama"})
    lines = ["| package | imports (module imports behind the arrow) |", "|---|---|"]
    for a in units:
        out = [f"{short(b)} ({len(es)}{', lazy' if all(e.lazy for e in es) else ''})"
               for (src, b), es in packages.items() if src == a]
        lines.append(f"| {short(a)} | {', '.join(out) or '-'} |")
    lines += ["", f"{len(units)} packages, {len(packages)} package edges; {len(edges)} module edges, "
                  f"{sum(e.lazy for e in edges)} of them lazy (inside a function)."]
    found = cycles(graph_of(packages))
    lines += ["", f"Package cycles: {len(found) or 'none'}"]
    for c in found:
        arrows = [(a, b, es) for (a, b), es in packages.items() if a in c and b in c]
        lines.append(f"- {' / '.join(map(short, c))}: " + "; ".join(
            f"{short(a)} -> {short(b)} ({len(es)}{', lazy' if all(e.lazy for e in es) else ''}: "
            f"`{short(es[0].src)}` -> `{short(es[0].dst)}`{', ...' if len(es) > 1 else ''})" for a, b, es in arrows))
    found = cycles(graph_of((e.src, e.dst) for e in edges))
    lines += ["", f"Module cycles: {len(found) or 'none'}"]
    for c in found:
        lines.append(f"- {' / '.join(map(short, c))}: " + "; ".join(
            f"`{short(e.src)}` -> `{short(e.dst)}`{' (lazy)' if e.lazy else ''}"
            for e in edges if e.src in c and e.dst in c))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
