"""The panel kinds pqd's dashboards use, on grafana-foundation-sdk's builders.

Each function fixes how one kind of panel looks across every dashboard (legend, tooltip,
colours), so a row module only says what a panel shows: its title, description, queries and
unit. Every panel and query goes through the data source the `datasource` variable picks, so
the dashboard works with any Prometheus data source name or uid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from grafana_foundation_sdk.builders import bargauge, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    TableSortByFieldState,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.builders.dashboard import FieldColor, ThresholdsConfig
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BigValueColorMode,
    BigValueGraphMode,
    BigValueJustifyMode,
    BigValueTextMode,
    GraphDrawStyle,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    TableCellHeight,
    TableColorTextCellOptions,
    TooltipDisplayMode,
    VisibilityMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    FieldColorModeId,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from pqd_dashboards.queries import PROBE_LEGEND

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

#: pqd_last_cycle_success and pqd_config_last_reload_successful: 1 is OK, 0 FAILED.
OK_FAILED = ValueMap(
    {
        "0": ValueMappingResult(text="FAILED", color="red", index=0),
        "1": ValueMappingResult(text="OK", color="green", index=1),
    }
)

#: One of the panel kinds, typed as itself so that a chain of its builder methods type-checks.
AnyPanel = TypeVar(
    "AnyPanel", timeseries.Panel, stat.Panel, statetimeline.Panel, table.Panel, bargauge.Panel
)


def thresholds(*steps: tuple[str, float | None]) -> ThresholdsConfig:
    """Absolute thresholds from (colour, from value) steps; the first step's value is None."""
    return (
        ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=value, color=color) for color, value in steps])
    )


#: Green when the value is 1 (OK), red below.
RED_UNTIL_OK = (("red", None), ("green", 1))


def query(expr: str, legend: str = PROBE_LEGEND) -> Dataquery:
    return Dataquery().datasource(DATASOURCE).expr(expr).legend_format(legend)


def table_query(expr: str) -> Dataquery:
    """An instant query shown as a table (info metrics: the labels are the data)."""
    return query(expr, legend="__auto").format(PromQueryFormat.TABLE).instant()


def _with_title_and_queries(
    panel: AnyPanel, title: str, description: str, queries: Sequence[Dataquery]
) -> AnyPanel:
    """Title, description and data source, and the queries with refIds A, B, C... (the fleet
    table's overrides name its columns after them)."""
    panel.title(title).description(description).datasource(DATASOURCE)
    for index, each in enumerate(queries):
        panel.with_target(each.ref_id(chr(ord("A") + index)))
    return panel


def timeseries_panel(
    title: str,
    description: str,
    queries: Sequence[Dataquery],
    unit: str = "short",
    *,
    decimals: int | None = None,
    min_zero: bool = True,
) -> timeseries.Panel:
    panel = _with_title_and_queries(timeseries.Panel(), title, description, queries)
    panel.unit(unit).color_scheme(FieldColor().mode(FieldColorModeId.PALETTE_CLASSIC))
    panel.draw_style(GraphDrawStyle.LINE).line_width(1).fill_opacity(10)
    panel.show_points(VisibilityMode.NEVER).span_nulls(False)
    panel.legend(
        VizLegendOptions()
        .show_legend(True)
        .display_mode(LegendDisplayMode.TABLE)
        .placement(LegendPlacement.BOTTOM)
        .calcs(["lastNotNull", "max"])
    )
    panel.tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
    if min_zero:
        panel.min(0)
    if decimals is not None:
        panel.decimals(decimals)
    return panel


def stat_panel(
    title: str,
    description: str,
    queries: Sequence[Dataquery],
    unit: str = "short",
    *,
    mappings: Sequence[ValueMap] = (),
    steps: ThresholdsConfig | None = None,
) -> stat.Panel:
    panel = _with_title_and_queries(stat.Panel(), title, description, queries)
    panel.unit(unit).mappings(list(mappings))
    panel.thresholds(steps or thresholds(("green", None)))
    panel.color_scheme(FieldColor().mode(FieldColorModeId.THRESHOLDS))
    panel.reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
    panel.color_mode(BigValueColorMode.BACKGROUND).graph_mode(BigValueGraphMode.NONE)
    panel.text_mode(BigValueTextMode.VALUE_AND_NAME).justify_mode(BigValueJustifyMode.AUTO)
    return panel.orientation(VizOrientation.AUTO)


