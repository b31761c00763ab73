"""pqd itself: the daemon's own process (the probes' runners and pools are separate processes,
shown under cycle cost), its config reloads, and what is deployed."""

from __future__ import annotations

from grafana_foundation_sdk.builders import stat, table, timeseries

from pqd_dashboards.layout import DashboardRow, Line
from pqd_dashboards.panels import (
    OK_FAILED,
    RED_UNTIL_OK,
    info_table,
    query,
    stat_panel,
    table_query,
    thresholds,
    timeseries_panel,
)
from pqd_dashboards.queries import (
    INSTANCE_LEGEND,
    RATE_INTERVAL,
    instance_metric,
    probe_metric,
)


def cpu() -> timeseries.Panel:
    return timeseries_panel(
        "CPU",
        "CPU time of pqd's main process; 100% is one core. The probes' runners and pools are "
        "separate processes: see Cycle cost.",
        [
            query(
                f"rate({instance_metric('process_cpu_seconds_total')}[{RATE_INTERVAL}])",
                legend=INSTANCE_LEGEND,
            )
        ],
        unit="percentunit",
    )


def memory() -> timeseries.Panel:
    return timeseries_panel(
        "Memory",
        "Resident memory of pqd's main process. The probes' processes are separate: see Cycle "
        "cost: peak RSS.",
        [query(instance_metric("process_resident_memory_bytes"), legend=INSTANCE_LEGEND)],
        unit="bytes",
    )


def open_fds() -> timeseries.Panel:
    return timeseries_panel(
        "Open file descriptors",
        "A failed cycle must leave no file descriptor behind: this should stay flat.",
        [query(instance_metric("process_open_fds"), legend=INSTANCE_LEGEND)],
        decimals=0,
    )


def last_reload() -> stat.Panel:
    return stat_panel(
        "Last config reload",
        "Whether the last reload (SIGHUP or POST /-/reload) was accepted. A refused one keeps "
        "the old config running.",
        [query(instance_metric("pqd_config_last_reload_successful"), legend=INSTANCE_LEGEND)],
        mappings=[OK_FAILED],
        steps=thresholds(*RED_UNTIL_OK),
    )


def last_successful_reload() -> stat.Panel:
    # Grafana's dateTimeFromNow unit wants milliseconds.
    reloaded_ms = instance_metric("pqd_config_last_reload_success_timestamp_seconds") + " * 1000"
    return stat_panel(
        "Last successful reload",
        "When the configuration was last loaded successfully.",
        [query(reloaded_ms, legend=INSTANCE_LEGEND)],
        unit="dateTimeFromNow",
    )


def build() -> table.Panel:
    return info_table(
        "Build",
        "pqd and Python versions per instance.",
        table_query(instance_metric("pqd_build_info")),
    )


def probes() -> table.Panel:
    return info_table(
        "Probes",
        "Configured probes: start method; containment: cgroup (each probe's runner in its "
        "own child cgroup of pqd's) or subreaper (no writable cgroup; the runner collects its "
        "orphans); and the Python the probe's runner and its processes run under (its python "
        "setting): python_version and python_implementation, empty while the configured path "
        "is not a usable CPython.",
        table_query(probe_metric("pqd_probe_info")),
    )


def pqd_itself_row() -> DashboardRow:
    return DashboardRow(
        "pqd itself",
        [
            Line(
                7,
                [
                    cpu().span(6),
                    memory().span(6),
                    open_fds().span(6),
                    last_reload().span(3),
                    last_successful_reload().span(3),
                ],
            ),
            Line(6, [build().span(12), probes().span(12)]),
        ],
    )
