"""The jobs that run inside pool workers.

Standard library only (and the constants of pqd.bounds): spawn and forkserver children import
this module, and every import here is paid for in each of them. Jobs return plain dicts, never
exception objects: an exception that cannot be unpickled kills the pool's result handler
(CPython gh-79492), so whatever a job raises is turned into a string here, in the worker.
Whatever the probe's size, a job returns a bounded amount (pqd.bounds).
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from pqd.bounds import OPERATION_BUCKETS, TRACE_ITEMS, TRACEBACK_CHARS, bucket_index
from pqd.runner import stacks
from pqd.runner.procs import host_pid_count

JobOutcome = dict[str, Any]


class ProbeQueue(Protocol):
    """The part of a Manager queue proxy the jobs use."""

    def put_nowait(self, item: str) -> None: ...

    def get_nowait(self) -> str: ...


def item_name(index: int) -> str:
    """A, B, ..., Z, AA, AB, ... as the seed's items, extended past 26 items."""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


class Tally:
    """What one job reports of its items and queue operations, in bounded memory: the first
    TRACE_ITEMS item names and a count of all, and durations as bucket counts and a sum."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self.item_count = 0
        self.operation_counts = [0] * (len(OPERATION_BUCKETS) + 1)
        self.operation_total = 0.0

    def item(self, name: str) -> None:
        if self.item_count < TRACE_ITEMS:
            self.items.append(name)
        self.item_count += 1

    def operation(self, seconds: float) -> None:
        self.operation_counts[bucket_index(seconds)] += 1
        self.operation_total += seconds

    def outcome(self) -> JobOutcome:
        return {
            "items": self.items,
            "item_count": self.item_count,
            "operation_counts": self.operation_counts,
            "operation_total": self.operation_total,
        }


def produce(q: ProbeQueue, items_per_producer: int) -> tuple[Tally, int]:
    """Put items without blocking; each queue.Full is one full-queue event, as in the seed."""
    tally = Tally()
    full_events = 0
    clock = time.perf_counter
    for index in range(items_per_producer):
        item = item_name(index)
        began = clock()
        try:
            q.put_nowait(item)
        except queue.Full:
            tally.operation(clock() - began)
            full_events += 1
            continue
        tally.operation(clock() - began)
        tally.item(item)
    return tally, full_events


def consume(q: ProbeQueue) -> Tally:
    """Get items without blocking until the queue is empty."""
    tally = Tally()
    clock = time.perf_counter
    while True:
        began = clock()
        try:
            item = q.get_nowait()
        except queue.Empty:
            tally.operation(clock() - began)
            return tally
        tally.operation(clock() - began)
        tally.item(item)


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
    tally, full_events = produce(q, items_per_producer)
    if pause > 0:
        time.sleep(pause)
    outcome.update(tally.outcome(), kind="producer", round=round_no, full_events=full_events)
    return outcome


def consumer_job(q: ProbeQueue, round_no: int, items_per_producer: int, pause: float) -> JobOutcome:
    outcome = _identity()
    tally = consume(q)
    if pause > 0:
        time.sleep(pause)
    outcome.update(tally.outcome(), kind="consumer", round=round_no, full_events=0)
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
    stacks.install()
    die_with(pqd_pid)


def init_manager(pqd_pid: int) -> None:
    """The Manager's initializer: it, too, can show its stacks and dies with pqd."""
    stacks.install()
    die_with(pqd_pid)


def _traceback_text(exc: BaseException) -> str:
    """The worker's traceback as text, its last TRACEBACK_CHARS characters (pqd.bounds)."""
    import traceback  # only when a job failed: workers do not pay for it otherwise

    try:
        # The three-argument form: format_exception(exc) alone is 3.10+ (the runner runs on 3.9).
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    except BaseException:  # a hostile __str__ again
        text = f"{type(exc).__name__} (its traceback could not be formatted)"
    return text if len(text) <= TRACEBACK_CHARS else "...\n" + text[-TRACEBACK_CHARS:]


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
            Tally().outcome(),
            round=round_no,
            full_events=0,
            error=text.splitlines()[0] if text else type(exc).__name__,
            traceback=_traceback_text(exc),
        )
        return outcome


# -- the shared-memory phase (pqd.runner.shm_phase) ------------------------------------------

#: Written and read in chunks of this many bytes, each chunk a byte of its own: a block that
#: was not written whole, or was swapped with another, reads wrong.
SHM_CHUNK = 1 << 20


def _shm_chunks(size: int) -> Iterator[tuple[int, bytes]]:
    for offset in range(0, size, SHM_CHUNK):
        yield offset, bytes([offset // SHM_CHUNK % 251 + 1]) * min(SHM_CHUNK, size - offset)


def fill_shared_memory(name: str, size: int) -> JobOutcome:
    """The producer of the shared-memory phase: write every byte of the runner's block, as a
    data loader's worker writes a batch (a page /dev/shm has no room for is SIGBUS here)."""
    from multiprocessing import shared_memory  # only in a probe with the phase on

    return _on_block(shared_memory.SharedMemory(name=name), size, write=True)


def check_shared_memory(name: str, size: int) -> JobOutcome:
    """The consumer: read the block back and compare every chunk."""
    from multiprocessing import shared_memory

    return _on_block(shared_memory.SharedMemory(name=name), size, write=False)


def _on_block(block: Any, size: int, *, write: bool) -> JobOutcome:
    try:
        view = block.buf
        for offset, chunk in _shm_chunks(size):
            if write:
                view[offset : offset + len(chunk)] = chunk
            elif view[offset : offset + len(chunk)] != chunk:
                return {"pid": os.getpid(), "error": f"bytes {offset}.. read back wrong"}
        del view
        return {"pid": os.getpid(), "error": None}
    finally:
        block.close()
