"""The one writer of pqd's Prometheus metrics (design §2).

Only the daemon's parent process calls this module: cycles and workers return plain data
(:mod:`pqd.results`) and this class turns it into metrics on a registry passed in by the caller.
Nothing is created at import time and the global ``REGISTRY`` is never touched, so every test and
every ``pqd once --textfile`` run gets its own, independent registry.

Metric names are a contract with dashboards and alert rules: never rename one.
"""

from __future__ import annotations

import math
import platform
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    write_to_textfile,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import HistogramMetricFamily, Metric, UnknownMetricFamily
from prometheus_client.utils import floatToGoString as _untyped_float_to_go_string

from pqd.bounds import OPERATION_BUCKETS as OPERATION_BUCKETS  # bucketed by the workers
from pqd.results import CONTAINMENTS, FAILURE_REASONS, PHASES, CycleResult, LiveSample

#: Why a due cycle did not run. ``overlap``: it was due while the previous cycle of that probe was
#: still running (APScheduler's max_instances=1 skips, never queues). ``missed``: the scheduler
#: missed the run time (misfire grace exceeded, e.g. the host was suspended).
SKIP_REASONS: Final = ("overlap", "missed")

#: Queue operations timed in the workers (``pqd_queue_operation_duration_seconds{operation}``).
OPERATIONS: Final = ("put", "get")

#: Cycle and phase durations: a default cycle takes well under a second with job_pause=0 but
#: tens of seconds with the seed's 1 s pause, and a timeout can take minutes.
DURATION_BUCKETS: Final = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


# The HELP suffix design §2 promises for every last-cycle gauge.
_LAST = " (value from the most recent completed cycle)"

# Families that describe the exporting process itself. They are dropped from textfiles: a
# `pqd once` process has exited by the time node_exporter reads the file, and node_exporter
# exports process_* series of its own, which the textfile's would collide with.
_RUNTIME_PREFIXES: Final = ("process_", "python_")

# OpenMetrics' limit on the characters of an exemplar's label names and values together.
_EXEMPLAR_MAX_CHARS: Final = 128

# prometheus_client's own "le" formatter, so our bucket labels match its Histogram's exactly. It
# is unannotated; binding it to a typed name keeps mypy --strict honest about our calls.
_float_to_go_string: Callable[[float], str] = _untyped_float_to_go_string


@dataclass(frozen=True)
class ProbeSpec:
    """The few config facts metrics need; keeps this module independent of config.py."""

    name: str
    start_method: str
    workers: int
    queue_maxsize: int
    containment: str = "subreaper"  # one of CONTAINMENTS (design §1a)

    def __post_init__(self) -> None:
        # The name becomes a label value on every series; an empty one would be unreadable in
        # dashboards and collide with "label absent" in PromQL.
        if not self.name:
            raise ValueError("ProbeSpec.name must not be empty")
        if self.containment not in CONTAINMENTS:
            # A label value of pqd_probe_info: only the documented, bounded set.
            raise ValueError(f"ProbeSpec.containment must be one of {CONTAINMENTS}")


@dataclass(frozen=True)
class _Batch:
    """Observations already sorted into histogram buckets (non-cumulative counts, +Inf last)."""

    counts: tuple[int, ...]
    total: float


class _Series:
    """Mutable state of one label set of a _BatchHistogram; only touched under its lock."""

    __slots__ = ("counts", "total")

    def __init__(self, n_buckets: int) -> None:
        self.counts = [0] * n_buckets
        self.total = 0.0


