"""docs/design.md is load-bearing: its metric contract (§2) is the list the tests check the
exposition, the dashboards and the alerts against (tests/helpers/contract.py), and its layers
(§4) are the imports the package really has, subpackages included."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.helpers.code_tree import SRC, modules, upward_imports
from tests.helpers.contract import DESIGN_FAMILIES

ROOT = Path(__file__).resolve().parents[2]
DESIGN = ROOT / "docs/design.md"


def section(number: str) -> str:
    text = DESIGN.read_text(encoding="utf-8")
    start = text.index(f"\n## {number}. ")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def layers() -> dict[str, int]:
    """§4's numbered layers: each module by its dotted name below ``pqd`` (`runner.cycle`)."""
    layer_of: dict[str, int] = {}
    items = re.findall(r"^(\d)\. (.+(?:\n   .+)*)", section("4"), flags=re.MULTILINE)
    for number, item in items:
        for name in re.findall(r"`([a-z_][a-z_.]*)`", item):
            layer_of.setdefault(name, int(number))
    return layer_of


def test_section_2_names_exactly_the_contract_families() -> None:
    named = set(re.findall(r"`(pqd_[a-z_]+)", section("2")))
    assert named == set(DESIGN_FAMILIES)


def test_no_module_imports_a_layer_above_its_own() -> None:
    """A module may import its own layer and those below it (lower numbers), never one above;
    every module of the tree is placed."""
    assert not upward_imports(layers())


def test_section_4_places_no_module_that_does_not_exist() -> None:
    names = {m.name for m in modules()}
    assert not sorted(set(layers()) - names)


def test_the_layer_check_fails_on_an_upward_import_planted_in_the_tree(tmp_path: Path) -> None:
    root = tmp_path / "pqd"
    shutil.copytree(SRC, root, ignore=shutil.ignore_patterns("__pycache__"))
    layer_of = layers()
    low = min(layer_of, key=lambda name: (layer_of[name], -name.count(".")))
    high = max(layer_of, key=lambda name: (layer_of[name], name.count(".")))
    path = root.joinpath(*low.split(".")).with_suffix(".py")
    package, _, leaf = f"pqd.{high}".rpartition(".")
    path.write_text(
        path.read_text() + f"\n\ndef planted() -> None:\n    from {package} import {leaf}\n"
    )
    wrong = upward_imports(layer_of, root)
    assert wrong == [f"{low} (layer {layer_of[low]}) imports {high} ({layer_of[high]})"]
    (root / "planted_unplaced.py").write_text("")
    assert "planted_unplaced is not placed in a layer" in upward_imports(layer_of, root)


def test_the_readme_metrics_list_names_every_family_and_the_probe_info_labels() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n### Metrics\n")
    listed = text[start : text.index("\n### ", start + 1)]
    assert not sorted(set(DESIGN_FAMILIES) - set(re.findall(r"`(pqd_[a-z_]+)", listed)))
    labels = re.search(r"`pqd_probe_info\{([a-z_,]+)\}`", listed)
    assert labels is not None, "README's metrics list gives no labels of pqd_probe_info"
    assert set(labels.group(1).split(",")) == {
        "start_method",
        "containment",
        "python_version",
        "python_implementation",
    }
