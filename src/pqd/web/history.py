"""Bounded, thread-safe history of recent cycles, for the landing page and /cycles/ID.

Per probe it keeps the newest ``limit`` successes and, separately, the newest ``limit``
failures: one deque per outcome, so a long run of successes cannot push out the failure an
operator came to look at.
"""

from __future__ import annotations

import threading
from collections import deque

from pqd.results import CycleResult


class CycleHistory:
    """Recent CycleResults per probe. Every method may be called from any thread."""

    def __init__(self, limit: int) -> None:
        self._limit = _check_limit(limit)
        self._lock = threading.Lock()
        # probe -> (successes, failures), oldest on the left. Guarded by self._lock.
        self._by_probe: dict[str, tuple[deque[CycleResult], deque[CycleResult]]] = {}

    @property
    def limit(self) -> int:
        with self._lock:
            return self._limit

    def add(self, result: CycleResult) -> None:
        with self._lock:
            pair = self._by_probe.get(result.probe)
            if pair is None:
                pair = (deque(maxlen=self._limit), deque(maxlen=self._limit))
                self._by_probe[result.probe] = pair
            # deque(maxlen) drops the oldest entry of that outcome on overflow.
            pair[0 if result.success else 1].append(result)

    def recent(self, probe: str | None = None) -> list[CycleResult]:
        """Newest first (by ended_at), successes and failures merged; all probes if None."""
        with self._lock:
            if probe is None:
                pairs = list(self._by_probe.values())
            else:
                pair = self._by_probe.get(probe)
                pairs = [] if pair is None else [pair]
            merged = [r for successes, failures in pairs for r in (*successes, *failures)]
        # Sorting outside the lock: the list is ours and results are immutable.
        # The id breaks ties, so equal end times still give one stable order.
        merged.sort(key=lambda r: (r.ended_at, r.cycle_id), reverse=True)
        return merged

    def get(self, cycle_id: str) -> CycleResult | None:
        # A linear scan: the history holds at most 2 * limit results per probe, and an id index
        # would have to track every deque eviction to stay correct.
        with self._lock:
            for successes, failures in self._by_probe.values():
                for r in (*successes, *failures):
                    if r.cycle_id == cycle_id:
                        return r
        return None

    def set_limit(self, limit: int) -> None:
        """Change the limit (on reload); keeps the newest entries of each outcome."""
        limit = _check_limit(limit)
        with self._lock:
            self._limit = limit
            for probe, (successes, failures) in self._by_probe.items():
                # deque(iterable, maxlen) keeps the rightmost, i.e. newest, items.
                self._by_probe[probe] = (
                    deque(successes, maxlen=limit),
                    deque(failures, maxlen=limit),
                )

    def forget_probe(self, probe: str) -> None:
        """Drop a probe's history, e.g. after a reload removed the probe."""
        with self._lock:
            self._by_probe.pop(probe, None)


def _check_limit(limit: int) -> int:
    # bool is an int subclass; True as a limit is a config bug, not "keep one".
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"history limit must be a positive integer, got {limit!r}")
    return limit
