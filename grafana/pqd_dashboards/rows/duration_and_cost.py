"""How long do cycles take, and what do they cost? Cycle and phase durations, and the CPU and
memory of each probe's process tree (docs/design.md §2)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import timeseries

from pqd_dashboards.layout import DashboardRow, Line
from pqd_dashboards.panels import query, timeseries_panel
from pqd_dashboards.queries import (
    PROBE_LEGEND,
    per_cycle,
    percentile_legend,
    probe_metric,
    probe_rate,
    quantile,
)


def cycle_duration() -> timeseries.Panel:
    percentiles = [
        query(quantile(q, "pqd_cycle_duration_seconds"), legend=percentile_legend(q, PROBE_LEGEND))
        for q in (0.5, 0.9, 0.99)
    ]
    # Exemplars on one percentile only: every percentile reads the same buckets, so each would
    # show the same points again.
    percentiles[0].exemplar(True)
    return timeseries_panel(
        "Cycle duration",
        "Percentiles of pqd_cycle_duration_seconds over the rate window, and the last cycle's "
        "wall time. The points are exemplars: single cycles, each with its cycle_id and a link "
        "to its page on its pqd (Prometheus needs --enable-feature=exemplar-storage).",
        [
            *percentiles,
            query(probe_metric("pqd_last_cycle_duration_seconds"), legend="last " + PROBE_LEGEND),
        ],
        unit="s",
    )


def phase_duration() -> timeseries.Panel:
    by = "instance, probe, phase"
    return timeseries_panel(
        "Phase duration",
        "p50 and p90 of pool_start, jobs and teardown.",
        [
            query(
                quantile(q, "pqd_phase_duration_seconds", by=by),
                legend=percentile_legend(q, "{{phase}} " + PROBE_LEGEND),
            )
            for q in (0.5, 0.9)
        ],
        unit="s",
    )


def cpu_per_cycle() -> timeseries.Panel:
    return timeseries_panel(
        "Cycle cost: CPU per cycle",
        "CPU time (user + system) of the probe's whole process tree in a cycle: runner, "
        "Manager, pool workers and helpers. The last cycle's, and the mean per cycle over the "
        "rate window.",
        [
            query(probe_metric("pqd_last_cycle_cpu_seconds"), legend="last cycle " + PROBE_LEGEND),
            query(
                per_cycle("pqd_cycle_cpu_seconds_total"), legend="mean per cycle " + PROBE_LEGEND
            ),
        ],
        unit="s",
    )


def cpu_share() -> timeseries.Panel:
    return timeseries_panel(
        "Cycle cost: CPU share",
        "CPU the probe's process trees use, averaged over time (rate of "
        "pqd_cycle_cpu_seconds_total): what probing costs the host. 100% is one core.",
        [query(probe_rate("pqd_cycle_cpu_seconds_total"))],
        unit="percentunit",
    )


def peak_rss() -> timeseries.Panel:
    return timeseries_panel(
        "Cycle cost: peak RSS",
        "Peak resident memory of the largest process of the last cycle "
        "(pqd_last_cycle_max_rss_bytes).",
        [query(probe_metric("pqd_last_cycle_max_rss_bytes"))],
        unit="bytes",
    )


def duration_and_cost_row() -> DashboardRow:
    return DashboardRow(
        "How long do cycles take, and what do they cost?",
        [
            Line(8, [cycle_duration().span(12), phase_duration().span(12)]),
            Line(8, [cpu_per_cycle().span(8), cpu_share().span(8), peak_rss().span(8)]),
        ],
    )
