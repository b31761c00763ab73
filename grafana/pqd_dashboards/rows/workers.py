"""Are workers coming up, are processes leaking? Live pool workers, the host's pid count and
the processes a cycle left behind."""

from __future__ import annotations

from grafana_foundation_sdk.builders import timeseries

from pqd_dashboards.layout import DashboardRow, Line
from pqd_dashboards.panels import query, timeseries_panel
from pqd_dashboards.queries import PROBE_LEGEND, probe_metric


def live_vs_configured() -> timeseries.Panel:
    return timeseries_panel(
        "Pool workers: live vs configured",
        "Pool worker processes alive now (0 between cycles) against the pool size.",
        [
            query(probe_metric("pqd_workers_live"), legend="live " + PROBE_LEGEND),
            query(probe_metric("pqd_workers_configured"), legend="configured " + PROBE_LEGEND),
        ],
        decimals=0,
    )


def pid_delta_and_leaks() -> timeseries.Panel:
    # The pid delta goes negative when other processes on the host exit: no floor at 0.
    return timeseries_panel(
        "Pid count delta and leaked processes per cycle",
        "Host pid count after minus before the last cycle (other processes on the host move it "
        "too) and pqd's own descendants the cycle left behind (should be 0).",
        [
            query(
                probe_metric("pqd_last_cycle_pid_count_delta"), legend="pid delta " + PROBE_LEGEND
            ),
            query(probe_metric("pqd_last_cycle_leaked_processes"), legend="leaked " + PROBE_LEGEND),
        ],
        decimals=0,
        min_zero=False,
    )


def host_pid_count() -> timeseries.Panel:
    return timeseries_panel(
        "Host pid count",
        "Processes on the host at pqd's last sample.",
        [query(probe_metric("pqd_host_pid_count"))],
        decimals=0,
    )


def workers_row() -> DashboardRow:
    return DashboardRow(
        "Are workers coming up, are processes leaking?",
        [
            Line(
                8,
                [
                    live_vs_configured().span(8),
                    pid_delta_and_leaks().span(8),
                    host_pid_count().span(8),
                ],
            )
        ],
    )
