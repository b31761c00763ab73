"""Every series pqd exports per probe, described once (docs/design.md §2).

:data:`PROBE_SERIES` is the one list of them: :class:`pqd.metrics.writer.PqdMetrics` reads it to
register each family, to create a new probe's series at zero (every failure reason, skip reason,
phase and queue operation, so ``rate()`` and absence alerts work from the first scrape), to set
them from a :class:`~pqd.results.CycleResult`, and to remove them all when a reload removes the
probe. A new per-probe metric is one entry here; its name, HELP text and labels are then part of
the contract with dashboards and alert rules, so never rename one.

Plain data only: nothing here imports prometheus_client or touches a registry.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from pqd.probe import ProbeConfig
from pqd.results import (
    CAUSE_STATES,
    CONTAINMENTS,
    FAILURE_CAUSES,
    FAILURE_REASONS,
    PHASES,
    WARNING_CATEGORIES,
    CycleResult,
    Headroom,
    Operations,
    measured,
)

#: Why a due cycle did not run. ``overlap``: it was due while the previous cycle of that probe was
#: still running (APScheduler's max_instances=1 skips, never queues). ``missed``: the scheduler
#: missed the run time (misfire grace exceeded, e.g. the host was suspended).
SKIP_REASONS: Final = ("overlap", "missed")

#: Queue operations timed in the workers (``pqd_queue_operation_duration_seconds{operation}``).
OPERATIONS: Final = ("put", "get")

#: Cycle and phase durations: a default cycle takes well under a second with job_pause=0 but
#: tens of seconds with the seed's 1 s pause, and a timeout can take minutes.
DURATION_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

# The HELP suffix docs/design.md §2 promises for every last-cycle gauge.
_LAST = " (value from the most recent completed cycle)"


@dataclass(frozen=True)
class ProbeFacts:
    """The few config facts metrics need; keeps the metrics independent of config.py."""

    name: str
    start_method: str
    workers: int
    queue_maxsize: int
    containment: str = "subreaper"  # one of CONTAINMENTS (docs/design.md §1a)
    # The interpreter of its runner (the probe's ``python``): sys.implementation.name and
    # sys.version's first word ("cpython", "3.13.0"); empty when it is not one (its cycles fail).
    python_implementation: str = ""
    python_version: str = ""
    shared_memory_bytes: int = 0  # the block of its shared-memory phase; 0: no such phase

    def __post_init__(self) -> None:
        # The name becomes a label value on every series; an empty one would be unreadable in
        # dashboards and collide with "label absent" in PromQL.
        if not self.name:
            raise ValueError("ProbeFacts.name must not be empty")
        if self.containment not in CONTAINMENTS:
            # A label value of pqd_probe_info: only the documented, bounded set.
            raise ValueError(f"ProbeFacts.containment must be one of {CONTAINMENTS}")


class Interpreted(Protocol):
    """What metrics need of an interpreter (pqd.supervisor.interpreter.Interpreter)."""

    @property
    def implementation(self) -> str: ...

    @property
    def version(self) -> str: ...


def probe_facts(
    probe: ProbeConfig, containment: str, interpreter: Interpreted | None
) -> ProbeFacts:
    """A probe's facts from its config, the containment in use and its runner's interpreter."""
    return ProbeFacts(
        probe.name,
        probe.start_method,
        probe.workers,
        probe.queue_maxsize,
        containment,
        interpreter.implementation if interpreter is not None else "",
        interpreter.version if interpreter is not None else "",
        probe.shared_memory_bytes,
    )


#: How a family is exposed. "untyped" is pqd_host_pid_count's (see pqd.metrics.writer._Untyped);
#: "operations" is a histogram fed with counts the workers already bucketed, so its buckets are
#: theirs (pqd.bounds.OPERATION_BUCKETS); "enum" is prometheus_client's Enum (an OpenMetrics
#: state set: its state label is named after the family), written with the index of the state.
Kind = Literal["gauge", "counter", "histogram", "untyped", "operations", "enum"]

#: One label beyond ``probe``: every value it takes (each created at zero for every probe), or
#: the one value a probe's config gives it.
LabelValues = tuple[str, ...] | Callable[[ProbeFacts], str]

#: What a completed cycle writes into one series: the values of its labels beyond ``probe``, and
#: the value (a bucketed batch for an "operations" histogram).
Reading = tuple[tuple[str, ...], float | Operations]


def _nothing(result: CycleResult) -> Iterable[Reading]:
    return ()


@dataclass(frozen=True)
class ProbeSeries:
    """One family of per-probe series: what it is called and how it is kept."""

    name: str  # a counter's without ``_total``: prometheus_client appends it
    kind: Kind
    help: str
    labels: tuple[tuple[str, LabelValues], ...] = ()  # beyond ``probe``, which comes first
    # What a completed cycle writes: a gauge is set, a counter increased, a histogram observed.
    # No reading for a series leaves it as it was (e.g. a value the cycle could not measure).
    from_cycle: Callable[[CycleResult], Iterable[Reading]] = _nothing
    # A gauge's value from the probe's config, set when the probe is added and on every reload.
    from_spec: Callable[[ProbeFacts], float] | None = None
    buckets: tuple[float, ...] = ()  # "histogram" only
    states: tuple[str, ...] = ()  # "enum" only; the first is the state of a new series
    # Each observation carries the cycle's id as an OpenMetrics exemplar (a dashboard's slow
    # point leads to /cycles/ID); each bucket keeps the exemplar of its latest observation.
    exemplar: bool = False

    @property
    def label_names(self) -> tuple[str, ...]:
        return ("probe", *(name for name, _ in self.labels))

    def label_sets(self, spec: ProbeFacts) -> list[tuple[str, ...]]:
        """Every label set of ``spec``'s probe in this family, ``probe`` first."""
        values = [v if isinstance(v, tuple) else (v(spec),) for _, v in self.labels]
        return [(spec.name, *rest) for rest in itertools.product(*values)]


