"""Plain, immutable data passed between layers: config -> cycle -> CycleResult -> metrics/history.

Nothing here imports multiprocessing, psutil or prometheus_client, so every layer can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

JobKind = Literal["producer", "consumer"]

#: Every reason a cycle can fail with (design §1). Metrics pre-initialise all of them.
FAILURE_REASONS: Final = (
    "timeout",
    "worker_died",
    "manager_died",
    "spawn_failed",
    "job_error",
    "leak",
)

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

    @property
    def pid_count_delta(self) -> int:
        return self.host_pid_count_after - self.host_pid_count_before

    def operation_seconds(self, operation: Literal["put", "get"]) -> tuple[float, ...]:
        kind = "producer" if operation == "put" else "consumer"
        return tuple(s for job in self.jobs if job.kind == kind for s in job.operation_seconds)
