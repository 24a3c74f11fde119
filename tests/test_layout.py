"""The package's layers: imports flow one way (entry points -> search -> methods -> deploy -> rl -> net -> bottom),
and no two modules import each other (directly or round a longer circle). Only rtsearch.methods compares a
method's name: everything else asks its registry. The studies live outside the package, in experiments/: no
rtsearch module imports them, and no module there shares a file name with one in rtsearch/. (The size of
functions is ruff's to check: the complexity and statement rules in pyproject.toml.)

Every import counts, the ones inside functions too: a lazy import still ties the two modules together.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "rtsearch"
EXPERIMENTS = ROOT.parent / "experiments"
# bench_*: the measuring code of `python -m rtsearch.bench`, beside its entry point
ENTRY_POINTS = {"train", "tune", "export", "bench", "bench_latency", "bench_sampling", "bench_deployed", "bench_pareto",
                "report",
                "cli"}
BOTTOM = {"data", "config", "errors", "logs", "storage", "device"}
RANKS = {"bottom": 0, "net": 1, "rl": 2, "deploy": 3, "methods": 4, "search": 5, "entry": 6}


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


def imported_names(path: Path) -> list[str]:
    """Every module name an import in the file names (`from a.b import c`: a.b; lazy imports too)."""
    tree = ast.parse(path.read_text())
    named = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    named += [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module]
    return named


def missing_modules(module: str) -> list[str]:
    """rtsearch modules this module imports from that do not exist (a lazy import fails only when run)."""
    return [name for name in imported_names(MODULES[module])
            if name.split(".")[0] == "rtsearch" and name not in MODULES]


STUDIES = {"experiments." + p.stem if p.stem != "__init__" else "experiments": p for p in EXPERIMENTS.glob("*.py")}


def test_every_imported_module_exists():
    missing = [f"{m} imports {name}" for m in MODULES for name in missing_modules(m)]
    missing += [f"{m} imports {name}" for m, path in STUDIES.items() for name in imported_names(path)
                if (name.split(".")[0] == "rtsearch" and name not in MODULES)
                or (name.split(".")[0] == "experiments" and name not in STUDIES)]
    assert not missing, "imports of modules that do not exist:\n" + "\n".join(missing)


def test_no_rtsearch_module_imports_the_experiments():
    wrong = [f"{m} imports {name}" for m, path in MODULES.items() for name in imported_names(path)
             if name.split(".")[0] == "experiments"]
    assert not wrong, "the package must not depend on experiments/ (not installed):\n" + "\n".join(wrong)


def test_no_module_in_experiments_shares_a_file_name_with_another_module():
    shared_ok = {"__init__.py", "__main__.py"}
    studies = [p for p in EXPERIMENTS.rglob("*.py") if p.name not in shared_ok]
    package = {p.name: p for p in ROOT.rglob("*.py") if p.name not in shared_ok}
    clashes = [f"{p.relative_to(ROOT.parent)} and {package[p.name].relative_to(ROOT.parent)}"
               for p in studies if p.name in package]
    clashes += [f"{p.relative_to(ROOT.parent)} and {q.relative_to(ROOT.parent)}"
                for i, p in enumerate(studies) for q in studies[i + 1:] if p.name == q.name]
    assert studies, f"no modules in {EXPERIMENTS}"
    assert not clashes, "name the study module for what it studies (e.g. ladder_study.py):\n" + "\n".join(clashes)


def test_no_two_modules_of_the_package_share_a_name():
    modules = sorted(p for p in ROOT.rglob("*.py") if p.name not in {"__init__.py", "__main__.py"})
    clashes = [f"{p.relative_to(ROOT.parent)} and {q.relative_to(ROOT.parent)}"
               for i, p in enumerate(modules) for q in modules[i + 1:] if p.name == q.name]
    assert not clashes, "name each module for what it holds where it lives:\n" + "\n".join(clashes)


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
    assert "rtsearch.rl.loop" in GRAPH["rtsearch.methods.gated"]             # a lazy import inside a function
    assert method_name_comparisons("x = cfg.method == 'ladder'\ny = m in ('both', 'x')\nz = {'ladder': 1}") == [1, 2]


METHOD_NAMES = {"ladder", "both", "runtime-only", "static-only", "paper"}


def method_name_comparisons(source: str) -> list[int]:
    """The lines of `source` that compare something with a method's name (==, !=, in, not in)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                constants = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
                if any(isinstance(c, ast.Constant) and c.value in METHOD_NAMES for c in constants):
                    lines.append(node.lineno)
                    break
    return lines


def test_only_the_methods_package_compares_method_names():
    from rtsearch import methods
    assert set(methods.names()) == METHOD_NAMES
    wrong = [f"{path.relative_to(ROOT.parent)}:{line}" for m, path in MODULES.items()
             if not m.startswith("rtsearch.methods") for line in method_name_comparisons(path.read_text())]
    assert not wrong, "ask the registry (rtsearch.methods) instead of comparing a method's name:\n" + "\n".join(wrong)
