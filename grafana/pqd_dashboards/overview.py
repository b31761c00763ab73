"""The pqd / Overview dashboard: its variables, annotations and rows."""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders.dashboard import (
    AnnotationQuery,
    Dashboard,
    DatasourceVariable,
    QueryVariable,
)
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableHide,
    VariableRefresh,
    VariableSort,
)

from pqd_dashboards.layout import add_row, number_panels
from pqd_dashboards.panels import DATASOURCE
from pqd_dashboards.queries import FAILED_CYCLES, INSTANCE_SELECTOR, JOB_SELECTOR
from pqd_dashboards.rows.cycles import cycles_row
from pqd_dashboards.rows.duration_and_cost import duration_and_cost_row
from pqd_dashboards.rows.fleet import fleet_row
from pqd_dashboards.rows.headroom import headroom_row
from pqd_dashboards.rows.pqd_itself import pqd_itself_row
from pqd_dashboards.rows.queue import queue_row
from pqd_dashboards.rows.workers import workers_row

#: Stable: links and the provisioned file name (pqd-overview.json) depend on it.
UID = "pqd-overview"

ROWS = (
    fleet_row,
    cycles_row,
    queue_row,
    workers_row,
    duration_and_cost_row,
    headroom_row,
    pqd_itself_row,
)

#: Fields of the failed-cycles annotation that Grafana's Prometheus data source reads but the
#: SDK's dashboard schema does not model; added to the JSON after encoding.
FAILED_CYCLES_ANNOTATION_FORMAT = {
    "step": "1m",
    "titleFormat": "Cycle failed: {{reason}}",
    "textFormat": "probe {{probe}} on {{instance}}",
    "tagKeys": "probe,reason",
    "useValueForTime": False,
}


def query_variable(name: str, label: str, metric: str, selector: str) -> QueryVariable:
    """A multi-value variable from label_values(); "All" becomes the regex .+ rather than a
    list of every value, which keeps queries short on a big fleet."""
    return (
        QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query({"query": f"label_values({metric}{selector}, {name})", "refId": f"{name}-variable"})
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".+")
        .options([])
        .hide(VariableHide.DONT_HIDE)
    )


def dashboard_variables() -> list[Builder[models.VariableModel]]:
    # Each narrows the next: the instances of the chosen jobs, the probes of those instances.
    return [
        DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .regex("")
        .hide(VariableHide.DONT_HIDE),
        query_variable("job", "Job", "pqd_build_info", ""),
        query_variable("instance", "Instance", "pqd_build_info", JOB_SELECTOR),
        query_variable("probe", "Probe", "pqd_probe_info", INSTANCE_SELECTOR),
    ]


def dashboard_annotations() -> list[Builder[models.AnnotationQuery]]:
    grafana_builtin = (
        AnnotationQuery()
        .name("Annotations & Alerts")
        .built_in(1)
        .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --"))
        .enable(True)
        .hide(True)
        .icon_color("rgba(0, 211, 255, 1)")
        .type("dashboard")
    )
    failed_cycles = (
        AnnotationQuery()
        .name("Failed cycles")
        .datasource(DATASOURCE)
        .enable(True)
        .hide(False)
        .icon_color("red")
        .expr(FAILED_CYCLES)
    )
    return [grafana_builtin, failed_cycles]


def overview_builder() -> Dashboard:
    board = (
        Dashboard("pqd / Overview")
        .uid(UID)
        .description(
            "Python multiprocessing health as pqd's probe cycles see it: outcomes, queue, "
            "workers, leaks, durations, and pqd itself."
        )
        .tags(["pqd", "multiprocessing"])
        # Generated: edits in the UI would be lost on the next provisioning.
        .readonly()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-6h", "now")
        # Empty: each viewer's own time zone preference.
        .timezone("")
        .version(1)
        .annotations(dashboard_annotations())
        .variables(dashboard_variables())
    )
    for row in ROWS:
        add_row(board, row())
    return board


def add_what_the_schema_lacks(board: dict[str, Any]) -> dict[str, Any]:
    """Fields Grafana reads that the SDK's schema has no place for: a query variable's
    `definition` (the query as the variable editor shows it) and the Prometheus annotation's
    formatting."""
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            variable["definition"] = variable["query"]["query"]
    for annotation in board["annotations"]["list"]:
        if annotation["name"] == "Failed cycles":
            annotation.update(FAILED_CYCLES_ANNOTATION_FORMAT)
    return board


def overview() -> dict[str, Any]:
    model = overview_builder().build()
    number_panels(model.panels or [])
    encoded: dict[str, Any] = json.loads(json.dumps(model, cls=JSONEncoder))
    return add_what_the_schema_lacks(encoded)