def _value(read: Callable[[CycleResult], float | None]) -> Callable[[CycleResult], list[Reading]]:
    """A family without labels beyond ``probe``; a None value is "not measured": keep the
    previous value rather than export a false one."""

    def readings(result: CycleResult) -> list[Reading]:
        value = read(result)
        return [] if value is None else [((), value)]

    return readings


def _failure(result: CycleResult) -> list[Reading]:
    if result.success:
        return []
    assert result.reason is not None  # pqd.metrics.writer checks it before anything is written
    return [((result.reason,), 1)]


def _cause(result: CycleResult) -> str:
    """A failed cycle's cause; "unknown" for one that has none (built by an older runner)."""
    return "none" if result.success else (result.cause or "unknown")


def _causes(result: CycleResult) -> list[Reading]:
    return [] if result.success else [((_cause(result),), 1)]


def _warnings(result: CycleResult) -> list[Reading]:
    return [((category,), n) for category, n in result.warnings.items() if n]


def check_labels(result: CycleResult) -> None:
    """ValueError for a cause or warning category outside the documented sets (each would be
    an unbounded label value), or a negative warning count."""
    if result.cause is not None and result.cause not in FAILURE_CAUSES:
        raise ValueError(f"unknown cause: {result.cause!r}")
    unknown = set(result.warnings) - set(WARNING_CATEGORIES)
    if unknown or any(n < 0 for n in result.warnings.values()):
        raise ValueError(f"bad warning counts in result: {result.warnings!r}")


def _phases(result: CycleResult) -> list[Reading]:
    # A phase the cycle never reached is absent, and not observed.
    return [((phase,), seconds) for phase, seconds in result.phase_seconds.items()]


def _operations(result: CycleResult) -> list[Reading]:
    # Bucketed by the workers already (pqd.bounds): a cycle is a few numbers. No counts: none
    # were measured.
    return [((op,), ops) for op in OPERATIONS if (ops := result.operations(op)).counts]


# The HELP suffix of a headroom gauge (docs/design.md §2, "Headroom").
_BEGAN = " (read by the probe's runner as the most recent completed cycle began)"


def _headroom(
    name: str, help: str, read: Callable[[Headroom], float], kind: Kind = "gauge"
) -> ProbeSeries:
    """A headroom gauge; a result without headroom, or a value that could not be read (< 0),
    keeps the previous value. ``kind`` "untyped" for a name ending in ``_count`` (see
    pqd.metrics.writer._Untyped)."""

    def value(result: CycleResult) -> float | None:
        if result.headroom is None:
            return None
        number = read(result.headroom)
        return None if number < 0 else number

    return ProbeSeries(name, kind, help + _BEGAN, from_cycle=_value(value))


def _gauge(name: str, help: str, read: Callable[[CycleResult], float | None]) -> ProbeSeries:
    return ProbeSeries(name, "gauge", help, from_cycle=_value(read))


def _counter(name: str, help: str, read: Callable[[CycleResult], float | None]) -> ProbeSeries:
    return ProbeSeries(name, "counter", help, from_cycle=_value(read))


def _configured(name: str, what: str, from_spec: Callable[[ProbeFacts], float]) -> ProbeSeries:
    """A gauge of a configured value: the running configuration's, set at start-up and by
    every reload, never by a cycle. A cycle that began before a reload finishes after it with
    the old value, which would flip the gauge back until the next cycle; what a cycle used is
    on its page and in its JSON (docs/design.md §2)."""
    return ProbeSeries(name, "gauge", what + " in the running configuration", from_spec=from_spec)


