"""Plain, immutable data passed between layers: config -> cycle -> CycleResult -> metrics/history.

Nothing here imports multiprocessing, psutil or prometheus_client, so every layer can use it.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict

from pqd.bounds import TRACE_JOBS
from pqd.probe import ProbeConfig

JobKind = Literal["producer", "consumer"]

#: Every reason a cycle can fail with (docs/design.md §1). Metrics pre-initialise all of them.
FAILURE_REASONS: Final = (
    "timeout",
    "worker_died",
    "manager_died",
    "spawn_failed",
    "job_error",
    "leak",
    "helper_died",
)

#: What on the host made a cycle fail, beside its reason (docs/design.md §1, "Causes"): a closed
#: set, every one pre-initialised in ``pqd_cycle_failure_causes_total``.
FAILURE_CAUSES: Final = (
    "shm_full",
    "shm_unavailable",
    "semaphore_removed",
    "process_limit",
    "open_files_limit",
    "memory_limit",
    "tmpdir_unusable",
    "unpicklable",
    "crashed",
    "killed",
    "stopped",
    "uninterruptible",
    "unknown",
)

#: ``pqd_last_cycle_cause``'s states: ``none`` after a successful cycle (and before the first).
CAUSE_STATES: Final = ("none", *FAILURE_CAUSES)

#: Warnings raised in a probe's tree during a cycle, by category (docs/design.md §2,
#: ``pqd_cycle_warnings_total{category}``), classified from the tree's stderr.
WARNING_CATEGORIES: Final = (
    "leaked_objects",
    "tracker_relaunched",
    "fork_with_threads",
    "resource_warning",
    "semaphore_removed",
    "other",
)

#: How a probe's process tree is contained (docs/design.md §1a, ``pqd_probe_info{containment}``).
CONTAINMENTS: Final = ("cgroup", "subreaper")

#: Phases timed inside a cycle (docs/design.md §2, ``pqd_phase_duration_seconds{phase}``).
PHASES: Final = ("pool_start", "jobs", "shared_memory", "teardown")


#: A count that was not taken: the runner had not reported it yet, or /proc could not be read.
#: Never exported as a number (docs/design.md §2): see :func:`measured`.
NOT_MEASURED: Final = -1


def measured(count: int) -> int | None:
    """``count``, or None for the NOT_MEASURED placeholder (any negative count: none can be)."""
    return None if count < 0 else count


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
    items: tuple[str, ...]  # the first items put (producer) or got (consumer), at most TRACE_ITEMS
    item_count: int  # every item put or got
    full_events: int  # queue.Full raised by put_nowait (producer only)
    # put_nowait/get_nowait durations measured in the worker: counts per OPERATION_BUCKETS bucket
    # (+Inf last) and their sum, so a job of a million operations is a few numbers.
    operation_counts: tuple[int, ...]
    operation_total: float
    error: str | None  # repr of what the job raised, None if it returned normally
    job_counter: int  # jobs finished in this cycle once this one had (the seed's count(N))
    queue_depth_after: int  # parent's sample after the job; -1 if it could not be taken
    workers_live_after: int  # parent's sample after the job


@dataclass(frozen=True)
class Operations:
    """Queue operation durations of a cycle: counts per OPERATION_BUCKETS bucket, +Inf last."""

    counts: tuple[int, ...] = ()
    total: float = 0.0

    def add(self, counts: tuple[int, ...], total: float) -> Operations:
        if not self.counts:
            return Operations(tuple(counts), total)
        if len(counts) != len(self.counts):  # zip(strict=True) is 3.10+: the runner runs on 3.9
            raise ValueError(f"{len(counts)} bucket counts added to {len(self.counts)}")
        return Operations(tuple(a + b for a, b in zip(self.counts, counts)), self.total + total)


class JobLedger:
    """Every job of a cycle counted; the first and the last TRACE_JOBS // 2 reports kept. The
    runner and pqd each keep one, so neither holds more than that whatever the probe's size."""

    def __init__(self) -> None:
        self.first: list[JobReport] = []
        self.last: deque[JobReport] = deque(maxlen=TRACE_JOBS // 2)
        self.count = 0
        self.full_events = 0
        self.items_put = 0
        self.items_got = 0
        self.depth_max = 0
        self.put = Operations()
        self.get = Operations()

    def add(self, report: JobReport) -> None:
        if len(self.first) < TRACE_JOBS // 2:
            self.first.append(report)
        else:
            self.last.append(report)
        self.count += 1
        self.full_events += report.full_events
        self.depth_max = max(self.depth_max, report.queue_depth_after)
        if report.kind == "producer":
            self.items_put += report.item_count
            self.put = self.put.add(report.operation_counts, report.operation_total)
        else:
            self.items_got += report.item_count
            self.get = self.get.add(report.operation_counts, report.operation_total)

    def kept(self) -> tuple[JobReport, ...]:
        return (*self.first, *self.last)

    @property
    def not_kept(self) -> int:
        return self.count - len(self.first) - len(self.last)


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


#: Roles of the processes in a probe's tree, as "Where it was stuck" names them. A pool worker
#: is "pool worker N" (N from 1, in the pool's start order).
PROCESS_ROLES: Final = (
    "runner",
    "Manager",
    "pool worker",
    "forkserver",
    "resource_tracker",
    "other",
)


@dataclass(frozen=True)
class StuckProcess:
    """One live process of a failed cycle's tree, captured just before pqd killed it."""

    pid: int
    role: str  # from PROCESS_ROLES; "pool worker 2" for the second worker
    state: str  # /proc state letter: R, S, D, T, t, Z (or "?" if it could not be read)
    wchan: str  # kernel function it waits in ("" when running or unknown)
    # faulthandler's dump of every thread ("Thread 0x... (most recent call first):" blocks),
    # or None if the process could not answer; ``note`` then says why.
    stack: str | None
    note: str = ""


@dataclass(frozen=True)
class Headroom:
    """The probe's room in each resource multiprocessing needs, as its runner sees it when a
    cycle begins (docs/design.md §2, "Headroom"). Where nothing limits a resource its limit is
    the kernel's or the host's, never a magic number; ``*_source`` says which it is."""

    shm_size_bytes: int  # statvfs("/dev/shm"); 0 when it is absent
    shm_available_bytes: int  # what an unprivileged writer may still use; 0 absent/read-only
    shm_objects: int  # entries in /dev/shm
    pids_limit: int  # tightest pids.max of the cgroup ancestry, else the kernel's
    pids_current: int  # that cgroup's pids.current, else every task on the host
    pids_source: str  # "cgroup v1 DIR", "cgroup v2 DIR" or "kernel"
    memory_limit_bytes: int  # tightest memory limit of the ancestry, else the host's memory
    memory_usage_bytes: int  # that cgroup's usage, else the host's MemTotal - MemAvailable
    memory_source: str  # "cgroup v1 DIR", "cgroup v2 DIR" or "host"
    open_files_limit: int  # soft RLIMIT_NOFILE; unlimited reads as the kernel's fs.nr_open
    cpu_quota_cores: float  # tightest CPU quota of the ancestry, else the runner's CPUs
    cpu_source: str  # "cgroup v1 DIR", "cgroup v2 DIR" or "affinity"
    cpu_count: int  # what Pool() with no size would start, in the probe's interpreter
    tmpdir_usable: bool  # an AF_UNIX socket of multiprocessing's length binds in the temp dir
    tmpdir: str  # the temp dir multiprocessing would use
    tmpdir_problem: str  # why it is not usable ("" if it is)
    read_seconds: float  # what reading all of this took


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
    # Added with the per-probe runner (docs/design.md §1a); defaults keep hand-built results short.
    containment: str = "subreaper"  # one of CONTAINMENTS
    cpu_seconds: float | None = None  # user + system CPU of the probe's whole tree in the cycle
    max_rss_bytes: int | None = None  # peak RSS of the largest process of the cycle
    leaked_commands: tuple[str, ...] = ()  # command line of each of leaked_pids, same order
    # Memory stays bounded whatever the probe's size (pqd.bounds): ``jobs`` keeps the first and
    # the last TRACE_JOBS // 2 reports, and the totals above and below count every job.
    jobs_not_kept: int = 0
    put_operations: Operations = Operations()
    get_operations: Operations = Operations()
    # "Where it was stuck": every live process of the tree just before a failed cycle's tree was
    # killed (empty for successes), and, for job_error, the worker's traceback as text.
    stuck: tuple[StuckProcess, ...] = ()
    job_traceback: str | None = None
    # Headroom (docs/design.md §2): read as the cycle began; None if the runner sent none.
    headroom: Headroom | None = None
    # Named semaphores and shared-memory blocks the cycle left in /dev/shm, and the most file
    # descriptors one process of the tree held; None when not measured.
    leaked_shm_objects: int | None = None
    max_open_files: int | None = None
    # What on the host made a failed cycle fail (one of FAILURE_CAUSES, None for a success) and
    # one sentence naming the resource and the number (docs/design.md §1, "Causes").
    cause: str | None = None
    cause_detail: str = ""
    # What the tree wrote to stderr during the cycle, bounded (pqd.bounds), and how many bytes it
    # wrote in all; the warnings in it, counted by WARNING_CATEGORIES.
    stderr: str = ""
    stderr_bytes: int = 0
    warnings: dict[str, int] = dataclasses.field(default_factory=dict)
    shared_memory_bytes: int = 0  # the probe's shared-memory block; 0: no such phase
    # The interpreter the runner ran under (the probe's ``python``): sys.implementation.name and
    # sys.version's first word; empty when no runner started.
    python_implementation: str = ""
    python_version: str = ""

    @property
    def pid_count_delta(self) -> int:
        """After minus before as plain arithmetic, placeholders included; what is exported
        (metrics, JSON, logs) is :attr:`measured_pid_count_delta`."""
        return self.host_pid_count_after - self.host_pid_count_before

    @property
    def measured_pid_count_delta(self) -> int | None:
        """After minus before, or None when either count was not measured: a cycle pqd ended
        before its runner reported the start keeps ``host_pid_count_before`` at -1, and
        subtracting it gave about the host's whole pid count (docs/design.md §2)."""
        before, after = measured(self.host_pid_count_before), measured(self.host_pid_count_after)
        return None if before is None or after is None else after - before

    def operations(self, operation: Literal["put", "get"]) -> Operations:
        return self.put_operations if operation == "put" else self.get_operations


class SettingsAndJobs(TypedDict):
    """The fields of a CycleResult that come from its probe's settings and its JobLedger."""

    probe: str
    start_method: str
    workers_configured: int
    queue_capacity: int
    rounds: int
    items_per_producer: int
    shared_memory_bytes: int
    queue_full_events: int
    items_put: int
    items_got: int
    queue_depth_max: int
    jobs: tuple[JobReport, ...]
    jobs_not_kept: int
    put_operations: Operations
    get_operations: Operations


def settings_and_jobs(probe: ProbeConfig, ledger: JobLedger) -> SettingsAndJobs:
    """For ``CycleResult(**settings_and_jobs(probe, ledger), ...)``, by the runner's cycle and by
    pqd for a cycle it had to end itself."""
    return SettingsAndJobs(
        probe=probe.name,
        start_method=probe.start_method,
        workers_configured=probe.workers,
        queue_capacity=probe.queue_maxsize,
        rounds=probe.rounds,
        items_per_producer=probe.items_per_producer,
        shared_memory_bytes=probe.shared_memory_bytes,
        queue_full_events=ledger.full_events,
        items_put=ledger.items_put,
        items_got=ledger.items_got,
        queue_depth_max=ledger.depth_max,
        jobs=ledger.kept(),
        jobs_not_kept=ledger.not_kept,
        put_operations=ledger.put,
        get_operations=ledger.get,
    )


def result_to_dict(result: CycleResult) -> dict[str, Any]:
    """Plain JSON-able data; the runner sends it to pqd, ``pqd once --json`` prints it."""
    return dataclasses.asdict(result)


#: The counts of a CycleResult and of each of its JobReports that may be NOT_MEASURED.
_COUNTS: Final = ("host_pid_count_before", "host_pid_count_during", "host_pid_count_after")
_JOB_COUNTS: Final = ("host_pid_count", "queue_depth_after")


def result_to_json(result: CycleResult) -> dict[str, Any]:
    """What ``pqd once --json`` prints: :func:`result_to_dict` with ``pid_count_delta``, and
    every count that was not measured as null rather than its -1 placeholder (docs/design.md
    §2). Not read back: the runner sends result_to_dict's data."""
    data = result_to_dict(result)
    for name in _COUNTS:
        data[name] = measured(data[name])
    for job in data["jobs"]:
        for name in _JOB_COUNTS:
            job[name] = measured(job[name])
    data["pid_count_delta"] = result.measured_pid_count_delta
    return data


def job_report_from_dict(data: Mapping[str, Any]) -> JobReport:
    fields = dict(data)
    fields["items"] = tuple(fields["items"])
    fields["operation_counts"] = tuple(fields["operation_counts"])
    return JobReport(**fields)


def result_from_dict(data: Mapping[str, Any]) -> CycleResult:
    """The inverse of result_to_dict. Raises (TypeError, KeyError, ValueError) on other data."""
    fields = dict(data)
    fields["jobs"] = tuple(job_report_from_dict(j) for j in fields["jobs"])
    fields["helpers_started"] = tuple(HelperProcess(**h) for h in fields["helpers_started"])
    fields["leaked_pids"] = tuple(fields["leaked_pids"])
    fields["leaked_commands"] = tuple(fields.get("leaked_commands", ()))
    fields["phase_seconds"] = dict(fields["phase_seconds"])
    fields["warnings"] = {str(k): int(v) for k, v in dict(fields.get("warnings") or {}).items()}
    fields["stuck"] = tuple(StuckProcess(**p) for p in fields.get("stuck", ()))
    if fields.get("headroom") is not None:
        fields["headroom"] = Headroom(**fields["headroom"])
    for name in ("put_operations", "get_operations"):
        raw = fields.get(name) or {}
        fields[name] = Operations(tuple(raw.get("counts", ())), float(raw.get("total", 0.0)))
    return CycleResult(**fields)
