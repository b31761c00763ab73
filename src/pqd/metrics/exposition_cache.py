"""A registry's exposition with pqd's own part kept encoded between writes.

A fresh render of the whole registry on every scrape cost most of a scrape's CPU, yet pqd's own
families change only when :class:`pqd.metrics.writer.PqdMetrics` writes. :class:`ExpositionCache`
knows the registry's collectors in registration order, each marked *own* (changed only by
PqdMetrics's writes) or *live* (prometheus_client's process_*/python_* collectors, whose values
change by themselves). Per scrape it renders the live ones afresh and reuses the encoded text of the
own ones, kept per content type until the next write, then joins the pieces in registration order:
byte for byte what a fresh render of the whole registry gives
(tests/unit/metrics/test_exposition_cache.py).

Freshness: PqdMetrics calls :meth:`ExpositionCache.changed` at the end of every write, still under
its lock, after the write is complete. A render reads the generation *before* it collects, and
text is stored and served only under that generation; so text rendered before (or during) a
write is never served once that write has ended.

Nothing here knows pqd's metrics; it only needs collectors.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

#: prometheus_client's encoders (``choose_encoder``): a collector in, the exposition's bytes out.
Encoder = Callable[[Collector], bytes]

# An OpenMetrics exposition ends with exactly one of these; each piece is rendered with it and
# loses it before the pieces are joined.
_EOF: Final = b"# EOF\n"
_OPENMETRICS: Final = "application/openmetrics-text"
# A client picks the content type (its Accept header names any version): only this many are
# kept, so a hostile client cannot make the cache grow.
_MAX_CONTENT_TYPES: Final = 8


class _Run:
    """Consecutive collectors of one kind, collected as one."""

    def __init__(self, own: bool, collectors: list[Collector]) -> None:
        self.own = own
        self.collectors = collectors

    def collect(self) -> Iterable[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


class ExpositionCache:
    """The exposition of ``registry``, whose collectors are exactly ``collectors`` (``(own,
    collector)`` pairs in the order they were registered)."""

    def __init__(
        self, registry: CollectorRegistry, collectors: Sequence[tuple[bool, Collector]]
    ) -> None:
        self.registry = registry
        self._runs: list[_Run] = []
        for own, collector in collectors:
            if self._runs and self._runs[-1].own == own:
                self._runs[-1].collectors.append(collector)
            else:
                self._runs.append(_Run(own, [collector]))
        self._lock = threading.Lock()
        self._generation = 0  # guarded by self._lock; moves on every write of an own collector
        # content type -> (generation, encoded text of each own run); guarded by self._lock
        self._cache: dict[str, tuple[int, list[bytes]]] = {}

    def changed(self) -> None:
        """An own collector has been written: text rendered before now is never served again."""
        with self._lock:
            self._generation += 1
            self._cache.clear()

    def render(self, encoder: Encoder, content_type: str) -> bytes:
        """What ``encoder(registry)`` would give, ``content_type`` being the one
        ``choose_encoder`` returned with ``encoder`` (it names the format, version and
        escaping, so equal content types mean equal encoders)."""
        openmetrics = content_type.startswith(_OPENMETRICS)
        own = iter(self._own_texts(encoder, content_type, openmetrics))
        pieces = [next(own) if run.own else _piece(encoder(run), openmetrics) for run in self._runs]
        if openmetrics:
            pieces.append(_EOF)
        return b"".join(pieces)

    def _own_texts(self, encoder: Encoder, content_type: str, openmetrics: bool) -> list[bytes]:
        with self._lock:
            generation = self._generation
            cached = self._cache.get(content_type)
        if cached is not None and cached[0] == generation:
            return cached[1]
        texts = [_piece(encoder(run), openmetrics) for run in self._runs if run.own]
        with self._lock:
            # Text rendered across a write is never served (lookups compare generations); not
            # storing it also keeps it from replacing what a later render stored.
            if generation == self._generation:
                if content_type not in self._cache and len(self._cache) >= _MAX_CONTENT_TYPES:
                    self._cache.clear()
                self._cache[content_type] = (generation, texts)
        return texts


def _piece(text: bytes, openmetrics: bool) -> bytes:
    if not openmetrics:
        return text
    if not text.endswith(_EOF):
        raise ValueError("an OpenMetrics exposition without its '# EOF' line")
    return text[: -len(_EOF)]
