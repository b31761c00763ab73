"""Rows of lines of panels, placed on Grafana's 24-column grid.

A row module describes its panels as lines; the SDK's Dashboard builder places each panel to
the right of the previous one and wraps at 24 columns, so a line that fills exactly 24 columns
with panels of one height lands where it reads in the code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from grafana_foundation_sdk.builders import bargauge, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders.dashboard import Dashboard, Row
from grafana_foundation_sdk.models import dashboard

GRID_COLUMNS = 24

#: The panel kinds pqd_dashboards.panels makes.
PanelBuilder = timeseries.Panel | stat.Panel | statetimeline.Panel | table.Panel | bargauge.Panel


@dataclass(frozen=True)
class Line:
    """Panels side by side, each `height` grid units tall; their widths (set with .span())
    must add up to the grid's 24 columns, or the next line would start beside them."""

    height: int
    panels: Sequence[PanelBuilder]


@dataclass(frozen=True)
class DashboardRow:
    """A titled row of the dashboard and its lines of panels, top to bottom."""

    title: str
    lines: Sequence[Line]


def _width(panel: PanelBuilder) -> int:
    grid = panel.build().grid_pos
    if grid is None:
        raise ValueError("a panel has no width: give it .span(columns)")
    return grid.w


def add_row(board: Dashboard, row: DashboardRow) -> None:
    board.with_row(Row(row.title))
    for line in row.lines:
        width = sum(_width(panel) for panel in line.panels)
        if width != GRID_COLUMNS:
            raise ValueError(f"row {row.title!r}: a line is {width} columns wide, not 24")
        for panel in line.panels:
            board.with_panel(panel.height(line.height))


def number_panels(panels: Sequence[dashboard.Panel | dashboard.RowPanel]) -> None:
    """Ids 1, 2, 3... top to bottom: Grafana needs them unique within a dashboard, and stable
    ones keep links to a panel (viewPanel=N) working across regenerations."""
    for panel_id, panel in enumerate(panels, start=1):
        panel.id_val = panel_id
