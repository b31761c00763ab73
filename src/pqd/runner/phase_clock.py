"""The time a cycle spends in each of its phases (results.PHASES,
``pqd_phase_duration_seconds{phase}``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class PhaseClock:
    """Seconds per phase, in the order the phases began.

    ``with clock.phase("jobs"):`` times a phase that ends normally. A phase left by an exception
    stays open until ``stop()``: the cycle first looks at where its processes were stuck, and
    that look counts towards the phase that failed, so the phases still add up to the cycle.
    Entering a phase again adds to its time (a failed teardown: the graceful attempt, then the
    forced one).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.current: str | None = None  # the phase open now
        self._since = 0.0

    @contextmanager
    def phase(self, name: str, since: float | None = None) -> Iterator[None]:
        """Time ``name`` from ``since`` (a time.monotonic() value; default now)."""
        self.stop()
        self.current, self._since = name, time.monotonic() if since is None else since
        yield  # not in try/finally: on an exception the phase stays open (see the class)
        self.stop()

    def stop(self) -> str | None:
        """End the open phase, if any; return its name."""
        name, self.current = self.current, None
        if name is not None:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.monotonic() - self._since
        return name
