"""The shape a reader can hold in their head (CONTRIBUTING.md): no module of src/pqd over
MAX_MODULE_LINES lines and no function over MAX_FUNCTION_LINES. Counted from the source text,
so a change that breaks it is named here, not found in review."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src/pqd"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60


def test_no_module_is_over_the_limit() -> None:
    long = {
        path.name: lines
        for path in sorted(SRC.glob("*.py"))
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_over_the_limit() -> None:
    long = []
    for path in sorted(SRC.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"
