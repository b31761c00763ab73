"""The package as a tree of dotted module names, for the checks that keep its shape and its
layers (tests/unit/test_code_shape.py, tests/unit/test_design_contract.py).

Every check takes the package's root folder, so a test can run it on a temporary copy with a
violation planted in it and prove that the check still fails."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src/pqd"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


@dataclass(frozen=True)
class Module:
    name: str  # dotted, below the package: "runner.cycle"; a subpackage's is "runner.__init__"
    path: Path


def modules(root: Path = SRC) -> list[Module]:
    """Every module of the package, subpackages included, in path order."""
    found = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        found.append(Module(".".join(parts), path))
    return found


def long_modules(root: Path = SRC) -> dict[str, int]:
    return {
        m.name: lines
        for m in modules(root)
        if (lines := len(m.path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }


def long_functions(root: Path = SRC) -> list[str]:
    long = []
    for module in modules(root):
        for node in ast.walk(ast.parse(module.path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module.name}:{node.lineno} {node.name} ({lines} lines)")
    return long


def imported_modules(module: Module, known: set[str]) -> list[str]:
    """The package's modules that ``module`` imports (at any depth of its code), by dotted
    name; ``from pqd.runner import cycle`` is ``runner.cycle`` when that module exists."""
    names = []
    for node in ast.walk(ast.parse(module.path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module != "pqd" and not node.module.startswith("pqd."):
                continue
            base = node.module.removeprefix("pqd").lstrip(".")
            for alias in node.names:
                inner = f"{base}.{alias.name}" if base else alias.name
                names.append(inner if inner in known else base)
        elif isinstance(node, ast.Import):
            names += [a.name.removeprefix("pqd.") for a in node.names if a.name.startswith("pqd.")]
    return [name for name in names if name]


def upward_imports(layer_of: dict[str, int], root: Path = SRC) -> list[str]:
    """Imports of a layer above the importer's own. A module absent from ``layer_of`` is
    reported too: every module must be placed."""
    found = [m for m in modules(root) if not m.name.endswith(("__init__", "__main__"))]
    known = {m.name for m in found}
    wrong = [f"{m.name} is not placed in a layer" for m in found if m.name not in layer_of]
    for module in found:
        own = layer_of.get(module.name, 0)
        for name in imported_modules(module, known):
            if layer_of.get(name, 0) > own:
                wrong.append(f"{module.name} (layer {own}) imports {name} ({layer_of[name]})")
    return wrong


def non_empty_inits(root: Path = SRC) -> list[str]:
    """Subpackages whose __init__.py holds code (the package's own may hold its version)."""
    return [
        m.name
        for m in modules(root)
        if m.name.endswith(".__init__") and m.path.read_text(encoding="utf-8").strip()
    ]
