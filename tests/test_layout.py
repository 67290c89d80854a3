"""The house: who may import whom (the table in docs/development.md, enforced for every package), no
cycle between packages, the drop-in import stays lean, every module imports on its own, and both test
tiers have tests."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

import orpo

SRC = Path(orpo.__file__).resolve().parent
ROOT = Path(__file__).resolve().parent.parent
ROOT_INIT = "__init__"  # the package root's own module: what `from orpo import ORPOTrainer` runs

# The library a TRL user imports: none of it may import the recipe layer, the product commands, the
# experiments or the CLI.
LIBRARY = {
    "_log",
    "cache",
    "guard",
    "tasks",
    "resources",
    "losses",
    "engine",
    "models",
    "checkpoints",
    "launch",
    "config",
    "data",
    "evaluation",
    "trainer",
    ROOT_INIT,
}

# Package -> the packages it may import (its own modules always). The same table as docs/development.md,
# section "What each package may import" (a test below compares them).
ALLOWED: dict[str, set[str]] = {
    "_log": set(),
    "cache": set(),
    "resources": set(),
    "guard": {"_log"},
    "tasks": {"_log"},
    "losses": {"_log"},
    "engine": {"_log", "cache"},
    "models": {"_log", "cache"},
    "checkpoints": {"_log"},
    "launch": {"_log", "guard", "checkpoints"},
    "config": {"_log", "losses"},
    "data": {"_log", "config", "engine", "losses", "tasks"},
    "evaluation": {"_log", "config", "data", "engine", "losses", "models", "tasks"},
    "trainer": {"_log", "checkpoints", "config", "data", "engine", "evaluation", "guard", "losses", "models"},
    ROOT_INIT: {"config", "trainer"},
    "run": LIBRARY,
    "export": LIBRARY | {"run"},
    "pairs": LIBRARY | {"run"},
    "tune": LIBRARY | {"run"},
    "iterate": LIBRARY | {"run", "export", "pairs"},
    "lab": LIBRARY | {"run", "export", "pairs", "tune", "iterate"},
    "cli": LIBRARY | {"run", "export", "pairs", "tune", "lab", "iterate"},
}


def module_name(path: Path) -> str:
    parts = ["orpo", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """The top-level package (or module) of ``orpo.X.Y...``: X; the root package's own module: ROOT_INIT."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT_INIT


def imported_modules(path: Path) -> set[str]:
    """Every ``orpo`` module a file imports, at the top or inside a function; ``from orpo import X``
    counts as X when X is a module or package, else as the root package's own module."""
    module, is_package = module_name(path), path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                parts = module.split(".") if is_package else module.split(".")[:-1]
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base == "orpo":
                for alias in node.names:
                    is_module = (SRC / f"{alias.name}.py").exists() or (SRC / alias.name).is_dir()
                    found.add(f"orpo.{alias.name}" if is_module else "orpo")
            else:
                found.add(base)
    return {name for name in found if name == "orpo" or name.startswith("orpo.")}


def package_imports() -> dict[str, dict[str, set[str]]]:
    """package -> imported package -> the modules that import it (between different packages only)."""
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in sorted(SRC.rglob("*.py")):
        source = module_name(path)
        for target in imported_modules(path):
            if package_of(target) != package_of(source):
                edges[package_of(source)][package_of(target)].add(source)
    return edges


def test_every_package_is_in_the_table():
    packages = {package_of(module_name(path)) for path in SRC.rglob("*.py")}
    assert not packages - ALLOWED.keys(), (
        f"place these in ALLOWED and docs/development.md: {packages - ALLOWED.keys()}"
    )


def test_each_package_imports_only_what_the_table_allows():
    wrong = [
        f"{source} -> {target} (in {', '.join(sorted(modules))})"
        for source, targets in sorted(package_imports().items())
        for target, modules in sorted(targets.items())
        if target not in ALLOWED.get(source, set())
    ]
    assert not wrong, "imports the layering forbids:\n" + "\n".join(wrong)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one package (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_cycle_between_packages():
    edges = package_imports()
    found = cycles({source: set(targets) for source, targets in edges.items()})
    detail = [
        f"{source} -> {target} (in {', '.join(sorted(edges[source][target]))})"
        for component in found
        for source in component
        for target in sorted(edges[source])
        if target in component
    ]
    assert not found, f"package cycles {found}:\n" + "\n".join(detail)


def documented_table() -> dict[str, set[str]]:
    """The table under "What each package may import" in docs/development.md: `package` | may import."""
    text = (ROOT / "docs" / "development.md").read_text()
    section = text.split("### What each package may import", 1)[1].split("\n#", 1)[0]
    table: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("`"):
            continue
        names = set(re.findall(r"`([\w.]+)`", cells[1]))
        if "the library" in cells[1]:
            names |= LIBRARY
        package = cells[0].strip("`").removeprefix("orpo/").removesuffix("/").removesuffix(".py")
        table[ROOT_INIT if package == "__init__" else package] = names - {"nothing"}
    return table


def test_the_documented_table_is_the_enforced_one():
    assert documented_table() == ALLOWED


@pytest.mark.slow
def test_the_drop_in_import_loads_no_recipe_or_experiment_code():
    """`from orpo import ORPOTrainer` is what a TRL user runs: it must not pull the YAML recipe layer
    (``orpo.run``) or the experiments (``orpo.lab``), which would tie the library to the CLI."""
    code = (
        "import sys\n"
        "from orpo import ORPOConfig, ORPOTrainer\n"
        "print(' '.join(m for m in sys.modules if m.startswith(('orpo.run', 'orpo.lab', 'orpo.cli'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


MODULES = sorted(m.name for m in pkgutil.walk_packages(orpo.__path__, "orpo."))


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports(name):
    importlib.import_module(name)


def test_both_test_tiers_have_tests():
    """`pytest -m "not slow"` and `pytest -m slow` each collect tests (pytest exits 5 on an empty run, which
    would fail CI): some test files are marked slow, some are not."""
    files = sorted((ROOT / "tests").rglob("test_*.py"))
    marker = re.compile(r"^(pytestmark\s*=.*\bpytest\.mark\.slow\b|\s*@pytest\.mark\.slow\b)", re.M)
    slow = [f for f in files if marker.search(f.read_text())]
    assert slow, "no test is marked slow: `pytest -m slow` would collect nothing"
    assert len(slow) < len(files)
