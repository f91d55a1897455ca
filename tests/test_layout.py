"""The package's floors: every import points down (or stays on its floor) and no import cycle exists.

Imports are read from the source (module level, inside functions and under ``TYPE_CHECKING``
alike): a function-level import that runs back up a floor is still an arrow back up.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import objdisc

PACKAGE = Path(objdisc.__file__).parent

# Bottom to top; a module may import from its own floor and the floors below.
FLOORS = [
    {"errors", "version", "utils"},
    {"geometry", "objects", "images", "interop"},
    {"models"},
    {"refinement"},
    {"methods"},
    {"datasets"},
    {"evaluation"},
    {"registers"},
    {"engine"},
    {"reports"},
    {"commands"},
    {"cli", "__main__", ""},  # "" is the package itself (its lazy public API)
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """module -> the objdisc modules it imports (a name imported from a package counts as the
    submodule when there is one of that name, else as the package)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("objdisc"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    found.add(full if full in modules else node.module)  # type: ignore[arg-type]
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("objdisc")}
        graph[name] = found - {name}
    return graph


def floor(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for i, names in enumerate(FLOORS):
        if top in names:
            return i
    raise AssertionError(f"{module}: on no floor; add its folder to FLOORS in {__file__}")


def test_every_import_points_down_or_along_its_floor():
    upward = [
        f"{a} (floor {floor(a)}) imports {b} (floor {floor(b)})"
        for a, targets in imports().items()
        for b in targets
        if floor(b) > floor(a)
    ]
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycle():
    graph = imports()
    cycles = [c for c in strongly_connected(graph) if len(c) > 1]
    assert not cycles, "\n".join(" <-> ".join(sorted(c)) for c in cycles)


def test_the_check_sees_a_cycle_and_an_upward_import():
    """The two checks are not vacuous: a planted cycle and a planted upward arrow are found."""
    assert [sorted(c) for c in strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}}) if len(c) > 1] == [
        ["a", "b", "c"]
    ]
    assert floor("objdisc.engine.runner") > floor("objdisc.methods.lost")
    assert floor("objdisc.commands.run") > floor("objdisc.reports.table")


@pytest.mark.parametrize("floor_name", ["engine", "registers", "evaluation", "reports"])
def test_computation_never_imports_a_command(floor_name: str):
    offenders = [
        f"{a} -> {b}"
        for a, targets in imports().items()
        if a.startswith(f"objdisc.{floor_name}")
        for b in targets
        if b.startswith("objdisc.commands") or b in ("objdisc", "objdisc.cli")
    ]
    assert not offenders, offenders


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    out.append(component)
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def test_test_files_have_unique_basenames():
    """pytest imports test files by basename (rootdir-relative, no ``__init__.py``): two files of
    one name in different folders break collection of the whole suite."""
    tests = Path(__file__).parent
    seen: dict[str, Path] = {}
    for path in sorted(tests.rglob("test_*.py")):
        assert path.name not in seen, f"{path} and {seen[path.name]} share a basename: rename one"
        seen[path.name] = path
