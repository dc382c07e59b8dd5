"""The package's layout is its architecture (docs/architecture.md): layers import downwards only.

Read off the source with `ast` (every import, also those inside functions; `if TYPE_CHECKING:`
blocks are annotations, not imports), so a new upward import or a circle fails here with the
modules that make it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import smoothrecon

SRC = Path(smoothrecon.__file__).parent

# Lowest first: a component may import only the components before it (and itself).
LAYERS = (
    "errors",
    "config",
    "metrics",
    "util",
    "operators",
    "models",
    "data",
    "attacks",
    "defenses",
    "evaluation",
    "certification",
    "experiments",
    "benchmark",
    "report",
    "api",
    "cli",
    "__init__",
    "__main__",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _component(module: str) -> str:
    """smoothrecon.attacks.pgd -> attacks; smoothrecon.config -> config; smoothrecon -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name | ast.Attribute) and "TYPE_CHECKING" in ast.unparse(
        node.test
    )


def _imports(path: Path) -> list[tuple[str, str, int]]:
    """(imported module, imported name or '', line) of every runtime import in the file."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip |= {id(n) for child in node.body for n in ast.walk(child)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, "", node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                is_module = (SRC.parent / sub.replace(".", "/")).with_suffix(".py").exists() or (
                    SRC.parent / sub.replace(".", "/") / "__init__.py"
                ).exists()
                out.append(
                    (sub, "", node.lineno) if is_module else (node.module, a.name, node.lineno)
                )
    return [
        (m, n, line) for m, n, line in out if m == "smoothrecon" or m.startswith("smoothrecon.")
    ]


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_every_component_has_a_layer() -> None:
    components = {_component(_module_name(p)) for p in _sources()}
    assert components <= set(LAYERS), f"components without a layer: {components - set(LAYERS)}"


def test_layers_import_downwards_only() -> None:
    """No import circles between components, and none from a lower layer to a higher one."""
    bad = []
    for path in _sources():
        me = _component(_module_name(path))
        for module, _, line in _imports(path):
            them = _component(module)
            if LAYERS.index(them) > LAYERS.index(me):
                bad.append(f"{path.relative_to(SRC)}:{line} ({me}) imports {module} ({them})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_import_circle_between_modules() -> None:
    graph: dict[str, set[str]] = {}
    for path in _sources():
        graph[_module_name(path)] = {m for m, _, _ in _imports(path)}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt == "smoothrecon" or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if state.get(nxt) is None and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None and (cycle := visit(node)):
            raise AssertionError("import circle: " + " -> ".join(cycle))


def test_no_private_name_is_imported_across_components() -> None:
    bad = []
    for path in _sources():
        me = _component(_module_name(path))
        for module, name, line in _imports(path):
            if name.startswith("_") and _component(module) != me:
                bad.append(f"{path.relative_to(SRC)}:{line} imports {module}.{name}")
    assert not bad, "private names imported across components:\n" + "\n".join(bad)


def test_few_top_level_modules() -> None:
    top = sorted(p.name for p in SRC.glob("*.py"))
    assert len(top) <= 6, f"top-level modules: {top}"


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an upward import in a function is found, a TYPE_CHECKING one is not."""
    f = tmp_path / "m.py"
    f.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from smoothrecon.report import build_report\n"
        "def g():\n    from smoothrecon.cli.main import main\n"
    )
    assert [m for m, _, _ in _imports(f)] == ["smoothrecon.cli.main"]