#: Every per-probe family, in the order of the exposition.
PROBE_SERIES: Final = (
    ProbeSeries(
        "pqd_probe_info",
        "gauge",
        "Configuration of a probe; the value is always 1.",
        labels=(
            ("start_method", lambda spec: spec.start_method),
            ("containment", lambda spec: spec.containment),
            ("python_version", lambda spec: spec.python_version),
            ("python_implementation", lambda spec: spec.python_implementation),
        ),
        from_spec=lambda spec: 1,
    ),
    # Live gauges: PqdMetrics.observe_live sets them after each job; a completed cycle puts
    # them back to 0.
    _gauge(
        "pqd_queue_depth",
        "Items in the probe's queue now, sampled after each job (0 between cycles).",
        lambda r: 0,
    ),
    _gauge(
        "pqd_workers_live",
        "Pool worker processes alive now, sampled after each job (0 between cycles).",
        lambda r: 0,
    ),
    # Configured gauges.
    _configured("pqd_queue_capacity", "Maxsize of the probe's queue", lambda s: s.queue_maxsize),
    _configured("pqd_workers_configured", "Pool size of the probe", lambda s: s.workers),
    # Last-cycle gauges.
    _gauge(
        "pqd_last_cycle_success",
        "1 if the cycle succeeded, 0 if it failed or none has completed yet" + _LAST,
        lambda r: 1 if r.success else 0,
    ),
    _gauge(
        "pqd_last_cycle_queue_full_events",
        "Full-queue events (queue.Full from put_nowait) in the cycle" + _LAST,
        lambda r: r.queue_full_events,
    ),
    _gauge(
        "pqd_last_cycle_jobs_completed",
        "The job counter at the end of the cycle" + _LAST,
        lambda r: r.jobs_completed,
    ),
    _gauge(
        "pqd_last_cycle_queue_depth_max",
        "Deepest the probe's queue got during the cycle" + _LAST,
        lambda r: r.queue_depth_max,
    ),
    _gauge(
        "pqd_last_cycle_pid_count_delta",
        "Host pid count after the cycle minus before it" + _LAST,
        lambda r: r.measured_pid_count_delta,
    ),
    _gauge(
        "pqd_last_cycle_leaked_processes",
        "Descendant processes the cycle left behind" + _LAST,
        lambda r: r.leaked_processes,
    ),
    _gauge(
        "pqd_last_cycle_duration_seconds",
        "Wall time of the cycle in seconds" + _LAST,
        lambda r: r.duration_seconds,
    ),
    _gauge(
        "pqd_last_cycle_cpu_seconds",
        "CPU time (user + system) of the probe's whole process tree in the cycle, in seconds"
        + _LAST,
        lambda r: r.cpu_seconds,
    ),
    _gauge(
        "pqd_last_cycle_max_rss_bytes",
        "Peak resident set size of the largest process of the cycle, in bytes" + _LAST,
        lambda r: r.max_rss_bytes,
    ),
    _gauge(
        "pqd_last_cycle_timestamp_seconds",
        "Unix time the cycle ended, 0 before the first" + _LAST,
        lambda r: r.ended_at,
    ),
    # Not _LAST: this one deliberately keeps its value across failed cycles.
    _gauge(
        "pqd_last_cycle_success_timestamp_seconds",
        "Unix time the last successful cycle ended, 0 before the first"
        " (value from the most recent successful cycle)",
        lambda r: r.ended_at if r.success else None,
    ),
    ProbeSeries(
        "pqd_last_cycle_cause",
        "enum",
        "What on the host made the cycle fail; none if it succeeded" + _LAST,
        from_cycle=lambda r: [((), CAUSE_STATES.index(_cause(r)))],
        states=CAUSE_STATES,
    ),
    ProbeSeries(
        "pqd_host_pid_count",
        "untyped",
        "Host pid count sampled at the end of the cycle" + _LAST,
        from_cycle=_value(lambda r: measured(r.host_pid_count_after)),
    ),
    # Headroom gauges: where nothing limits a resource, its limit is the kernel's or host's.
    _headroom(
        "pqd_shm_size_bytes",
        "Size of /dev/shm in the probe's mount namespace in bytes, 0 if absent",
        lambda h: h.shm_size_bytes,
    ),
    _headroom(
        "pqd_shm_available_bytes",
        "Bytes of /dev/shm the probe can still write, 0 if absent, read-only or not writable",
        lambda h: h.shm_available_bytes,
    ),
    _headroom("pqd_shm_objects", "Entries in /dev/shm", lambda h: h.shm_objects),
    _configured(
        "pqd_shared_memory_bytes",
        "Size of the probe's shared-memory block in bytes, 0 without a shared-memory phase,",
        lambda s: s.shared_memory_bytes,
    ),
    _gauge(
        "pqd_last_cycle_leaked_shm_objects",
        "Named semaphores and shared-memory blocks the cycle left in /dev/shm" + _LAST,
        lambda r: r.leaked_shm_objects,
    ),
    _headroom(
        "pqd_pids_limit",
        "Tightest pids limit of the probe's cgroup ancestry, else the kernel's"
        " (min of kernel.pid_max and kernel.threads-max)",
        lambda h: h.pids_limit,
    ),
    _headroom(
        "pqd_pids_current",
        "Tasks counted against pqd_pids_limit: that cgroup's pids.current, else every task on"
        " the host",
        lambda h: h.pids_current,
    ),
    _headroom(
        "pqd_memory_limit_bytes",
        "Tightest memory limit of the probe's cgroup ancestry in bytes, else the host's MemTotal",
        lambda h: h.memory_limit_bytes,
    ),
    _headroom(
        "pqd_memory_usage_bytes",
        "Memory counted against pqd_memory_limit_bytes in bytes: that cgroup's usage, else the"
        " host's MemTotal - MemAvailable",
        lambda h: h.memory_usage_bytes,
    ),
    _headroom(
        "pqd_open_files_limit",
        "Soft RLIMIT_NOFILE of the probe's runner (fs.nr_open if unlimited)",
        lambda h: h.open_files_limit,
    ),
    _gauge(
        "pqd_last_cycle_max_open_files",
        "Most file descriptors one process of the cycle held" + _LAST,
        lambda r: r.max_open_files,
    ),
    _headroom(
        "pqd_cpu_quota_cores",
        "CPUs the probe may use: the tightest CPU quota of its cgroup ancestry, else the CPUs"
        " of its runner's affinity mask",
        lambda h: h.cpu_quota_cores,
    ),
    _headroom(
        "pqd_cpu_count",
        "Workers Pool() starts without a size in the probe's interpreter (os.process_cpu_count()"
        " from Python 3.13, os.cpu_count() before)",
        lambda h: h.cpu_count,
        "untyped",
    ),
    _headroom(
        "pqd_tmpdir_usable",
        "1 if multiprocessing's AF_UNIX sockets can be created in the probe's temp dir, else 0",
        lambda h: 1 if h.tmpdir_usable else 0,
    ),
    # Counters.
    _counter("pqd_cycles", "Cycles completed, successful or not.", lambda r: 1),
    ProbeSeries(
        "pqd_cycle_failures",
        "counter",
        "Cycles that failed, by reason.",
        labels=(("reason", FAILURE_REASONS),),
        from_cycle=_failure,
    ),
    ProbeSeries(
        "pqd_cycle_failure_causes",
        "counter",
        "Cycles that failed, by cause: what on the host made them fail (docs/design.md §1).",
        labels=(("cause", FAILURE_CAUSES),),
        from_cycle=_causes,
    ),
    ProbeSeries(
        "pqd_cycle_warnings",
        "counter",
        "Warnings raised in the probe's process tree during cycles, by category.",
        labels=(("category", WARNING_CATEGORIES),),
        from_cycle=_warnings,
    ),
    # Counted by PqdMetrics.observe_skip: a skipped cycle has no result.
    ProbeSeries(
        "pqd_cycles_skipped",
        "counter",
        "Due cycles that did not run, by reason: overlap (the previous cycle of the probe"
        " still ran) or missed (the scheduler missed the run time).",
        labels=(("reason", SKIP_REASONS),),
    ),
    _counter(
        "pqd_jobs_completed", "Producer and consumer jobs completed.", lambda r: r.jobs_completed
    ),
    _counter("pqd_jobs_failed", "Producer and consumer jobs failed.", lambda r: r.jobs_failed),
    _counter(
        "pqd_queue_full_events",
        "Full-queue events (queue.Full from put_nowait).",
        lambda r: r.queue_full_events,
    ),
    _counter(
        "pqd_cycle_cpu_seconds",
        "CPU time (user + system) of the probe's whole process tree, summed over cycles,"
        " in seconds.",
        lambda r: r.cpu_seconds,
    ),
    # Histograms.
    ProbeSeries(
        "pqd_cycle_duration_seconds",
        "histogram",
        "Wall time of cycles in seconds.",
        from_cycle=_value(lambda r: r.duration_seconds),
        buckets=DURATION_BUCKETS,
        exemplar=True,
    ),
    ProbeSeries(
        "pqd_phase_duration_seconds",
        "histogram",
        "Time spent in each phase of a cycle, in seconds.",
        labels=(("phase", PHASES),),
        from_cycle=_phases,
        buckets=DURATION_BUCKETS,
    ),
    ProbeSeries(
        "pqd_queue_operation_duration_seconds",
        "operations",
        "Duration of each queue put_nowait/get_nowait, measured in the workers, in seconds.",
        labels=(("operation", OPERATIONS),),
        from_cycle=_operations,
    ),
)
