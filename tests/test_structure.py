"""The structure between modules, read from the source: layers import downwards only, no import cycle
(imports inside functions included), no module over 400 lines, no private name imported from another
module, and one CLI module per command, named like it."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "odcli"

#: Bottom to top. A module may import its own layer's modules and those of the layers below it.
LAYERS: list[set[str]] = [
    {"errors", "config_checks", "runtime"},
    {"boxes"},
    {"assigners", "losses"},
    {"models"},
    {"recipe"},
    {"data"},
    {"weights"},
    {"inference"},
    {"export"},
    {"evaluation"},
    {"engine"},
    {"viz"},
    {"cli", "__main__"},
]
LAYER_OF = {name: index for index, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported odcli module, names taken from it) of every import, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "odcli"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("odcli"):
            found.append((node.lineno, str(node.module), [a.name for a in node.names]))
    return found


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    if top not in LAYER_OF:
        pytest.fail(f"{module} belongs to no layer: add its package to LAYERS (and to README's Layout)")
    return LAYER_OF[top]


def _resolve(module: str, names: list[str], modules: dict[str, Path]) -> list[str]:
    """The modules an import statement loads: ``from odcli.cli import eval`` loads ``odcli.cli.eval``."""
    targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules]
    return targets or [module]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for _, module, names in _imports(path):
            graph[name].update(t for t in _resolve(module, names, modules) if t != name)
    return graph


def test_layers_import_downwards_only() -> None:
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        if name == "odcli":
            continue  # the package's lazy public API may name anything
        for line, module, names in _imports(path):
            for target in _resolve(module, names, modules):
                if target != "odcli" and _layer(target) > _layer(name):
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} {name} imports {target}")
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in list(graph):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_no_module_over_400_lines() -> None:
    long = {name: n for name, p in _modules().items() if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines (split them along their seams): {long}"


def test_no_private_name_imported_from_another_module() -> None:
    private = [
        f"{_module_name(p)} takes {n} from {module}"
        for p in _modules().values()
        for _, module, names in _imports(p)
        for n in names
        if n.startswith("_") and not n.startswith("__")
    ]
    assert not private, "private names used across modules (make them public or move them):\n" + "\n".join(
        private
    )


def test_one_cli_module_per_command_named_like_it() -> None:
    from odcli.cli.main import app

    for command in app.registered_commands:
        module = command.callback.__module__
        name = command.name or command.callback.__name__
        assert module == f"odcli.cli.{name.replace('-', '_')}", (name, module)
