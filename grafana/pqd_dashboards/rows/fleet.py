"""Fleet: which instance and probe is failing, for many hosts at once."""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, table
from grafana_foundation_sdk.models.common import TableColoredBackgroundCellOptions
from grafana_foundation_sdk.models.dashboard import ValueMap, ValueMappingResult

from pqd_dashboards.layout import DashboardRow, Line
from pqd_dashboards.panels import (
    OK_FAILED,
    RED_UNTIL_OK,
    FleetColumn,
    fleet_table,
    query,
    thresholds,
    top_failing_gauge,
)
from pqd_dashboards.queries import (
    FLEET_BY,
    SINCE_SUCCESS_OR_NEVER,
    increase_last_hour,
    probe_metric,
)

#: SINCE_SUCCESS_OR_NEVER's -1: no successful cycle since pqd started.
NEVER = ValueMap({"-1": ValueMappingResult(text="never", color="red", index=0)})


def instances_and_probes() -> table.Panel:
    last_cycle = FleetColumn(
        "Last cycle",
        f"max by ({FLEET_BY}) ({probe_metric('pqd_last_cycle_success')})",
        {
            "mappings": [OK_FAILED],
            "thresholds": thresholds(*RED_UNTIL_OK).build(),
            "custom.cellOptions": TableColoredBackgroundCellOptions(),
        },
    )
    since_success = FleetColumn(
        "Since last success",
        SINCE_SUCCESS_OR_NEVER,
        {
            "unit": "s",
            "mappings": [NEVER],
            "thresholds": thresholds(("green", None), ("orange", 300), ("red", 3600)).build(),
        },
    )
    failed_last_hour = FleetColumn(
        "Failed cycles (1h)",
        increase_last_hour("pqd_cycle_failures_total", by=FLEET_BY),
        {"decimals": 0, "thresholds": thresholds(("green", None), ("red", 1)).build()},
    )
    last_cause = FleetColumn(
        "Last cause",
        f"{probe_metric('pqd_last_cycle_cause')} == 1",
        label="pqd_last_cycle_cause",
    )
    return fleet_table(
        "Instances and probes",
        "One row per instance and probe, failing ones first: the last cycle's result "
        "(pqd_last_cycle_success), how long ago the last successful cycle ended (never: none "
        "since pqd started), the failed cycles of the last hour and the last cycle's cause "
        "(pqd_last_cycle_cause; none after a success, else a section of the runbook).",
        [last_cycle, since_success, failed_last_hour, last_cause],
    )


def top_failing_instances() -> bargauge.Panel:
    failures = increase_last_hour("pqd_cycle_failures_total", by="instance")
    return top_failing_gauge(
        "Top 10 failing instances (1h)",
        "The instances with the most failed cycles over the last hour, all probes together "
        "(pqd_cycle_failures_total).",
        [query(f"sort_desc(topk(10, {failures}))", legend="{{instance}}").instant()],
    )


def fleet_row() -> DashboardRow:
    return DashboardRow(
        "Fleet: which instance and probe is failing?",
        [Line(10, [instances_and_probes().span(16), top_failing_instances().span(8)])],
    )
