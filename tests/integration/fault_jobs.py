"""Jobs that tests hand to run_cycle(jobs=...). Module level, so pool workers can import them.

They only announce themselves (a file named after the worker's pid while the job runs) or raise;
the faults themselves are injected from outside by the tests, as an operator's host would.
"""

from __future__ import annotations

import os
from pathlib import Path

from pqd import workers

ANNOUNCE_ENV = "PQDTEST_ANNOUNCE_DIR"


def _busy_file() -> Path:
    return Path(os.environ[ANNOUNCE_ENV]) / f"{os.getpid()}.busy"


def announcing_producer(
    q: workers.ProbeQueue, round_no: int, items: int, pause: float
) -> workers.JobOutcome:
    busy = _busy_file()
    busy.write_text(str(round_no))
    try:
        return workers.producer_job(q, round_no, items, pause)
    finally:
        busy.unlink(missing_ok=True)


def announcing_consumer(
    q: workers.ProbeQueue, round_no: int, items: int, pause: float
) -> workers.JobOutcome:
    busy = _busy_file()
    busy.write_text(str(round_no))
    try:
        return workers.consumer_job(q, round_no, items, pause)
    finally:
        busy.unlink(missing_ok=True)


class UnpicklableError(Exception):
    """Pickles but cannot be unpickled (two required arguments, one passed): gh-79492."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def raising_producer(
    q: workers.ProbeQueue, round_no: int, items: int, pause: float
) -> workers.JobOutcome:
    raise UnpicklableError("producer refused", 7)


TRIGGER_ENV = "PQDTEST_LEAK_TRIGGER"


def forking_on_trigger_producer(
    q: workers.ProbeQueue, round_no: int, items: int, pause: float
) -> workers.JobOutcome:
    """Leaves a grandchild behind once each time the trigger file appears (and consumes it)."""
    trigger = os.environ.get(TRIGGER_ENV)
    if trigger:
        try:
            os.unlink(trigger)
        except FileNotFoundError:
            pass
        else:
            if os.fork() == 0:
                try:
                    os.execv("/bin/sleep", ["sleep", "300"])
                finally:
                    os._exit(127)
    return workers.producer_job(q, round_no, items, pause)


def forking_producer(
    q: workers.ProbeQueue, round_no: int, items: int, pause: float
) -> workers.JobOutcome:
    """Leaves a grandchild behind that outlives the job (a leak, as a careless job would)."""
    if round_no == 1 and os.fork() == 0:
        try:
            os.execv("/bin/sleep", ["sleep", "300"])
        finally:
            os._exit(127)
    return workers.producer_job(q, round_no, items, pause)
