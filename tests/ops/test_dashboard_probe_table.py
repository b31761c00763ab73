"""The overview dashboard's Probes table shows each probe's interpreter: it lists
pqd_probe_info's labels, python_version and python_implementation among them (design §2)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parents[2] / "grafana/dashboards/pqd-overview.json"


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def test_the_probes_table_shows_the_interpreter_labels() -> None:
    board = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    (table,) = [p for p in panels(board["panels"]) if p.get("title") == "Probes"]
    assert table["type"] == "table"
    (target,) = table["targets"]
    assert target["expr"].startswith("pqd_probe_info"), target
    hidden = {
        name
        for transformation in table.get("transformations", [])
        for name, off in transformation.get("options", {}).get("excludeByName", {}).items()
        if off
    }
    assert not {"python_version", "python_implementation"} & hidden, hidden
    assert "python_version" in table["description"]
    assert "python_implementation" in table["description"]
