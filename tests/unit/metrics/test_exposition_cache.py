"""The kept exposition (pqd.metrics.exposition_cache) is exactly as fresh as a full render.

The app given ``exposition=`` reuses pqd's own families' encoded text until the metrics writer
writes again; the app without it renders the whole registry per scrape, the reference to compare
with. After every kind of change, both answer the same bytes, in every format, gzipped or not.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any
from wsgiref.types import WSGIApplication

import pytest
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from pqd.metrics.exposition_cache import ExpositionCache
from pqd.metrics.series import ProbeFacts
from pqd.metrics.writer import PqdMetrics
from pqd.results import CycleResult, LiveSample
from pqd.web.app import make_app
from tests.helpers.factories import seed_shaped_result
from tests.helpers.web import Response, call, make_state

DEFAULT = ProbeFacts(name="default", start_method="forkserver", workers=4, queue_maxsize=3)
OTHER = ProbeFacts(name="other", start_method="spawn", workers=2, queue_maxsize=5)
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"

# Accept headers: plain 0.0.4 (the default), OpenMetrics with and without a version, and the
# text format 1.0.0 with another escaping; each also gzipped.
ACCEPTS = {
    "plain": "",
    "openmetrics": OPENMETRICS,
    "openmetrics-unversioned": "application/openmetrics-text",
    "text-1.0.0-utf8": "text/plain; version=1.0.0; escaping=allow-utf-8",
}
FORMATS = [(name, accept, zipped) for name, accept in ACCEPTS.items() for zipped in (False, True)]


class FakeLive(Collector):
    """A live collector whose values change only when the test says (process_* stand-in)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = 1.0
        self.collects = 0

    def collect(self) -> Iterable[Metric]:
        self.collects += 1
        return [
            GaugeMetricFamily(f"{self.name}_gauge", "A live gauge.", value=self.value),
            CounterMetricFamily(f"{self.name}_seconds", "A live counter.", value=self.value * 2),
        ]


class Served:
    """A PqdMetrics registry served twice: by the kept exposition and by a full render."""

    def __init__(self, live: list[Collector] | None = None) -> None:
        self.registry = CollectorRegistry()
        self.metrics = PqdMetrics(
            self.registry,
            version="1.2.3",
            probes=[DEFAULT],
            clock=lambda: 1_700_000_000.0,
            live_collectors=live,
        )
        self.kept = _app(self.registry, self.metrics.exposition)
        self.fresh = _app(self.registry, None)

    def scrape(self, accept: str, zipped: bool, *, kept: bool = True) -> Response:
        headers = {"Accept": accept, "Accept-Encoding": "gzip" if zipped else "identity"}
        r = call(self.kept if kept else self.fresh, path_info="/metrics", headers=headers)
        assert r.status == 200, r.text
        assert ("content-encoding" in r.headers) == zipped
        if zipped:
            r.body = _one_gzip_member(r.body)
        return r


def _app(registry: CollectorRegistry, exposition: ExpositionCache | None) -> WSGIApplication:
    return make_app(
        registry=registry,
        state=make_state,
        recent_cycles=list,
        find_cycle=lambda _: None,
        render_trace=lambda _: [],
        reload=lambda: (True, ""),
        exposition=exposition,
    )


def _one_gzip_member(body: bytes) -> bytes:
    # A multi-member body would decompress with gzip.decompress too; zlib stops after one.
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    text = inflate.decompress(body)
    assert inflate.eof and not inflate.unused_data, "not exactly one gzip member"
    return text


def _cycle(probe: str, cycle_id: str, **overrides: Any) -> CycleResult:
    fields: dict[str, Any] = {
        "started_at": 1_700_000_010.0,
        "ended_at": 1_700_000_010.75,
        "duration_seconds": 0.75,
        "cpu_seconds": 0.5,
        "max_rss_bytes": 40_000_000,
    }
    return seed_shaped_result(probe=probe, cycle_id=cycle_id, **{**fields, **overrides})


