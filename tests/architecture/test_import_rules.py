"""The package map of docs/architecture.md, enforced.

Every ``import`` of a coinfer module anywhere in ``src/coinfer`` (at module level or inside a
function: a lazy import is still a dependency) must follow an allowed package edge, and no
module may take part in an import circle. A new edge is a design decision: change
``ALLOWED`` and docs/architecture.md together.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "coinfer"

# package -> the coinfer packages it may import (besides itself). ``errors`` is the one leaf
# module every package may raise from; ``cli``/``demo`` are the shell and may use anything.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "core": {"errors"},
    "zoo": {"errors"},
    "graph": {"errors", "core", "zoo"},
    "cluster": {"errors", "core"},
    "profile": {"errors", "core", "graph", "zoo", "cluster"},
    "plan": {"errors", "core"},
    "testing": {"errors", "core"},
    "schedule": {"errors", "core"},
    "simulate": {"errors", "core", "schedule"},
    "runtime": {"errors", "core", "schedule", "graph", "zoo", "cluster", "profile"},
    "report": {"errors", "core", "schedule", "simulate", "runtime"},
    "serve": {"errors", "core", "runtime", "zoo"},
    "llm": {"errors", "core", "zoo", "runtime", "cluster"},
    "tiled": {"errors", "core", "graph", "zoo", "runtime"},
}
SHELL = {"cli", "demo", "__main__", "coinfer"}

# Packages that must import without torch or matplotlib: the pure planning side, usable on a
# machine (or in a process) that never runs a model.
TORCH_FREE = (
    "coinfer.core",
    "coinfer.plan",
    "coinfer.schedule",
    "coinfer.simulate",
    "coinfer.cluster",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:`` (annotations only, never executed)."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def _imports(path: Path, *, runtime_only: bool = False) -> set[str]:
    """Fully qualified coinfer modules imported by ``path`` (relative imports resolved).

    ``runtime_only`` leaves out imports under ``if TYPE_CHECKING:``, which never execute and so
    cannot close an import circle (they still count as package dependencies).
    """
    mod = _module_name(path)
    package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    skip = _type_checking_nodes(tree) if runtime_only else set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "coinfer" or target.startswith("coinfer."):
                if target != mod:  # ``from . import submodule`` in a package __init__
                    found.add(target)
                # ``from .pkg import module`` imports a submodule, not just a name
                for alias in node.names:
                    sub = PACKAGE.parent / Path(*f"{target}.{alias.name}".split("."))
                    if sub.with_suffix(".py").exists() or (sub / "__init__.py").exists():
                        found.add(f"{target}.{alias.name}")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("coinfer")}
    return found


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "coinfer"


def _graph(*, runtime_only: bool = False) -> nx.DiGraph:
    g = nx.DiGraph()
    for path in PACKAGE.rglob("*.py"):
        src = _module_name(path)
        g.add_node(src)
        for dst in _imports(path, runtime_only=runtime_only):
            g.add_edge(src, dst)
    return g


def test_every_package_is_in_the_map() -> None:
    tops = {_top(_module_name(p)) for p in PACKAGE.rglob("*.py")}
    unmapped = sorted(tops - set(ALLOWED) - SHELL)
    assert not unmapped, f"packages missing from ALLOWED (and docs/architecture.md): {unmapped}"


def test_imports_follow_the_package_map() -> None:
    bad = []
    for src, dst in _graph().edges:
        a, b = _top(src), _top(dst)
        if a == b or a in SHELL:
            continue
        if b not in ALLOWED.get(a, set()):
            bad.append(f"{src} imports {dst} ({a} -> {b} is not allowed)")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_circles() -> None:
    g = _graph(runtime_only=True)
    # A module importing its own package's __init__ (which re-exports that module) closes a
    # circle too, and is checked like any other edge.
    cycles = sorted(nx.simple_cycles(g))
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles[:20])


@pytest.mark.parametrize("module", TORCH_FREE)
def test_planning_side_imports_without_torch(module: str) -> None:
    code = (
        f"import sys, {module}; heavy = sorted(m for m in ('torch', 'matplotlib', 'transformers') "
        "if m in sys.modules); print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "", f"importing {module} loads {out.stdout.strip()}"


# A module longer than this must say in its docstring why it is one piece ("Why one module:").
MAX_MODULE_LINES = 450


def test_long_modules_say_why_they_are_one_piece() -> None:
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        n = text.count("\n")
        doc = ast.get_docstring(ast.parse(text)) or ""
        if n > MAX_MODULE_LINES and "Why one module:" not in doc:
            long.append(f"{path.relative_to(SRC)}: {n} lines")
    assert not long, "split these modules or explain why in the docstring:\n" + "\n".join(long)