class _BatchHistogram:
    """A labelled histogram that takes a whole batch of observations at once.

    prometheus_client's Histogram has no public batch API, and ``observe()`` per value (two
    locked increments plus a linear scan of the bounds) measured 120-220 ms per 100,000 values
    on the 2-CPU dev machine: a probe with items_per_producer=1,000,000 would spend seconds in
    it. Bucketing with bisect in a plain loop measured 13-20 ms per 100,000 values (about 10x
    less), and the lock is then taken once per batch, not once per value. The exposition is
    the same as a Histogram's (checked in tests) except that no ``_created`` series is emitted.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._labelnames = tuple(labelnames)
        self._bounds = tuple(float(b) for b in buckets)
        if list(self._bounds) != sorted(self._bounds):
            raise ValueError("buckets not in sorted order")
        # Rendered once: the same strings prometheus_client writes for its own histograms.
        self._les = (*(_float_to_go_string(b) for b in self._bounds), "+Inf")
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], _Series] = {}
        registry.register(self)

    def bucket(self, values: Sequence[float]) -> _Batch:
        """Sort values into buckets without taking the lock (it is the expensive part)."""
        counts = [0] * (len(self._bounds) + 1)
        bounds = self._bounds
        # bisect_left gives the first bound >= value, i.e. Prometheus' inclusive "le".
        for value in values:
            counts[bisect_left(bounds, value)] += 1
        return _Batch(tuple(counts), float(sum(values)))

    def add(self, labelvalues: tuple[str, ...], batch: _Batch) -> None:
        with self._lock:
            series = self._series.get(labelvalues)
            if series is None:
                series = self._series[labelvalues] = _Series(len(self._les))
            for i, n in enumerate(batch.counts):
                series.counts[i] += n
            series.total += batch.total

    def init(self, labelvalues: tuple[str, ...]) -> None:
        """Create a series at zero, so it exists before the first observation."""
        self.add(labelvalues, _Batch((), 0.0))

    def remove(self, labelvalues: tuple[str, ...]) -> None:
        with self._lock:
            self._series.pop(labelvalues, None)

    def describe(self) -> Iterable[Metric]:
        # Lets the registry detect name clashes at register() time without collecting.
        return [HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)]

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            snapshot = [(lv, list(s.counts), s.total) for lv, s in self._series.items()]
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)
        for labelvalues, counts, total in snapshot:
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for le, n in zip(self._les, counts, strict=True):
                cumulative += n
                buckets.append((le, cumulative))
            family.add_metric(list(labelvalues), buckets, total)
        return [family]


class _UntypedPerProbe:
    """A per-probe value exposed with TYPE untyped; used only for ``pqd_host_pid_count``.

    Design §2 fixes that name and also requires ``promtool check metrics`` to print nothing, but
    promtool's linter rejects any gauge or counter whose name ends in ``_count`` ("non-histogram
    and non-summary metrics should not have _count suffix"); it skips untyped families. PromQL
    treats an untyped sample exactly like a gauge, so only the TYPE metadata differs.
    """

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._lock = threading.Lock()
        self._values: dict[str, float] = {}  # probe -> value, guarded by self._lock
        registry.register(self)

    def set(self, probe: str, value: float) -> None:
        with self._lock:
            self._values[probe] = float(value)

    def remove(self, probe: str) -> None:
        with self._lock:
            self._values.pop(probe, None)

    def describe(self) -> Iterable[Metric]:
        return [UnknownMetricFamily(self._name, self._documentation, labels=("probe",))]

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            snapshot = list(self._values.items())
        family = UnknownMetricFamily(self._name, self._documentation, labels=("probe",))
        for probe, value in snapshot:
            family.add_metric([probe], value)
        return [family]


class PqdMetrics:
    """Every metric of design §2, registered on ``registry``, fed from plain results.

    Thread-safety: the observe_* methods run in scheduler threads while the HTTP server
    collects. Each metric object has its own lock; ``self._lock`` additionally serialises
    writers against set_probes(), so a cycle of a probe that a reload just removed cannot
    re-create that probe's series after they were removed. Scrapes never take ``self._lock``.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        version: str,
        probes: Sequence[ProbeSpec],
        clock: Callable[[], float] = time.time,  # injectable so tests get exact timestamps
        process_collectors: bool = True,
    ) -> None:
        """``process_collectors=False`` leaves out the process_*/python_* collectors, for a
        registry that only feeds a textfile (they would describe a process that has exited)."""
        if process_collectors:
            # On the caller's registry, never on the global one.
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

        def gauge(name: str, doc: str, labels: Sequence[str] = ("probe",)) -> Gauge:
            return Gauge(name, doc, labelnames=labels, registry=registry)

        def counter(name: str, doc: str, labels: Sequence[str] = ("probe",)) -> Counter:
            # Named without _total: prometheus_client appends it.
            return Counter(name, doc, labelnames=labels, registry=registry)

        self._build_info = gauge(
            "pqd_build_info",
            "pqd build information; the value is always 1.",
            ("version", "python_version"),
        )
        self._probe_info = gauge(
            "pqd_probe_info",
            "Configuration of a probe; the value is always 1.",
            ("probe", "start_method", "containment"),
        )

        # Live gauges.
        self._queue_depth = gauge(
            "pqd_queue_depth",
            "Items in the probe's queue now, sampled after each job (0 between cycles).",
        )
        self._workers_live = gauge(
            "pqd_workers_live",
            "Pool worker processes alive now, sampled after each job (0 between cycles).",
        )

        # Last-cycle gauges.
        self._queue_capacity = gauge(
            "pqd_queue_capacity",
            "Maxsize of the probe's queue; the configured value until a cycle completes" + _LAST,
        )
        self._workers_configured = gauge(
            "pqd_workers_configured",
            "Pool size of the probe; the configured value until a cycle completes" + _LAST,
        )
        self._success = gauge(
            "pqd_last_cycle_success",
            "1 if the cycle succeeded, 0 if it failed or none has completed yet" + _LAST,
        )
        self._full_events = gauge(
            "pqd_last_cycle_queue_full_events",
            "Full-queue events (queue.Full from put_nowait) in the cycle" + _LAST,
        )
        self._jobs_completed = gauge(
            "pqd_last_cycle_jobs_completed",
            "The job counter at the end of the cycle" + _LAST,
        )
        self._depth_max = gauge(
            "pqd_last_cycle_queue_depth_max",
            "Deepest the probe's queue got during the cycle" + _LAST,
        )
        self._pid_delta = gauge(
            "pqd_last_cycle_pid_count_delta",
            "Host pid count after the cycle minus before it" + _LAST,
        )
        self._leaked = gauge(
            "pqd_last_cycle_leaked_processes",
            "Descendant processes the cycle left behind" + _LAST,
        )
        self._duration = gauge(
            "pqd_last_cycle_duration_seconds",
            "Wall time of the cycle in seconds" + _LAST,
        )
        self._cpu = gauge(
            "pqd_last_cycle_cpu_seconds",
            "CPU time (user + system) of the probe's whole process tree in the cycle, in seconds"
            + _LAST,
        )
        self._max_rss = gauge(
            "pqd_last_cycle_max_rss_bytes",
            "Peak resident set size of the largest process of the cycle, in bytes" + _LAST,
        )
        self._ended = gauge(
            "pqd_last_cycle_timestamp_seconds",
            "Unix time the cycle ended, 0 before the first" + _LAST,
        )
        # Not _LAST: this one deliberately keeps its value across failed cycles.
        self._success_ended = gauge(
            "pqd_last_cycle_success_timestamp_seconds",
            "Unix time the last successful cycle ended, 0 before the first"
            " (value from the most recent successful cycle)",
        )
        self._host_pids = _UntypedPerProbe(
            "pqd_host_pid_count",
            "Host pid count sampled at the end of the cycle" + _LAST,
            registry,
        )

        # Counters.
        self._cycles = counter("pqd_cycles", "Cycles completed, successful or not.")
        self._failures = counter(
            "pqd_cycle_failures", "Cycles that failed, by reason.", ("probe", "reason")
        )
        self._skipped = counter(
            "pqd_cycles_skipped",
            "Due cycles that did not run, by reason: overlap (the previous cycle of the probe"
            " still ran) or missed (the scheduler missed the run time).",
            ("probe", "reason"),
        )
        self._jobs_completed_total = counter(
            "pqd_jobs_completed", "Producer and consumer jobs completed."
        )
        self._jobs_failed_total = counter("pqd_jobs_failed", "Producer and consumer jobs failed.")
        self._full_events_total = counter(
            "pqd_queue_full_events", "Full-queue events (queue.Full from put_nowait)."
        )
        self._cpu_total = counter(
            "pqd_cycle_cpu_seconds",
            "CPU time (user + system) of the probe's whole process tree, summed over cycles,"
            " in seconds.",
        )

        # Histograms.
        self._cycle_hist = Histogram(
            "pqd_cycle_duration_seconds",
            "Wall time of cycles in seconds.",
            labelnames=("probe",),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._phase_hist = Histogram(
            "pqd_phase_duration_seconds",
            "Time spent in each phase of a cycle, in seconds.",
            labelnames=("probe", "phase"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self._op_hist = _BatchHistogram(
            "pqd_queue_operation_duration_seconds",
            "Duration of each queue put_nowait/get_nowait, measured in the workers, in seconds.",
            ("probe", "operation"),
            OPERATION_BUCKETS,
            registry,
        )

        # Reload state. Start-up loaded a config successfully, so it counts as a reload: alerts
        # on "no successful reload for N days" then measure from start-up, as Prometheus does.
        self._reload_ok = Gauge(
            "pqd_config_last_reload_successful",
            "1 if the last configuration (re)load succeeded, 0 if it failed.",
            registry=registry,
        )
        self._reload_ts = Gauge(
            "pqd_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration (re)load; start-up counts as one.",
            registry=registry,
        )
        self._reload_ok.set(1)
        self._reload_ts.set(clock())

        self._build_info.labels(version, platform.python_version()).set(1)

        self._lock = threading.Lock()
        self._probes: dict[str, ProbeSpec] = {}  # guarded by self._lock
        self.set_probes(probes)

    # -- per-probe series ------------------------------------------------------------------

    def _per_probe_gauges(self) -> tuple[Gauge, ...]:
        # Every Gauge labelled by probe alone; pqd_host_pid_count is handled separately.
        return (
            self._queue_depth,
            self._workers_live,
            self._queue_capacity,
            self._workers_configured,
            self._success,
            self._full_events,
            self._jobs_completed,
            self._depth_max,
            self._pid_delta,
            self._leaked,
            self._duration,
            self._cpu,
            self._max_rss,
            self._ended,
            self._success_ended,
        )

    def _probe_series(self, name: str) -> Iterator[tuple[MetricWrapperBase, tuple[str, ...]]]:
        """Every prometheus_client series of one probe except probe_info, as (metric, labels):
        what _add_probe creates at zero and _remove_probe removes, from this one list."""
        for metric in (
            *self._per_probe_gauges(),
            self._cycles,
            self._jobs_completed_total,
            self._jobs_failed_total,
            self._full_events_total,
            self._cpu_total,
            self._cycle_hist,
        ):
            yield metric, (name,)
        for reason in FAILURE_REASONS:
            yield self._failures, (name, reason)
        for reason in SKIP_REASONS:
            yield self._skipped, (name, reason)
        for phase in PHASES:
            yield self._phase_hist, (name, phase)

    def _add_probe(self, spec: ProbeSpec) -> None:
        # .labels() creates a series at zero; these make every series exist from start-up, so
        # rate() and absent()-style alerts work before the first cycle or failure.
        for metric, labelvalues in self._probe_series(spec.name):
            metric.labels(*labelvalues)
        self._host_pids.set(spec.name, 0)
        for operation in OPERATIONS:
            self._op_hist.init((spec.name, operation))
        self._update_probe(spec)

    def _update_probe(self, spec: ProbeSpec) -> None:
        self._queue_capacity.labels(spec.name).set(spec.queue_maxsize)
        self._workers_configured.labels(spec.name).set(spec.workers)
        self._probe_info.labels(spec.name, spec.start_method, spec.containment).set(1)

    def _remove_probe(self, spec: ProbeSpec) -> None:
        # remove() with explicit label values rather than remove_by_labels(), which only
        # exists in recent prometheus_client releases (pyproject allows >= 0.20).
        for metric, labelvalues in self._probe_series(spec.name):
            metric.remove(*labelvalues)
        self._host_pids.remove(spec.name)
        for operation in OPERATIONS:
            self._op_hist.remove((spec.name, operation))
        self._probe_info.remove(spec.name, spec.start_method, spec.containment)

    def set_probes(self, probes: Sequence[ProbeSpec]) -> None:
        """Make the per-probe series match ``probes`` (start-up and after a config reload).

        New probes get every series at zero; probes that are gone lose all of theirs; probes
        that stay keep their counters and histograms, and get capacity, configured workers and
        probe_info from the new spec.
        """
        wanted: dict[str, ProbeSpec] = {}
        for spec in probes:
            if spec.name in wanted:
                raise ValueError(f"duplicate probe name: {spec.name!r}")
            wanted[spec.name] = spec
        with self._lock:
            for name, old in list(self._probes.items()):
                if name not in wanted:
                    self._remove_probe(old)
                    del self._probes[name]
            for name, spec in wanted.items():
                old_spec = self._probes.get(name)
                if old_spec is None:
                    self._add_probe(spec)
                else:
                    old_info = (old_spec.start_method, old_spec.containment)
                    if old_info != (spec.start_method, spec.containment):
                        # probe_info carries both as labels: drop the stale series.
                        self._probe_info.remove(name, *old_info)
                    self._update_probe(spec)
                self._probes[name] = spec

    # -- observations ----------------------------------------------------------------------

    def observe_cycle(self, result: CycleResult) -> None:
        """Record one completed cycle; the live gauges of its probe go back to 0.

        A result of a probe that is not (any more) configured is dropped: a reload can remove a
        probe while its last cycle is still running, and that cycle must not resurrect the
        series set_probes() just removed.
        """
        if not result.success and result.reason not in FAILURE_REASONS:
            # Checked before anything is written, so a bad result never half-updates metrics.
            raise ValueError(f"failed cycle with unknown reason: {result.reason!r}")
        unknown_phases = set(result.phase_seconds) - set(PHASES)
        if unknown_phases:
            raise ValueError(f"unknown phases in result: {sorted(unknown_phases)!r}")
        for field in ("cpu_seconds", "max_rss_bytes"):
            measured = getattr(result, field)
            # None is "not measured"; a counter cannot go down, and NaN would poison it for good.
            if measured is not None and not 0 <= measured < math.inf:
                raise ValueError(f"{field} must be finite and >= 0, got {measured!r}")
        exemplar = {"cycle_id": result.cycle_id}
        longest = _EXEMPLAR_MAX_CHARS - len("cycle_id")
        if not 0 < len(result.cycle_id) <= longest:
            # prometheus_client would refuse a long one only after counting the observation.
            raise ValueError(
                f"cycle_id must have 1 to {longest} characters: {result.cycle_id[:80]!r}"
            )
        # The workers bucketed their operations already (pqd.bounds): a cycle is a few numbers.
        batches = {
            op: _Batch(ops.counts, ops.total)
            for op in OPERATIONS
            if (ops := result.operations(op)).counts
        }

        name = result.probe
        with self._lock:
            if name not in self._probes:
                return
            self._queue_depth.labels(name).set(0)
            self._workers_live.labels(name).set(0)

            self._queue_capacity.labels(name).set(result.queue_capacity)
            self._workers_configured.labels(name).set(result.workers_configured)
            self._success.labels(name).set(1 if result.success else 0)
            self._full_events.labels(name).set(result.queue_full_events)
            self._jobs_completed.labels(name).set(result.jobs_completed)
            self._depth_max.labels(name).set(result.queue_depth_max)
            self._pid_delta.labels(name).set(result.pid_count_delta)
            self._leaked.labels(name).set(result.leaked_processes)
            self._duration.labels(name).set(result.duration_seconds)
            # None means not measured: keep the previous value rather than export a false 0.
            if result.cpu_seconds is not None:
                self._cpu.labels(name).set(result.cpu_seconds)
                self._cpu_total.labels(name).inc(result.cpu_seconds)
            if result.max_rss_bytes is not None:
                self._max_rss.labels(name).set(result.max_rss_bytes)
            self._ended.labels(name).set(result.ended_at)
            if result.success:
                self._success_ended.labels(name).set(result.ended_at)
            self._host_pids.set(name, result.host_pid_count_after)

            self._cycles.labels(name).inc()
            if not result.success:
                assert result.reason is not None  # checked above; narrows the type for mypy
                self._failures.labels(name, result.reason).inc()
            self._jobs_completed_total.labels(name).inc(result.jobs_completed)
            self._jobs_failed_total.labels(name).inc(result.jobs_failed)
            self._full_events_total.labels(name).inc(result.queue_full_events)

            # The cycle's id as an OpenMetrics exemplar on the bucket it lands in: a slow point on
            # a dashboard leads to /cycles/ID. Exposed only in OpenMetrics (the plain text format
            # has no exemplars); each bucket keeps the exemplar of its latest observation.
            self._cycle_hist.labels(name).observe(result.duration_seconds, exemplar=exemplar)
            for phase, seconds in result.phase_seconds.items():
                self._phase_hist.labels(name, phase).observe(seconds)
            for op, batch in batches.items():
                self._op_hist.add((name, op), batch)

    def observe_live(self, sample: LiveSample) -> None:
        """Update the live gauges from the parent's sample after a job."""
        with self._lock:
            if sample.probe not in self._probes:
                return
            # A depth of -1 means the sample could not be taken (design: JobReport); keep the
            # previous value rather than export a depth that cannot exist.
            if sample.queue_depth >= 0:
                self._queue_depth.labels(sample.probe).set(sample.queue_depth)
            self._workers_live.labels(sample.probe).set(sample.workers_live)

    def observe_skip(self, probe: str, reason: str) -> None:
        """Count a due cycle that did not run. ``reason`` must be in SKIP_REASONS."""
        if reason not in SKIP_REASONS:
            # A free-form reason would be an unbounded label value.
            raise ValueError(f"unknown skip reason: {reason!r}")
        with self._lock:
            if probe not in self._probes:
                return
            self._skipped.labels(probe, reason).inc()

    def observe_reload(self, success: bool, timestamp: float) -> None:
        """Record a configuration reload attempt; the timestamp only moves on success."""
        self._reload_ok.set(1 if success else 0)
        if success:
            self._reload_ts.set(timestamp)


class _WithoutRuntime:
    """A view of a registry without the process_*/python_* families (see _RUNTIME_PREFIXES)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        return [m for m in self._source.collect() if not m.name.startswith(_RUNTIME_PREFIXES)]


def write_textfile(path: str, registry: CollectorRegistry) -> None:
    """Write ``registry`` atomically for node_exporter's textfile collector.

    write_to_textfile writes ``<path>.<pid>.<thread>`` and renames it over ``path``, so the
    collector never reads a half-written file (and ignores the temp file, which lacks ``.prom``).
    The process_* and python_* families are left out: they would describe a process that has
    exited and clash with node_exporter's own process_* series.
    """
    view = CollectorRegistry()
    view.register(_WithoutRuntime(registry))
    write_to_textfile(path, view)
