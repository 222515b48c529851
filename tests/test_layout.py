"""The layout stays what docs/architecture.md draws: no import circles, small modules, one-way packages.

Static: every `import` and `from ... import` in the packages' source (inside functions too, relative
ones resolved) is an arrow between two modules; a cycle among the arrows fails the test, named.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_GATEWAY_LINES = 420


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(*packages: str) -> dict[str, Path]:
    return {module_name(p): p for pkg in packages for p in sorted((ROOT / pkg).rglob("*.py"))}


def _owner(name: str, known: dict[str, Path]) -> str | None:
    """The known module an imported name lives in: `a.b.c` -> `a.b` when c is not a module."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that module `name` imports, wherever in the file the import stands."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(t for a in node.names if (t := _owner(a.name, known)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                t = full if full in known else _owner(target, known)
                if t:
                    out.add(t)
    out.discard(name)
    return out


def graph(*packages: str) -> dict[str, set[str]]:
    known = modules(*packages)
    return {name: imports_of(name, path, known) for name, path in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan): the import circles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def _path_through(comp: list[str], g: dict[str, set[str]]) -> list[str]:
    """One closed walk inside a component, start -> ... -> start, to name the circle in the failure."""
    members = set(comp)
    start = comp[0]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(g[v] & members):
                if w == start:
                    walk = [v]
                    while walk[-1] != start:
                        walk.append(prev[walk[-1]])
                    return [start, *reversed(walk[:-1]), start] if v != start else [start, start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


def describe(found: list[list[str]], g: dict[str, set[str]]) -> str:
    return "; ".join(f"{' -> '.join(_path_through(c, g))} (circle among {', '.join(c)})" for c in found)


def test_the_cycle_finder_names_a_circle() -> None:
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [["a", "b", "c"]]
    assert describe(cycles(g), g) == "a -> b -> c -> a (circle among a, b, c)"
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_inside_functions_are_arrows(tmp_path: Path) -> None:
    known = {"pkg.a": tmp_path / "a.py", "pkg.b": tmp_path / "b.py", "pkg": tmp_path / "__init__.py"}
    known["pkg.a"].write_text("def f():\n    from .b import thing\n    return thing\n")
    assert imports_of("pkg.a", known["pkg.a"], known) == {"pkg.b"}
    known["pkg"].write_text("from . import b\n")
    assert imports_of("pkg", known["pkg"], known) == {"pkg.b"}


@pytest.mark.parametrize("package", ["gateway", "compiler", "router"])
def test_no_import_circles(package: str) -> None:
    g = graph(package)
    found = cycles(g)
    assert not found, "import circles: " + describe(found, g)


def test_router_and_compiler_never_import_gateway() -> None:
    g = graph("gateway", "router", "compiler")
    bad = sorted(
        f"{m} -> {t}"
        for m, ts in g.items()
        if not m.startswith("gateway")
        for t in ts
        if t.startswith("gateway")
    )
    assert not bad, "router/ and compiler/ must not import gateway/: " + ", ".join(bad)


def test_gateway_modules_stay_small() -> None:
    big = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "gateway").rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_GATEWAY_LINES
    }
    assert not big, f"modules over {MAX_GATEWAY_LINES} lines; split them by what they hold: {big}"


def test_below_web_nothing_imports_web_and_the_request_path_never_imports_the_loop() -> None:
    g = graph("gateway")
    web_users = sorted(
        f"{m} -> {t}"
        for m, ts in g.items()
        for t in ts
        if t.startswith("gateway.web") and not m.startswith(("gateway.web", "gateway.demo", "gateway.cli"))
    )
    assert not web_users, "only the CLI and the demo sit above gateway.web: " + ", ".join(web_users)
    proxy_to_loop = sorted(
        f"{m} -> {t}"
        for m, ts in g.items()
        if m.startswith("gateway.proxy")
        for t in ts
        if t.startswith("gateway.loop")
    )
    assert not proxy_to_loop, (
        "the request path reads the loop through gateway.proxy.plan.CompiledRoutes: "
        + (", ".join(proxy_to_loop))
    )
