"""Waiting with a deadline, never a fixed sleep (CONTRIBUTING.md): the one poll loop of the
tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

#: Generous for a loaded 2-core machine; a wait that needs longer says so.
DEADLINE_SECONDS = 30.0


def wait_until(
    predicate: Callable[[], T | None], what: str, seconds: float = DEADLINE_SECONDS
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; fail with
    ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.02)


def run_threads(threads: Sequence[threading.Thread], seconds: float = 60.0) -> None:
    """Start every thread, then join each; fail if one is still running after ``seconds``."""
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds)
    stuck = [thread.name for thread in threads if thread.is_alive()]
    assert not stuck, f"still running after {seconds}s: {stuck}"
