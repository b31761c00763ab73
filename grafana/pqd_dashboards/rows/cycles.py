"""Are cycles succeeding? The last outcome, how long since a success, and why cycles fail or
are skipped."""

from __future__ import annotations

from grafana_foundation_sdk.builders import stat, statetimeline, timeseries

from pqd_dashboards.layout import DashboardRow, Line
from pqd_dashboards.panels import (
    OK_FAILED,
    RED_UNTIL_OK,
    ok_failed_timeline,
    query,
    stat_panel,
    thresholds,
    timeseries_panel,
)
from pqd_dashboards.queries import (
    PROBE_LEGEND,
    SINCE_SUCCESS,
    per_minute,
    probe_metric,
)

#: Legend of the per-reason counters (pqd_cycle_failures_total, pqd_cycles_skipped_total).
REASON_LEGEND = "{{reason}} " + PROBE_LEGEND


def last_cycle() -> stat.Panel:
    return stat_panel(
        "Last cycle",
        "pqd_last_cycle_success of the most recent completed cycle of each probe.",
        [query(probe_metric("pqd_last_cycle_success"))],
        mappings=[OK_FAILED],
        steps=thresholds(*RED_UNTIL_OK),
    )


def since_last_success() -> stat.Panel:
    return stat_panel(
        "Since last successful cycle",
        "How long ago the last successful cycle ended. Compare with the probe's interval; "
        "PqdNoSuccessfulCycle fires at 3 intervals.",
        [query(SINCE_SUCCESS)],
        unit="s",
        steps=thresholds(("green", None), ("orange", 300), ("red", 3600)),
    )


def outcome_over_time() -> statetimeline.Panel:
    return ok_failed_timeline(
        "Cycle outcome over time",
        "pqd_last_cycle_success as Prometheus scraped it: red stretches are failed last cycles.",
        [query(probe_metric("pqd_last_cycle_success"))],
    )


def failures_by_reason() -> timeseries.Panel:
    # The reasons are spelled out: tests/ops checks the text names every one of them.
    return timeseries_panel(
        "Failures per minute by reason",
        "Why cycles fail (pqd_cycle_failures_total). timeout, worker_died, manager_died, "
        "spawn_failed, job_error, leak, helper_died (the probe's forkserver or resource tracker "
        "died or stopped answering).",
        [
            query(
                per_minute("pqd_cycle_failures_total", by="instance, probe, reason"),
                legend=REASON_LEGEND,
            )
        ],
        unit="cpm",
    )


def failures_by_cause() -> timeseries.Panel:
    # The causes are spelled out, as the reasons are (docs/design.md §1, "Causes").
    return timeseries_panel(
        "Failures per minute by cause",
        "What on the host made cycles fail (pqd_cycle_failure_causes_total): shm_full, "
        "shm_unavailable, semaphore_removed, process_limit, open_files_limit, memory_limit, "
        "tmpdir_unusable, unpicklable, crashed, killed, stopped, uninterruptible, unknown. "
        "The runbook has a section for each; the failed cycle's page has the sentence.",
        [
            query(
                per_minute("pqd_cycle_failure_causes_total", by="instance, probe, cause"),
                legend="{{cause}} " + PROBE_LEGEND,
            )
        ],
        unit="cpm",
    )


def last_cause() -> stat.Panel:
    return stat_panel(
        "Cause of the last cycle",
        "pqd_last_cycle_cause: none after a successful cycle, else what on the host made the "
        "last cycle fail.",
        [
            query(
                f"{probe_metric('pqd_last_cycle_cause')} == 1",
                legend="{{pqd_last_cycle_cause}} " + PROBE_LEGEND,
            )
        ],
    )


def skips_by_reason() -> timeseries.Panel:
    return timeseries_panel(
        "Skipped cycles per minute by reason",
        "overlap: a cycle was due while the previous one still ran; missed: the scheduler was "
        "too late to run it.",
        [
            query(
                per_minute("pqd_cycles_skipped_total", by="instance, probe, reason"),
                legend=REASON_LEGEND,
            )
        ],
        unit="cpm",
    )


def cycles_and_jobs() -> timeseries.Panel:
    return timeseries_panel(
        "Cycles and jobs per minute",
        "Cycles run, producer/consumer jobs completed and failed.",
        [
            query(per_minute("pqd_cycles_total"), legend="cycles " + PROBE_LEGEND),
            query(per_minute("pqd_jobs_completed_total"), legend="jobs completed " + PROBE_LEGEND),
            query(per_minute("pqd_jobs_failed_total"), legend="jobs failed " + PROBE_LEGEND),
        ],
        unit="cpm",
    )


def jobs_in_last_cycle() -> timeseries.Panel:
    return timeseries_panel(
        "Jobs completed in the last cycle",
        "The job counter at the end of the last cycle: 2 x rounds when every job finished (10 "
        "for the seed's probe).",
        [query(probe_metric("pqd_last_cycle_jobs_completed"))],
        decimals=0,
    )


def cycles_row() -> DashboardRow:
    return DashboardRow(
        "Are cycles succeeding?",
        [
            Line(
                5,
                [last_cycle().span(6), since_last_success().span(6), outcome_over_time().span(12)],
            ),
            Line(8, [failures_by_reason().span(12), skips_by_reason().span(12)]),
            Line(8, [failures_by_cause().span(16), last_cause().span(8)]),
            Line(8, [cycles_and_jobs().span(12), jobs_in_last_cycle().span(12)]),
        ],
    )