def _changes(served: Served, live: FakeLive) -> list[tuple[str, Callable[[], object], bool]]:
    """Every kind of change, in order: (what, do it, whether the exposition must differ)."""
    m = served.metrics
    moved = replace(DEFAULT, start_method="spawn", containment="cgroup", queue_maxsize=7)
    return [
        ("first scrape", lambda: None, True),
        ("a successful cycle", lambda: m.observe_cycle(_cycle("default", "c-1")), True),
        (
            "a failed cycle",
            lambda: m.observe_cycle(
                _cycle("default", "c-2", success=False, reason="timeout", duration_seconds=3.0)
            ),
            True,
        ),
        ("a live sample", lambda: m.observe_live(LiveSample("default", 2, 3)), True),
        ("a live sample without depth", lambda: m.observe_live(LiveSample("default", -1, 1)), True),
        ("a skip (overlap)", lambda: m.observe_skip("default", "overlap"), True),
        ("a skip (missed)", lambda: m.observe_skip("default", "missed"), True),
        ("a reload adding a probe", lambda: m.set_probes([DEFAULT, OTHER]), True),
        ("a cycle of the new probe", lambda: m.observe_cycle(_cycle("other", "o-1")), True),
        ("a reload changing probe_info", lambda: m.set_probes([moved, OTHER]), True),
        ("a reload removing a probe", lambda: m.set_probes([moved]), True),
        ("a cycle of the removed probe", lambda: m.observe_cycle(_cycle("other", "o-2")), False),
        ("a live sample of it", lambda: m.observe_live(LiveSample("other", 1, 1)), False),
        ("a skip of it", lambda: m.observe_skip("other", "overlap"), False),
        ("a reload success", lambda: m.observe_reload(True, 1_700_000_500.0), True),
        ("a reload failure", lambda: m.observe_reload(False, 1_700_000_600.0), True),
        ("a live collector moving", lambda: setattr(live, "value", live.value + 1), True),
        ("nothing", lambda: None, False),
        ("nothing, again", lambda: None, False),
    ]


def test_kept_exposition_equals_a_full_render_after_every_kind_of_change() -> None:
    live, late = FakeLive("fake_live"), FakeLive("fake_later")
    served = Served(live=[live, late])
    before: dict[tuple[str, bool], bytes] = {}
    for what, change, differs in _changes(served, live):
        change()
        for name, accept, zipped in FORMATS:
            kept = served.scrape(accept, zipped)
            fresh = served.scrape(accept, zipped, kept=False)
            where = f"after {what}, {name}{' gzipped' if zipped else ''}"
            assert kept.headers == fresh.headers, where
            assert kept.body == fresh.body, where
            previous = before.get((name, zipped))
            if previous is not None:
                assert (kept.body != previous) == differs, where
            before[name, zipped] = kept.body
    om = before["openmetrics", False].decode()
    assert om.count("# EOF") == 1 and om.endswith("\n# EOF\n")
    assert '# {cycle_id="c-1"}' in om and '# {cycle_id="c-2"}' in om  # exemplars kept too
    assert 'pqd_probe_info{containment="cgroup",probe="default",' in om
    assert 'probe="other"' not in om
    assert om.index("fake_later_gauge") < om.index("pqd_build_info")  # registration order


def test_own_families_are_rendered_once_per_write_and_format() -> None:
    """The kept text is really used: spies count the collects of a live and an own collector."""
    registry = CollectorRegistry()
    live, own = FakeLive("live"), FakeLive("own")
    registry.register(live)
    registry.register(own)
    exposition = ExpositionCache(registry, [(False, live), (True, own)])

    def renders(content_type: str, times: int) -> tuple[int, int]:
        encoder = openmetrics_latest if content_type == OPENMETRICS else generate_latest
        before = live.collects, own.collects
        bodies = {exposition.render(encoder, content_type) for _ in range(times)}
        counts = live.collects - before[0], own.collects - before[1]
        assert bodies == {encoder(registry)}
        return counts

    assert renders("text/plain", 3) == (3, 1)
    assert renders(OPENMETRICS, 3) == (3, 1)  # each format is kept apart
    assert renders("text/plain", 3) == (3, 0)
    own.value = 5
    exposition.changed()
    assert renders("text/plain", 3) == (3, 1)
    assert renders(OPENMETRICS, 3) == (3, 1)


@pytest.mark.parametrize("pattern", ["LOL", "OLO", "LLOO", "OOLL", "L", "O", ""])
def test_any_order_of_live_and_own_collectors_is_kept(pattern: str) -> None:
    registry = CollectorRegistry()
    collectors: list[tuple[bool, Collector]] = []
    for i, kind in enumerate(pattern):
        collector = FakeLive(f"c{i}")
        registry.register(collector)
        collectors.append((kind == "O", collector))
    exposition = ExpositionCache(registry, collectors)
    for encoder, content_type in (
        (generate_latest, "text/plain"),
        (openmetrics_latest, OPENMETRICS),
    ):
        for _ in range(2):
            assert exposition.render(encoder, content_type) == encoder(registry)


