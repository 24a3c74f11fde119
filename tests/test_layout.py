"""The package's layers: imports flow one way (entry points -> studies -> search -> rl -> net -> bottom),
no two modules import each other (directly or round a longer circle), and no module grows past 400 lines.

Every import counts, the ones inside functions too: a lazy import still ties the two modules together.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "rtsearch"
ENTRY_POINTS = {"train", "tune", "export", "bench", "report", "study", "search_study", "cli"}
BOTTOM = {"data", "config", "errors", "logs", "storage", "device"}
RANKS = {"bottom": 0, "net": 1, "rl": 2, "search": 3, "studies": 4, "entry": 5}
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = ("rtsearch",) + path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BOTTOM:
        return "bottom"
    if parts[1] in ENTRY_POINTS:
        return "entry"
    return parts[1]


def resolve(name: str) -> str | None:
    """The rtsearch module an import names (a package's module if it is one, else the package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    tree = ast.parse(MODULES[module].read_text())
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "rtsearch":
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] == "rtsearch":
                target = resolve(name)
                if target and target != module:
                    found.add(target)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def missing_modules(module: str) -> list[str]:
    """rtsearch modules this module imports from that do not exist (a lazy import fails only when run)."""
    tree = ast.parse(MODULES[module].read_text())
    named = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    named += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    return [name for name in named if name.split(".")[0] == "rtsearch" and name not in MODULES]


def test_every_imported_module_exists():
    missing = [f"{m} imports {name}" for m in MODULES for name in missing_modules(m)]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


def test_every_module_has_a_known_layer():
    for module in MODULES:
        assert layer(module) in RANKS, f"{module}: put it in one of the packages {sorted(RANKS)}"


def test_imports_flow_one_way():
    wrong = [f"{m} ({layer(m)}) imports {t} ({layer(t)})" for m, targets in GRAPH.items() for t in targets
             if RANKS[layer(t)] > RANKS[layer(m)]]
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def find_cycle(graph: dict) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_circles():
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_checks_catch_what_they_should():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert layer("rtsearch.net.cost") == "net" and layer("rtsearch.train") == "entry"
    assert layer("rtsearch.errors") == "bottom" and layer("rtsearch") == "bottom"
    assert "rtsearch.net.checkpoint" in GRAPH["rtsearch.net.dense"]          # `from rtsearch.net import checkpoint`
    assert "rtsearch.rl.loop" in GRAPH["rtsearch.rl.run"]                    # a lazy import inside a function


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_over_400_lines(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines: split it"
