"""Runs `pqd` with APScheduler's dispatch loop made to hang on SIGUSR1 — a wedged scheduler for
the watchdog test. A test harness only; pqd itself has no such switch."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any


def main() -> int:
    from apscheduler.schedulers.base import BaseScheduler

    from pqd.cli import main as pqd_main

    wedged = threading.Event()
    original = BaseScheduler._process_jobs

    def process_jobs(self: Any) -> Any:
        if wedged.is_set():
            threading.Event().wait()  # never returns: the scheduler thread is stuck here
        return original(self)

    BaseScheduler._process_jobs = process_jobs  # type: ignore[method-assign]

    def wedge(signum: int, frame: object) -> None:
        # The scheduler enters _process_jobs at its next due job: within a heartbeat (1 s).
        wedged.set()

    signal.signal(signal.SIGUSR1, wedge)
    return pqd_main()


if __name__ == "__main__":
    sys.exit(main())
