"""Plain, immutable data passed between layers: config -> cycle -> CycleResult -> metrics/history.

Nothing here imports multiprocessing, psutil or prometheus_client, so every layer can use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

JobKind = Literal["producer", "consumer"]

#: Every reason a cycle can fail with (design §1). Metrics pre-initialise all of them.
FAILURE_REASONS: Final = (
    "timeout",
    "worker_died",
    "manager_died",
    "spawn_failed",
    "job_error",
    "leak",
    "helper_died",
)

#: How a probe's process tree is contained (design §1a, ``pqd_probe_info{containment}``).
CONTAINMENTS: Final = ("cgroup", "subreaper")

#: Phases timed inside a cycle (design §2, ``pqd_phase_duration_seconds{phase}``).
PHASES: Final = ("pool_start", "jobs", "teardown")


@dataclass(frozen=True)
class JobReport:
    """What one producer or consumer job did, as the worker reported it plus the parent's sample."""

    kind: JobKind
    round: int
    pid: int
    process_name: str
    is_alive: bool
    parent_pid: int
    host_pid_count: int
    started_at: float  # Unix time, taken in the worker
    items: tuple[str, ...]  # items put (producer) or got (consumer), in order
    full_events: int  # queue.Full raised by put_nowait (producer only)
    operation_seconds: tuple[float, ...]  # one duration per put_nowait/get_nowait, in the worker
    error: str | None  # repr of what the job raised, None if it returned normally
    job_counter: int  # jobs finished in this cycle once this one had (the seed's count(N))
    queue_depth_after: int  # parent's sample after the job; -1 if it could not be taken
    workers_live_after: int  # parent's sample after the job


@dataclass(frozen=True)
class LiveSample:
    """What the parent sampled after each job; the metrics writer turns it into live gauges."""

    probe: str
    queue_depth: int
    workers_live: int


@dataclass(frozen=True)
class HelperProcess:
    """A long-lived multiprocessing helper (forkserver, resource tracker) first seen in a cycle."""

    pid: int
    role: str  # "forkserver" or "resource_tracker"


@dataclass(frozen=True)
class CycleResult:
    """Everything one cycle of one probe saw. Plain data; the cycle never touches Prometheus."""

    probe: str
    cycle_id: str
    start_method: str
    workers_configured: int
    queue_capacity: int
    rounds: int
    items_per_producer: int
    main_pid: int
    main_process_name: str
    started_at: float  # Unix time
    ended_at: float  # Unix time
    duration_seconds: float
    success: bool
    reason: str | None  # one of FAILURE_REASONS when success is False
    detail: str  # one human line: what went wrong, or "ok"
    jobs_completed: int
    jobs_failed: int
    queue_full_events: int
    items_put: int
    items_got: int
    queue_depth_max: int
    host_pid_count_before: int
    host_pid_count_during: int  # -1 if the cycle never got that far
    host_pid_count_after: int
    leaked_processes: int
    leaked_pids: tuple[int, ...]
    helpers_started: tuple[HelperProcess, ...]
    phase_seconds: dict[str, float]  # keys from PHASES; a phase never reached is absent
    jobs: tuple[JobReport, ...]
    # Added with the per-probe runner (design §1a); defaults keep hand-built results short.
    containment: str = "subreaper"  # one of CONTAINMENTS
    cpu_seconds: float | None = None  # user + system CPU of the probe's whole tree in the cycle
    max_rss_bytes: int | None = None  # peak RSS of the largest process of the cycle
    leaked_commands: tuple[str, ...] = ()  # command line of each of leaked_pids, same order

    @property
    def pid_count_delta(self) -> int:
        return self.host_pid_count_after - self.host_pid_count_before

    def operation_seconds(self, operation: Literal["put", "get"]) -> tuple[float, ...]:
        kind = "producer" if operation == "put" else "consumer"
        return tuple(s for job in self.jobs if job.kind == kind for s in job.operation_seconds)


def result_to_dict(result: CycleResult) -> dict[str, Any]:
    """Plain JSON-able data; the runner sends it to pqd, ``pqd once --json`` prints it."""
    return dataclasses.asdict(result)


def job_report_from_dict(data: Mapping[str, Any]) -> JobReport:
    fields = dict(data)
    fields["items"] = tuple(fields["items"])
    fields["operation_seconds"] = tuple(fields["operation_seconds"])
    return JobReport(**fields)


def result_from_dict(data: Mapping[str, Any]) -> CycleResult:
    """The inverse of result_to_dict. Raises (TypeError, KeyError, ValueError) on other data."""
    fields = dict(data)
    fields["jobs"] = tuple(job_report_from_dict(j) for j in fields["jobs"])
    fields["helpers_started"] = tuple(HelperProcess(**h) for h in fields["helpers_started"])
    fields["leaked_pids"] = tuple(fields["leaked_pids"])
    fields["leaked_commands"] = tuple(fields.get("leaked_commands", ()))
    fields["phase_seconds"] = dict(fields["phase_seconds"])
    return CycleResult(**fields)
