"""A CycleResult built by hand, for unit tests that need plain data and no processes."""

from __future__ import annotations

from typing import Any

from pqd.results import CycleResult, Headroom, JobLedger, JobReport
from pqd.runner.jobs import Tally


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


START = 1_700_000_000.0


PUT_SECONDS = 2.0**-16  # 1.52587890625e-05: exact in binary, lands in le="2.5e-05"


GET_SECONDS = 2.0**-12  # 0.000244140625: exact in binary, lands in le="0.00025"


def job(
    kind: str,
    rnd: int,
    counter: int,
    *,
    operation_seconds: tuple[float, ...] | None = None,
    **overrides: Any,
) -> JobReport:
    """One job of the seed's shape: a producer puts A..E into a queue of 3 (2 x Full), a consumer
    gets the 3 that fit."""
    producer = kind == "producer"
    fields: dict[str, Any] = dict(
        kind=kind,
        round=rnd,
        pid=1000 + counter,
        process_name=f"ForkServerPoolWorker-{counter}",
        is_alive=True,
        parent_pid=999,
        host_pid_count=206,
        started_at=START + counter,
        items=("A", "B", "C"),
        item_count=3,
        full_events=2 if producer else 0,
        **tallied(
            operation_seconds
            if operation_seconds is not None
            else (PUT_SECONDS,) * 5
            if producer
            else (GET_SECONDS,) * 3
        ),
        error=None,
        job_counter=counter,
        queue_depth_after=3 if producer else 0,
        workers_live_after=4,
    )
    fields.update(overrides)
    return JobReport(**fields)


def seed_jobs(rounds: int = 5) -> tuple[JobReport, ...]:
    jobs = []
    for rnd in range(1, rounds + 1):
        jobs.append(job("producer", rnd, 2 * rnd - 1))
        jobs.append(job("consumer", rnd, 2 * rnd))
    return tuple(jobs)


def tight_headroom(**overrides: Any) -> Headroom:
    """A probe close to every limit ("pids 1,950 of 2,048", "/dev/shm 3 MB free of 64");
    ``overrides`` replace any field."""
    fields: dict[str, Any] = dict(
        shm_size_bytes=64 << 20,
        shm_available_bytes=3 << 20,
        shm_objects=12,
        pids_limit=2048,
        pids_current=1950,
        pids_source="cgroup v2 /sys/fs/cgroup/app",
        memory_limit_bytes=1 << 30,
        memory_usage_bytes=900 << 20,
        memory_source="cgroup v1 /sys/fs/cgroup/memory/app",
        open_files_limit=1024,
        cpu_quota_cores=0.5,
        cpu_source="cgroup v1 /sys/fs/cgroup/cpu/app",
        cpu_count=20,
        tmpdir_usable=False,
        tmpdir="/tmp/" + "x" * 80,
        tmpdir_problem="binding 117-character socket path: AF_UNIX path too long",
        read_seconds=0.001,
    )
    fields.update(overrides)
    return Headroom(**fields)