def ok_failed_timeline(
    title: str, description: str, queries: Sequence[Dataquery]
) -> statetimeline.Panel:
    """A 0/1 series over time as red (FAILED) and green (OK) stretches."""
    panel = _with_title_and_queries(statetimeline.Panel(), title, description, queries)
    panel.mappings([OK_FAILED]).thresholds(thresholds(*RED_UNTIL_OK))
    panel.color_scheme(FieldColor().mode(FieldColorModeId.THRESHOLDS))
    panel.fill_opacity(80).line_width(0)
    panel.show_value(VisibilityMode.NEVER).merge_values(True).row_height(0.9)
    panel.legend(
        VizLegendOptions()
        .show_legend(False)
        .display_mode(LegendDisplayMode.LIST)
        .placement(LegendPlacement.BOTTOM)
    )
    return panel.tooltip(VizTooltipOptions().mode(TooltipDisplayMode.SINGLE).sort(SortOrder.NONE))


def info_table(title: str, description: str, info_query: Dataquery) -> table.Panel:
    """An info metric's labels, one row per series."""
    panel = _with_title_and_queries(table.Panel(), title, description, [info_query])
    panel.show_header(True).cell_height(TableCellHeight.SM)
    # Only the labels matter; drop the constant value and the timestamp.
    hidden = {"Time": True, "Value": True, "__name__": True}
    return panel.with_transformation(
        DataTransformerConfig(id_val="organize", options={"excludeByName": hidden})
    )


def top_failing_gauge(title: str, description: str, queries: Sequence[Dataquery]) -> bargauge.Panel:
    """Horizontal bars of failure counts: green at 0, red from 1."""
    panel = _with_title_and_queries(bargauge.Panel(), title, description, queries)
    panel.unit("short").decimals(0).min(0)
    panel.thresholds(thresholds(("green", None), ("red", 1)))
    panel.color_scheme(FieldColor().mode(FieldColorModeId.THRESHOLDS))
    panel.reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
    panel.orientation(VizOrientation.HORIZONTAL).display_mode(BarGaugeDisplayMode.BASIC)
    return panel.show_unfilled(True)


#: The fleet table's label columns around the values: where first, `job` last (most fleets
#: have one job).
FLEET_LEADING_LABELS = ("instance", "probe")
FLEET_TRAILING_LABELS = ("job",)


@dataclass(frozen=True)
class FleetColumn:
    """A value column of the fleet table: its header, an instant query grouped by
    FLEET_BY's labels, and field settings by Grafana's property id (e.g. "unit")."""

    header: str
    expr: str
    settings: dict[str, object] = field(default_factory=dict)
    # Show this label of the query's series instead of its value (a state set's state).
    label: str = ""


def fleet_table(
    title: str, description: str, columns: Sequence[FleetColumn], *, descending: bool = False
) -> table.Panel:
    """One row per (job, instance, probe), a column per query, sorted by the first (smallest
    first, or largest with ``descending``). The
    queries' frames are merged on the labels; Grafana names each value field "Value #<refId>",
    which is how the overrides below find a column."""
    panel = _with_title_and_queries(
        table.Panel(), title, description, [table_query(c.expr) for c in columns]
    )
    values = [f"Value #{chr(ord('A') + index)}" for index in range(len(columns))]
    shown = [column.label or value for value, column in zip(values, columns, strict=True)]
    hidden = {value: True for value, column in zip(values, columns, strict=True) if column.label}
    for value, column in zip(shown, columns, strict=True):
        settings = {
            "displayName": column.header,
            "color": FieldColor().mode(FieldColorModeId.THRESHOLDS).build(),
            "custom.cellOptions": TableColorTextCellOptions(),
            **column.settings,
        }
        panel.override_by_name(value, [DynamicConfigValue(k, v) for k, v in settings.items()])
    panel.show_header(True).cell_height(TableCellHeight.SM)
    panel.sort_by([TableSortByFieldState().display_name(columns[0].header).desc(descending)])
    order = [*FLEET_LEADING_LABELS, *shown, *FLEET_TRAILING_LABELS]
    panel.with_transformation(DataTransformerConfig(id_val="merge", options={}))
    return panel.with_transformation(
        DataTransformerConfig(
            id_val="organize",
            options={
                "excludeByName": {"Time": True, **hidden},
                "indexByName": {name: index for index, name in enumerate(order)},
            },
        )
    )
