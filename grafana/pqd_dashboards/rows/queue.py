"""Is the queue saturating? Depth against capacity, full-queue events, operation latency."""

from __future__ import annotations

from grafana_foundation_sdk.builders import timeseries

from pqd_dashboards.layout import DashboardRow, Line
from pqd_dashboards.panels import query, timeseries_panel
from pqd_dashboards.queries import (
    PROBE_LEGEND,
    per_cycle,
    percentile_legend,
    probe_metric,
    quantile,
)


def depth_vs_capacity() -> timeseries.Panel:
    return timeseries_panel(
        "Queue depth vs capacity",
        "Live depth (0 between cycles), the deepest it got in the last cycle, and the queue's "
        "maxsize. PqdQueueSaturated fires when the live depth averages over 80% of capacity for "
        "10 minutes in which no cycle finished.",
        [
            query(probe_metric("pqd_queue_depth"), legend="depth " + PROBE_LEGEND),
            query(
                probe_metric("pqd_last_cycle_queue_depth_max"),
                legend="max in last cycle " + PROBE_LEGEND,
            ),
            query(probe_metric("pqd_queue_capacity"), legend="capacity " + PROBE_LEGEND),
        ],
        decimals=0,
    )


def full_queue_events() -> timeseries.Panel:
    return timeseries_panel(
        "Full-queue events per cycle",
        "queue.Full raised by producers: in the last cycle, and the mean per cycle over the rate "
        "window. The seed's probe makes 10 by design; a change means the probe or the host "
        "changed.",
        [
            query(
                probe_metric("pqd_last_cycle_queue_full_events"),
                legend="last cycle " + PROBE_LEGEND,
            ),
            query(
                per_cycle("pqd_queue_full_events_total"), legend="mean per cycle " + PROBE_LEGEND
            ),
        ],
    )


def operation_latency() -> timeseries.Panel:
    histogram = "pqd_queue_operation_duration_seconds"
    by = "instance, probe, operation"
    return timeseries_panel(
        "Queue operation latency",
        "put_nowait/get_nowait durations measured in the workers: p50 and p99 over the rate "
        "window.",
        [
            query(
                quantile(q, histogram, by=by),
                legend=percentile_legend(q, "{{operation}} " + PROBE_LEGEND),
            )
            for q in (0.5, 0.99)
        ],
        unit="s",
    )


def queue_row() -> DashboardRow:
    return DashboardRow(
        "Is the queue saturating?",
        [
            Line(
                8,
                [
                    depth_vs_capacity().span(8),
                    full_queue_events().span(8),
                    operation_latency().span(8),
                ],
            )
        ],
    )
