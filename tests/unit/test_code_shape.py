"""The shape a reader can hold in their head (CONTRIBUTING.md), over the whole package: no
module over MAX_MODULE_LINES lines, no function over MAX_FUNCTION_LINES, every subpackage's
``__init__.py`` empty, and at most MAX_TOP_LEVEL modules at the top. Counted from the source
text, so a change that breaks it is named here, not found in review; each check is shown to
fail on a violation planted in a copy of the tree."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers.code_tree import (
    MAX_FUNCTION_LINES,
    MAX_MODULE_LINES,
    SRC,
    long_functions,
    long_modules,
    modules,
    non_empty_inits,
)

#: The rest lives in subpackages named by concern (docs/design.md §4).
MAX_TOP_LEVEL = 15


def test_no_module_is_over_the_limit() -> None:
    assert not long_modules(), f"modules over {MAX_MODULE_LINES} lines: {long_modules()}"


def test_no_function_is_over_the_limit() -> None:
    assert not long_functions(), f"functions over {MAX_FUNCTION_LINES} lines: {long_functions()}"


def test_subpackages_have_empty_inits_and_the_top_level_is_small() -> None:
    assert not non_empty_inits()
    top = [m.name for m in modules() if "." not in m.name]
    assert len(top) <= MAX_TOP_LEVEL, top


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "pqd"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def _deepest_package(root: Path) -> Path:
    return max((p.parent for p in root.rglob("__init__.py")), key=lambda p: len(p.parts))


def test_the_checks_fail_on_violations_planted_anywhere_in_the_tree(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    folder = _deepest_package(root)
    (folder / "planted_long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    body = "".join(f"    y{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    (folder / "planted_func.py").write_text(f"def planted():\n{body}")
    (folder / "planted").mkdir()
    (folder / "planted" / "__init__.py").write_text("import os\n")
    dotted = ".".join((*folder.relative_to(root).parts, ""))
    assert f"{dotted}planted_long" in long_modules(root)
    assert any(entry.startswith(f"{dotted}planted_func:1 ") for entry in long_functions(root))
    assert non_empty_inits(root) == [f"{dotted}planted.__init__"]
