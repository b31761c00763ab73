"""The jobs that run inside pool workers.

Standard library only: spawn and forkserver children import this module, and every import here
is paid for in each of them. Jobs return plain dicts, never exception objects: an exception that
cannot be unpickled kills the pool's result handler (CPython gh-79492), so whatever a job raises
is turned into a string here, in the worker.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import select
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

JobOutcome = dict[str, Any]


class ProbeQueue(Protocol):
    """The part of a Manager queue proxy the jobs use."""

    def put_nowait(self, item: str) -> None: ...

    def get_nowait(self) -> str: ...


def host_pid_count() -> int:
    """Processes on the host, counted as psutil.pids() does on Linux, without importing psutil."""
    try:
        return sum(1 for entry in os.scandir("/proc") if entry.name.isdigit())
    except OSError:
        return -1


def item_name(index: int) -> str:
    """A, B, ..., Z, AA, AB, ... as the seed's items, extended past 26 items."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


def produce(q: ProbeQueue, items_per_producer: int) -> tuple[list[str], int, list[float]]:
    """Put items without blocking; each queue.Full is one full-queue event, as in the seed."""
    put: list[str] = []
    full_events = 0
    durations: list[float] = []
    clock = time.perf_counter
    for index in range(items_per_producer):
        item = item_name(index)
        began = clock()
        try:
            q.put_nowait(item)
        except queue.Full:
            durations.append(clock() - began)
            full_events += 1
            continue
        durations.append(clock() - began)
        put.append(item)
    return put, full_events, durations


def consume(q: ProbeQueue) -> tuple[list[str], list[float]]:
    """Get items without blocking until the queue is empty."""
    got: list[str] = []
    durations: list[float] = []
    clock = time.perf_counter
    while True:
        began = clock()
        try:
            item = q.get_nowait()
        except queue.Empty:
            durations.append(clock() - began)
            return got, durations
        durations.append(clock() - began)
        got.append(item)


def _identity() -> JobOutcome:
    process = multiprocessing.current_process()
    return {
        "pid": os.getpid(),
        "process_name": process.name,
        "is_alive": process.is_alive(),
        "parent_pid": os.getppid(),
        "host_pid_count": host_pid_count(),
        "started_at": time.time(),
    }


def producer_job(q: ProbeQueue, round_no: int, items_per_producer: int, pause: float) -> JobOutcome:
    outcome = _identity()
    put, full_events, durations = produce(q, items_per_producer)
    if pause > 0:
        time.sleep(pause)
    outcome.update(
        kind="producer",
        round=round_no,
        items=put,
        full_events=full_events,
        operation_seconds=durations,
    )
    return outcome


def consumer_job(q: ProbeQueue, round_no: int, items_per_producer: int, pause: float) -> JobOutcome:
    outcome = _identity()
    got, durations = consume(q)
    if pause > 0:
        time.sleep(pause)
    outcome.update(
        kind="consumer", round=round_no, items=got, full_events=0, operation_seconds=durations
    )
    return outcome


Job = Callable[[ProbeQueue, int, int, float], JobOutcome]

# The probe queue's proxy, handed to each worker once by the pool's initializer.
_probe_queue: ProbeQueue | None = None


def die_with(pqd_pid: int) -> None:
    """SIGKILL this process as soon as pqd (``pqd_pid``) exits, however it exits.

    PR_SET_PDEATHSIG is not enough: under forkserver the parent is the forkserver, which
    outlives a SIGKILLed pqd for as long as any of its children holds its "alive" pipe — and
    every forked child does. A pidfd becomes readable when the process exits; a daemon thread
    waiting on it costs nothing until then.
    """
    try:
        pidfd = os.pidfd_open(pqd_pid)
    except ProcessLookupError:
        os.kill(os.getpid(), signal.SIGKILL)
        return
    except (AttributeError, OSError):
        pidfd = -1  # no pidfd (old kernel): fall back to polling

    def wait_for_pqd() -> None:
        if pidfd >= 0:
            select.select([pidfd], [], [])
        else:
            while os.path.exists(f"/proc/{pqd_pid}"):
                time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait_for_pqd, name="pqd-death-watch", daemon=True).start()


def init_worker(q: ProbeQueue, pqd_pid: int) -> None:
    """Pool initializer: keep one queue proxy for the worker's whole life.

    Passing the proxy with every task instead makes a new proxy per task, and proxies of one
    referent share a connection per thread that the *first* of them to be garbage collected
    closes — under the feet of the one in use ("'NoneType' object cannot be interpreted as an
    integer" from Connection._send, seen in pqd's daemon under load). It also saves the incref
    round trip to the Manager that unpickling a proxy costs.
    """
    global _probe_queue
    _probe_queue = q
    die_with(pqd_pid)


def run_job(job: Job, round_no: int, items_per_producer: int, pause: float) -> JobOutcome:
    """Run one job in a pool worker and always return plain data.

    BaseException is caught too: a job that calls sys.exit() must not take the worker's result
    with it. Only os._exit() or a signal can still lose the result, and the parent sees that as
    a dead worker.
    """
    try:
        if _probe_queue is None:
            raise RuntimeError("pool worker started without init_worker")
        return job(_probe_queue, round_no, items_per_producer, pause)
    except BaseException as exc:
        outcome = _identity()
        try:
            text = f"{type(exc).__name__}: {exc}"
        except BaseException:  # a hostile __str__ must not escape either
            text = type(exc).__name__
        outcome.update(
            round=round_no,
            items=[],
            full_events=0,
            operation_seconds=[],
            error=text.splitlines()[0] if text else type(exc).__name__,
        )
        return outcome