def test_a_write_during_a_render_is_never_hidden() -> None:
    """An own collector is written while the scrape collects it (the writer finished after the
    scrape had read it): what that render produced must not be served after the write."""
    gauge = Gauge("pqd_racy", "Written during a collect.", registry=None)

    class WriterDuringCollect(Collector):
        def __init__(self) -> None:
            self.writes = 1
            self.exposition: ExpositionCache | None = None

        def collect(self) -> Iterable[Metric]:
            metrics = list(gauge.collect())  # collected before the write lands
            if self.writes and self.exposition is not None:
                self.writes -= 1
                gauge.set(42)
                self.exposition.changed()
            return metrics

    registry = CollectorRegistry()
    racy = WriterDuringCollect()
    registry.register(racy)
    exposition = racy.exposition = ExpositionCache(registry, [(True, racy)])
    first = exposition.render(generate_latest, "text/plain")
    assert b"pqd_racy 0.0" in first
    second = exposition.render(generate_latest, "text/plain")
    assert b"pqd_racy 42.0" in second


def test_concurrent_writes_and_scrapes_end_equal() -> None:
    served = Served(live=[FakeLive("fake_live")])
    served.metrics.set_probes([DEFAULT, OTHER])
    stop = threading.Event()

    def write() -> None:
        depth = 0
        while not stop.is_set():
            depth += 1
            served.metrics.observe_live(LiveSample("default", depth % 4, depth % 5))
            served.metrics.observe_skip("other", "missed")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(200):
            served.scrape("", False)
            served.scrape(OPENMETRICS, True)
    finally:
        stop.set()
        writer.join()
    for accept in ("", OPENMETRICS):
        assert served.scrape(accept, False).body == served.scrape(accept, False, kept=False).body


def _series(body: bytes) -> dict[tuple[str, str], dict[tuple[str, tuple[Any, ...]], float]]:
    """family (name, type) -> sample (name, labels) -> value, from an OpenMetrics body."""
    return {
        (family.name, family.type): {
            (s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples
        }
        for family in text_string_to_metric_families(body.decode())
    }


def test_with_the_real_process_collectors_only_their_values_may_differ() -> None:
    served = Served()  # prometheus_client's process, platform and GC collectors
    served.metrics.observe_cycle(_cycle("default", "c-1"))
    served.metrics.observe_live(LiveSample("default", 1, 2))
    served.scrape(OPENMETRICS, False)  # the kept text now exists
    served.scrape("", False)
    kept = _series(served.scrape(OPENMETRICS, False).body)
    fresh = _series(served.scrape(OPENMETRICS, False, kept=False).body)
    assert list(kept) == list(fresh)  # the same families in the same order
    live = {name for name, _ in kept if name.startswith(("process_", "python_"))}
    assert {"process_cpu_seconds", "python_info", "python_gc_objects_collected"} <= live
    for family, samples in kept.items():
        assert list(samples) == list(fresh[family]), family
        if family[0] not in live:
            assert samples == fresh[family], family
    plain_kept = served.scrape("", False).text.splitlines()
    plain_fresh = served.scrape("", False, kept=False).text.splitlines()
    assert [_name(line) for line in plain_kept] == [_name(line) for line in plain_fresh]

    def own(lines: list[str]) -> list[str]:
        return [line for line in lines if not _name(line).startswith(("process_", "python_"))]

    assert own(plain_kept) == own(plain_fresh)
    assert len(own(plain_kept)) > 200


def _name(line: str) -> str:
    """A line's series name (HELP/TYPE lines: the family's), without labels or value."""
    if line.startswith("# "):
        return line.split(" ")[2]
    return line.split("{")[0].split(" ")[0]


def test_the_exposition_must_be_of_the_served_registry() -> None:
    served = Served(live=[])
    with pytest.raises(ValueError, match="registry"):
        _app(CollectorRegistry(), served.metrics.exposition)


def test_a_name_filter_bypasses_the_kept_text() -> None:
    served = Served(live=[])
    query = "name[]=pqd_cycles_total&name[]=pqd_config_last_reload_successful"
    first = call(served.kept, path_info="/metrics", query=query).text
    served.metrics.observe_cycle(_cycle("default", "c-1"))
    r = call(served.kept, path_info="/metrics", query=query)
    assert r.text == call(served.fresh, path_info="/metrics", query=query).text
    assert 'pqd_cycles_total{probe="default"} 1.0' in r.text and first != r.text
    assert "pqd_build_info" not in r.text
