"""The four packages import one way: jobs -> sweeps -> suite; analysis -> suite (and sweeps).

Every import counts, also those inside functions. ``suite/cli/main.py`` is the one exception allowed to
attach other packages' command groups, and it does so through entry points, not by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("suite", "sweeps", "jobs", "analysis")
# a package may import itself and the packages listed for it
ALLOWED = {
    "suite": {"suite"},
    "sweeps": {"sweeps", "suite"},
    "analysis": {"analysis", "sweeps", "suite"},
    "jobs": {"jobs", "sweeps", "suite", "analysis"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            skip.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return [node for node in ast.walk(tree) if id(node) not in skip]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in _imports(path):
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(f"{imported}."):
                targets.add(imported)
        graph[name] = targets
    return graph


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if target.split(".")[0] not in ALLOWED[module.split(".")[0]]
    ]
    assert upward == []


# suite's sub-packages, bottom first; a module may import its own sub-package and those before it.
SUITE_LAYERS = ("_compat", "config", "run", "device", "data", "models", "mixing", "teacher", "train", "cli")


# Modules that import nothing of the suite, usable from every layer: the names of the records.
SUITE_LEAVES = ("suite.run.names",)


def _suite_layer(module: str) -> int:
    parts = module.split(".")
    if module in SUITE_LEAVES or len(parts) == 1:  # a leaf or the package itself: the bottom
        return -1
    return SUITE_LAYERS.index(parts[1])


def test_leaf_modules_import_nothing_of_the_suite() -> None:
    graph = _graph()
    assert {leaf: sorted(t for t in graph[leaf] if t.startswith("suite.")) for leaf in SUITE_LEAVES} == {
        leaf: [] for leaf in SUITE_LEAVES
    }


def test_suite_sub_packages_import_down_only() -> None:
    graph = _graph()
    assert {m.split(".")[1] for m in graph if m.startswith("suite.")} == set(SUITE_LAYERS)
    upward = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.startswith("suite.")
        for target in targets
        if target.startswith("suite.") and _suite_layer(target) > _suite_layer(module)
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []
