"""Imports flow one way: every module imports only from its own domain or a lower layer, as the
table in docs/ARCHITECTURE.md says, and no imports form a cycle (between modules, or between
domains of one layer). Every import counts, including those inside functions (a lazy import is
still a dependency); imports under `if TYPE_CHECKING:` are type hints only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "copyseek"


def layer_table(text: str) -> dict[str, int]:
    """Domain -> layer number, from the ```layers block of the architecture notes."""
    block = re.search(r"```layers\n(.*?)```", text, re.S)
    assert block, "docs/ARCHITECTURE.md has no ```layers block"
    layers = {}
    for line in block.group(1).splitlines():
        number, *domains = line.split()
        for domain in domains:
            layers[domain] = int(number)
    return layers


LAYERS = layer_table((ROOT / "docs" / "ARCHITECTURE.md").read_text())


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def domain(module: str) -> str:
    """copyseek.match.fusion -> match; copyseek.errors -> errors; copyseek -> copyseek."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "copyseek"


def type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside `if TYPE_CHECKING:` blocks."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            inside.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    return inside


def imports_of(source: str, module: str) -> list[tuple[str, list[str], int]]:
    """(imported copyseek module, names taken from it, line) for every import in `source`."""
    tree = ast.parse(source)
    hints = type_checking_nodes(tree)
    package = module if module == "copyseek" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in hints:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "copyseek"]
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            if target.split(".")[0] == "copyseek":
                found.append((target, [a.name for a in node.names], node.lineno))
    return found


def import_graph() -> dict[str, list[tuple[str, list[str], int]]]:
    return {module_name(p): imports_of(p.read_text(), module_name(p)) for p in sorted(SOURCE.rglob("*.py"))}


def layer_violations(graph: dict, layers: dict[str, int]) -> list[str]:
    problems = []
    for module, imports in graph.items():
        if domain(module) not in layers:
            problems.append(f"{module}: domain {domain(module)!r} has no layer in docs/ARCHITECTURE.md")
            continue
        for target, names, line in imports:
            here, there = domain(module), domain(target)
            if there == "copyseek" and here != "copyseek":
                if set(names) - {"__version__"}:
                    problems.append(f"{module}:{line} imports {names} from the package facade; import from their modules")
            elif here != there and layers.get(there, 99) > layers[here]:
                problems.append(f"{module}:{line} imports {target} (layer {there}={layers.get(there)}) from layer {here}={layers[here]}")
    return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The cycles a depth-first search meets (one per back edge)."""
    found, state, path = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def module_edges(graph: dict) -> dict[str, set[str]]:
    modules = set(graph)
    edges: dict[str, set[str]] = {}
    for module, imports in graph.items():
        for target, names, _ in imports:
            # `from copyseek.local import LocalBranch` is an edge to copyseek.local (its __init__);
            # `from copyseek.local import branch` would be an edge to the submodule
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
            for t in subs or [target]:
                if t in modules and t != module and domain(t) != "copyseek":
                    edges.setdefault(module, set()).add(t)
    return edges


def test_every_import_goes_down_the_layers():
    problems = layer_violations(import_graph(), LAYERS)
    assert not problems, "imports against docs/ARCHITECTURE.md's layers:\n" + "\n".join(problems)


def test_no_import_cycles_between_modules():
    found = cycles(module_edges(import_graph()))
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_no_import_cycles_between_domains():
    edges: dict[str, set[str]] = {}
    for module, targets in module_edges(import_graph()).items():
        for target in targets:
            if domain(target) != domain(module):
                edges.setdefault(domain(module), set()).add(domain(target))
    found = cycles(edges)
    assert not found, "import cycles between domains:\n" + "\n".join(" -> ".join(c) for c in found)


# The checker itself, on made-up modules, so that the tests above can fail.
@pytest.mark.parametrize(
    ("module", "source", "problem"),
    [
        ("copyseek.describe.registry", "def f():\n    from copyseek.local.branch import LocalBranch\n", "layer describe=2"),
        ("copyseek.store.index", "from copyseek.match import matcher\n", "layer store=5"),
        ("copyseek.io.images", "import copyseek.describe.base\n", "layer io=1"),
        ("copyseek.bench.run", "from copyseek import Index\n", "package facade"),
        ("copyseek.newthing.x", "import numpy\n", "no layer"),
    ],
)
def test_the_checker_finds_upward_imports(module, source, problem):
    (found,) = layer_violations({module: imports_of(source, module)}, LAYERS)
    assert problem in found


def test_the_checker_allows_downward_lazy_and_type_hint_imports():
    source = (
        "from typing import TYPE_CHECKING\nfrom copyseek.errors import CopyseekError\n"
        "from . import normalize\nif TYPE_CHECKING:\n    from copyseek.cli import main\n"
        "def f():\n    from copyseek.store.index import Index\n"
    )
    imports = imports_of(source, "copyseek.match.matcher")
    assert [t for t, _, _ in imports] == ["copyseek.errors", "copyseek.match", "copyseek.store.index"]
    assert layer_violations({"copyseek.match.matcher": imports}, LAYERS) == []


def test_the_checker_finds_the_fusion_matcher_cycle():
    graph = {
        "copyseek.match.fusion": imports_of("from copyseek.match.matcher import QueryBatch\n", "copyseek.match.fusion"),
        "copyseek.match.matcher": imports_of("def f():\n    from copyseek.match.fusion import FusedScorer\n", "copyseek.match.matcher"),
    }
    assert cycles(module_edges(graph)) == [["copyseek.match.fusion", "copyseek.match.matcher", "copyseek.match.fusion"]]
