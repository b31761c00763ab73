"""A CycleResult built by hand, for unit tests that need plain data and no processes."""

from __future__ import annotations

from typing import Any

from pqd.results import CycleResult, JobLedger, JobReport
from pqd.workers import Tally


def tallied(seconds: tuple[float, ...]) -> dict[str, Any]:
    """JobReport fields for queue operations that took ``seconds``, bucketed as a worker does."""
    tally = Tally()
    for value in seconds:
        tally.operation(value)
    return {
        "operation_counts": tuple(tally.operation_counts),
        "operation_total": tally.operation_total,
    }


def seed_shaped_result(**overrides: Any) -> CycleResult:
    """A successful cycle of the default probe as the seed runs it (10 jobs, 10 full events,
    max depth 3, nothing leaked); ``overrides`` replace any field."""
    fields: dict[str, Any] = dict(
        probe="default",
        cycle_id="c-0001",
        start_method="forkserver",
        workers_configured=4,
        queue_capacity=3,
        rounds=5,
        items_per_producer=5,
        main_pid=999,
        main_process_name="MainProcess",
        started_at=0.0,
        ended_at=0.0,
        duration_seconds=0.0,
        success=True,
        reason=None,
        detail="ok",
        jobs_completed=10,
        jobs_failed=0,
        queue_full_events=10,
        items_put=15,
        items_got=15,
        queue_depth_max=3,
        host_pid_count_before=200,
        host_pid_count_during=206,
        host_pid_count_after=200,
        leaked_processes=0,
        leaked_pids=(),
        helpers_started=(),
        phase_seconds={"pool_start": 0.125, "jobs": 0.5, "teardown": 0.25},
        jobs=(),
    )
    fields.update(overrides)
    # Operation totals follow the jobs, as the runner's ledger makes them.
    ledger = JobLedger()
    for report in fields["jobs"]:
        assert isinstance(report, JobReport)
        ledger.add(report)
    fields.setdefault("put_operations", ledger.put)
    fields.setdefault("get_operations", ledger.get)
    return CycleResult(**fields)
