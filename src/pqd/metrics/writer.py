"""The one writer of pqd's Prometheus metrics (docs/design.md §2).

Only the daemon's parent process calls this module: cycles and workers return plain data
(:mod:`pqd.results`) and this class turns it into metrics on a registry passed in by the caller.
Nothing is created at import time and the global ``REGISTRY`` is never touched, so every test and
every ``pqd once --textfile`` run gets its own, independent registry.

What series a probe has, and how a cycle sets them, is described once in :mod:`pqd.metrics.series`.
Metric names are a contract with dashboards and alert rules: never rename one.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import gc
import math
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final, Generic, Protocol, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    write_to_textfile,
)
from prometheus_client.metrics_core import HistogramMetricFamily, Metric, UnknownMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _untyped_float_to_go_string

from pqd.bounds import OPERATION_BUCKETS  # bucketed by the workers
from pqd.metrics.exposition_cache import ExpositionCache
from pqd.metrics.series import PROBE_SERIES, SKIP_REASONS, ProbeFacts, ProbeSeries, check_labels
from pqd.results import FAILURE_REASONS, PHASES, CycleResult, LiveSample, Operations

# Families that describe the exporting process itself. They are dropped from textfiles: a
# `pqd once` process has exited by the time node_exporter reads the file, and node_exporter
# exports process_* series of its own, which the textfile's would collide with.
_RUNTIME_PREFIXES: Final = ("process_", "python_")

# OpenMetrics' limit on the characters of an exemplar's label names and values together.
_EXEMPLAR_MAX_CHARS: Final = 128

# prometheus_client's own "le" formatter, so our bucket labels match its Histogram's exactly. It
# is unannotated; binding it to a typed name keeps mypy --strict honest about our calls.
_float_to_go_string: Callable[[float], str] = _untyped_float_to_go_string

Labels = tuple[str, ...]  # label values, ``probe`` first
Exemplar = dict[str, str] | None
_State = TypeVar("_State")


class _Family(Protocol):
    """One registered family, as PqdMetrics writes to it: whatever its kind, series are
    created at zero, written (set, increased or observed) and removed by their label values."""

    def create(self, labelvalues: Labels) -> None: ...

    def write(self, labelvalues: Labels, value: float | Operations, exemplar: Exemplar) -> None: ...

    def remove(self, labelvalues: Labels) -> None: ...

    @property
    def collector(self) -> Collector: ...


def _number(value: float | Operations) -> float:
    if isinstance(value, Operations):
        raise TypeError("bucketed operations fit only an 'operations' histogram")
    return value


class _ClientFamily:
    """A prometheus_client Gauge, Counter, Histogram or Enum behind the _Family interface."""

    def __init__(self, series: ProbeSeries, registry: CollectorRegistry) -> None:
        args = (series.name, series.help, series.label_names)
        self._metric: Gauge | Counter | Histogram | Enum
        self._states = series.states
        if series.kind == "enum":
            self._metric = Enum(*args, states=list(series.states), registry=registry)
        elif series.kind == "gauge":
            self._metric = Gauge(*args, registry=registry)
        elif series.kind == "counter":
            self._metric = Counter(*args, registry=registry)
        else:
            self._metric = Histogram(*args, buckets=series.buckets, registry=registry)

    def create(self, labelvalues: Labels) -> None:
        self._metric.labels(*labelvalues)  # .labels() creates the series at zero

    def write(self, labelvalues: Labels, value: float | Operations, exemplar: Exemplar) -> None:
        series = self._metric.labels(*labelvalues)
        if isinstance(series, Enum):
            series.state(self._states[int(_number(value))])
        elif isinstance(series, Gauge):
            series.set(_number(value))
        elif isinstance(series, Counter):
            series.inc(_number(value))
        else:
            # Exposed only in OpenMetrics (the plain text format has no exemplars).
            series.observe(_number(value), exemplar=exemplar)

    def remove(self, labelvalues: Labels) -> None:
        # remove() with explicit label values rather than remove_by_labels(), which only
        # exists in recent prometheus_client releases (pyproject allows >= 0.20).
        self._metric.remove(*labelvalues)

    @property
    def collector(self) -> Collector:
        return self._metric


class _Own(Generic[_State]):
    """A family pqd collects itself: the state of each label set, under one lock."""

    def __init__(self, series: ProbeSeries, registry: CollectorRegistry) -> None:
        self._name = series.name
        self._documentation = series.help
        self._labelnames = series.label_names
        self._lock = threading.Lock()
        self._states: dict[Labels, _State] = {}  # guarded by self._lock
        registry.register(self)

    def remove(self, labelvalues: Labels) -> None:
        with self._lock:
            self._states.pop(labelvalues, None)

    @property
    def collector(self) -> Collector:
        return self

    def _snapshot(self) -> list[tuple[Labels, _State]]:
        with self._lock:
            return [(lv, copy.copy(state)) for lv, state in self._states.items()]

    def _family(self) -> Metric:
        raise NotImplementedError

    def describe(self) -> Iterable[Metric]:
        # Lets the registry detect name clashes at register() time without collecting.
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        raise NotImplementedError


class _Batch:
    """One label set of a _BatchHistogram: non-cumulative counts per bucket (+Inf last), sum."""

    __slots__ = ("counts", "total")

    def __init__(self, counts: list[int], total: float) -> None:
        self.counts = counts
        self.total = total

    def __copy__(self) -> _Batch:
        return _Batch(list(self.counts), self.total)


class _BatchHistogram(_Own[_Batch]):
    """A labelled histogram that takes a whole batch of already bucketed observations at once.

    prometheus_client's Histogram has no public batch API, and ``observe()`` per value (two
    locked increments plus a linear scan of the bounds) measured 120-220 ms per 100,000 values
    on the 2-CPU dev machine: a probe with items_per_producer=1,000,000 would spend seconds in
    it. The workers bucket their queue operations instead, on pqd.bounds.OPERATION_BUCKETS, and
    a cycle hands over a few counts per operation, added under one lock. The exposition is the
    same as a Histogram's (checked in tests) except that no ``_created`` series is emitted.
    """

    # Rendered once: the same strings prometheus_client writes for its own histograms.
    _LES: Final = (*(_float_to_go_string(b) for b in OPERATION_BUCKETS), "+Inf")

    def create(self, labelvalues: Labels) -> None:
        self.write(labelvalues, Operations(), None)

    def write(self, labelvalues: Labels, value: float | Operations, exemplar: Exemplar) -> None:
        if not isinstance(value, Operations):
            raise TypeError("an 'operations' histogram takes bucketed Operations")
        with self._lock:
            batch = self._states.get(labelvalues)
            if batch is None:
                batch = self._states[labelvalues] = _Batch([0] * len(self._LES), 0.0)
            for i, n in enumerate(value.counts):
                batch.counts[i] += n
            batch.total += value.total

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for labelvalues, batch in self._snapshot():
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for le, n in zip(self._LES, batch.counts, strict=True):
                cumulative += n
                buckets.append((le, cumulative))
            family.add_metric(list(labelvalues), buckets, batch.total)
        return [family]


class _Untyped(_Own[float]):
    """A family exposed with TYPE untyped; used only for ``pqd_host_pid_count`` and
    ``pqd_cpu_count``.

    docs/design.md §2 fixes those names and also requires ``promtool check metrics`` to print
    nothing, but promtool's linter rejects any gauge or counter whose name ends in ``_count``
    ("non-histogram and non-summary metrics should not have _count suffix"); it skips untyped
    families. PromQL treats an untyped sample exactly like a gauge, so only the TYPE metadata
    differs.
    """

    def create(self, labelvalues: Labels) -> None:
        self.write(labelvalues, 0, None)

    def write(self, labelvalues: Labels, value: float | Operations, exemplar: Exemplar) -> None:
        number = float(_number(value))
        with self._lock:
            self._states[labelvalues] = number

    def _family(self) -> UnknownMetricFamily:
        return UnknownMetricFamily(self._name, self._documentation, labels=self._labelnames)

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        for labelvalues, value in self._snapshot():
            family.add_metric(list(labelvalues), value)
        return [family]


def _register(series: ProbeSeries, registry: CollectorRegistry) -> _Family:
    if series.kind == "untyped":
        return _Untyped(series, registry)
    if series.kind == "operations":
        return _BatchHistogram(series, registry)
    return _ClientFamily(series, registry)


def _check(result: CycleResult) -> None:
    """Refuse a result that could not be recorded whole, before anything is written."""
    if not result.success and result.reason not in FAILURE_REASONS:
        raise ValueError(f"failed cycle with unknown reason: {result.reason!r}")
    check_labels(result)
    unknown_phases = set(result.phase_seconds) - set(PHASES)
    if unknown_phases:
        raise ValueError(f"unknown phases in result: {sorted(unknown_phases)!r}")
    for field in ("cpu_seconds", "max_rss_bytes"):
        measured = getattr(result, field)
        # None is "not measured"; a counter cannot go down, and NaN would poison it for good.
        if measured is not None and not 0 <= measured < math.inf:
            raise ValueError(f"{field} must be finite and >= 0, got {measured!r}")
    if result.headroom is not None:
        for name, number in dataclasses.asdict(result.headroom).items():
            if isinstance(number, float) and not math.isfinite(number):
                raise ValueError(f"headroom {name} must be finite, got {number!r}")
    longest = _EXEMPLAR_MAX_CHARS - len("cycle_id")
    if not 0 < len(result.cycle_id) <= longest:
        # prometheus_client would refuse a long exemplar only after counting the observation.
        raise ValueError(f"cycle_id must have 1 to {longest} characters: {result.cycle_id[:80]!r}")


class PqdMetrics:
    """Every metric of docs/design.md §2, registered on ``registry``, fed from plain results.

    Thread-safety: the observe_* methods run in scheduler threads while the HTTP server
    collects. Each metric object has its own lock; ``self._lock`` additionally serialises
    writers against set_probes(), so a cycle of a probe that a reload just removed cannot
    re-create that probe's series after they were removed. Scrapes never take ``self._lock``.

    ``exposition`` serves the registry with pqd's own families encoded once per write: every
    write ends, under ``self._lock``, by telling it so (``_write``).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        version: str,
        probes: Sequence[ProbeFacts],
        clock: Callable[[], float] = time.time,  # injectable so tests get exact timestamps
        process_collectors: bool = True,
        live_collectors: Sequence[Collector] | None = None,
    ) -> None:
        """``process_collectors=False`` leaves out the process_*/python_* collectors, for a
        registry that only feeds a textfile (they would describe a process that has exited).

        ``live_collectors``: the collectors whose values change by themselves, rendered afresh
        on every scrape; None for prometheus_client's process, platform and GC collectors
        (none if ``process_collectors`` is False). Registered first, on ``registry``.
        """
        if live_collectors is None:
            live_collectors = _runtime_collectors() if process_collectors else []
        for collector in live_collectors:
            registry.register(collector)  # on the caller's registry, never on the global one
        # Registered in the order of the exposition: build info, every per-probe family, then
        # the reload state.
        build_info = Gauge(
            "pqd_build_info",
            "pqd build information; the value is always 1.",
            ("version", "python_version"),
            registry=registry,
        )
        self._families = {series.name: _register(series, registry) for series in PROBE_SERIES}
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
        # Start-up loaded a config successfully, so it counts as a reload: alerts on "no
        # successful reload for N days" then measure from start-up, as Prometheus does.
        self._reload_ok.set(1)
        self._reload_ts.set(clock())
        build_info.labels(version, platform.python_version()).set(1)
        # Exactly the registry's collectors, in the order they were registered above.
        own = [
            build_info,
            *(f.collector for f in self._families.values()),
            self._reload_ok,
            self._reload_ts,
        ]
        self.exposition = ExpositionCache(
            registry, [(False, c) for c in live_collectors] + [(True, c) for c in own]
        )

        self._lock = threading.Lock()
        self._probes: dict[str, ProbeFacts] = {}  # guarded by self._lock
        self.set_probes(probes)

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """Every write: under ``self._lock``, and once it is complete (or has failed half way)
        the exposition's kept text is dropped (pqd.metrics.exposition_cache)."""
        with self._lock:
            try:
                yield
            finally:
                self.exposition.changed()

    # -- per-probe series ------------------------------------------------------------------

    def _add_probe(self, spec: ProbeFacts) -> None:
        # Every series of the probe exists from start-up, at zero (or its configured value), so
        # rate() and absent()-style alerts work before the first cycle or failure.
        for series in PROBE_SERIES:
            family = self._families[series.name]
            for labelvalues in series.label_sets(spec):
                family.create(labelvalues)
                if series.from_spec is not None:
                    family.write(labelvalues, series.from_spec(spec), None)

    def _update_probe(self, old: ProbeFacts, new: ProbeFacts) -> None:
        # A probe that stays keeps its counters and histograms. Series labelled from its
        # config (probe_info's start_method and containment) are replaced when that changes,
        # and values from its config are set again.
        for series in PROBE_SERIES:
            family = self._families[series.name]
            old_sets, new_sets = series.label_sets(old), series.label_sets(new)
            for labelvalues in old_sets:
                if labelvalues not in new_sets:
                    family.remove(labelvalues)
            for labelvalues in new_sets:
                if labelvalues not in old_sets:
                    family.create(labelvalues)
                if series.from_spec is not None:
                    family.write(labelvalues, series.from_spec(new), None)

    def _remove_probe(self, spec: ProbeFacts) -> None:
        for series in PROBE_SERIES:
            family = self._families[series.name]
            for labelvalues in series.label_sets(spec):
                family.remove(labelvalues)

    def set_probes(self, probes: Sequence[ProbeFacts]) -> None:
        """Make the per-probe series match ``probes`` (start-up and after a config reload).

        New probes get every series at zero; probes that are gone lose all of theirs; probes
        that stay keep their counters and histograms, and get capacity, configured workers and
        probe_info from the new spec.
        """
        wanted: dict[str, ProbeFacts] = {}
        for spec in probes:
            if spec.name in wanted:
                raise ValueError(f"duplicate probe name: {spec.name!r}")
            wanted[spec.name] = spec
        with self._write():
            for name, old in list(self._probes.items()):
                if name not in wanted:
                    self._remove_probe(old)
                    del self._probes[name]
            for name, spec in wanted.items():
                old_spec = self._probes.get(name)
                if old_spec is None:
                    self._add_probe(spec)
                else:
                    self._update_probe(old_spec, spec)
                self._probes[name] = spec

    # -- observations ----------------------------------------------------------------------

    def observe_cycle(self, result: CycleResult) -> None:
        """Record one completed cycle; the live gauges of its probe go back to 0.

        A result of a probe that is not (any more) configured is dropped: a reload can remove a
        probe while its last cycle is still running, and that cycle must not resurrect the
        series set_probes() just removed.
        """
        _check(result)
        exemplar = {"cycle_id": result.cycle_id}
        writes = [
            (self._families[series.name], labels, value, exemplar if series.exemplar else None)
            for series in PROBE_SERIES
            for labels, value in series.from_cycle(result)
        ]
        with self._write():
            if result.probe not in self._probes:
                return
            for family, labels, value, its_exemplar in writes:
                family.write((result.probe, *labels), value, its_exemplar)

    def observe_live(self, sample: LiveSample) -> None:
        """Update the live gauges from the parent's sample after a job."""
        with self._write():
            if sample.probe not in self._probes:
                return
            # A depth of -1 means the sample could not be taken (JobReport.queue_depth_after);
            # keep the previous value rather than export a depth that cannot exist.
            if sample.queue_depth >= 0:
                self._families["pqd_queue_depth"].write((sample.probe,), sample.queue_depth, None)
            self._families["pqd_workers_live"].write((sample.probe,), sample.workers_live, None)

    def observe_skip(self, probe: str, reason: str) -> None:
        """Count a due cycle that did not run. ``reason`` must be in SKIP_REASONS."""
        if reason not in SKIP_REASONS:
            # A free-form reason would be an unbounded label value.
            raise ValueError(f"unknown skip reason: {reason!r}")
        with self._write():
            if probe not in self._probes:
                return
            self._families["pqd_cycles_skipped"].write((probe, reason), 1, None)

    def observe_reload(self, success: bool, timestamp: float) -> None:
        """Record a configuration reload attempt; the timestamp only moves on success."""
        with self._write():
            self._reload_ok.set(1 if success else 0)
            if success:
                self._reload_ts.set(timestamp)


def _runtime_collectors() -> list[Collector]:
    """prometheus_client's process_* and python_* collectors, registered on no registry yet."""
    collectors: list[Collector] = [
        ProcessCollector(registry=None),
        PlatformCollector(registry=None),
    ]
    # GCCollector takes no registry=None, and registers itself only where this holds.
    if hasattr(gc, "get_stats") and platform.python_implementation() == "CPython":
        collectors.append(GCCollector(registry=CollectorRegistry()))
    return collectors


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
