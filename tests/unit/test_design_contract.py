"""docs/design.md is load-bearing: its metric contract (§2) is the list the tests check the
exposition, the dashboards and the alerts against (tests/contract.py), and its layers (§4) are
the imports src/pqd really has."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.contract import DESIGN_FAMILIES

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs/design.md"
SRC = ROOT / "src/pqd"


def section(number: str) -> str:
    text = DESIGN.read_text(encoding="utf-8")
    start = text.index(f"\n## {number}. ")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_section_2_names_exactly_the_contract_families() -> None:
    named = set(re.findall(r"`(pqd_[a-z_]+)", section("2")))
    assert named == set(DESIGN_FAMILIES)


def test_no_module_imports_a_layer_above_its_own() -> None:
    """§4's numbered layers, read from the design itself: a module may import its own layer
    and those below it (lower numbers), never one above."""
    layer_of: dict[str, int] = {}
    items = re.findall(r"^(\d)\. (.+(?:\n   .+)*)", section("4"), flags=re.MULTILINE)
    for number, item in items:
        for name in re.findall(r"`([a-z_]+)`", item):
            layer_of.setdefault(name, int(number))
    modules = {p.stem for p in SRC.glob("*.py")} - {"__init__", "__main__"}
    unplaced = sorted(m for m in modules if m not in layer_of)
    assert not unplaced, f"modules docs/design.md §4 does not place: {unplaced}"
    wrong = []
    for module in sorted(modules):
        tree = ast.parse((SRC / f"{module}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pqd"):
                names = [node.module.removeprefix("pqd").lstrip(".")]
                if not names[0]:
                    names = [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [
                    a.name.removeprefix("pqd.") for a in node.names if a.name.startswith("pqd.")
                ]
            for name in names:
                if layer_of.get(name, 0) > layer_of[module]:
                    wrong.append(f"{module} (layer {layer_of[module]}) imports {name}")
    assert not wrong, wrong
