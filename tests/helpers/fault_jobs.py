"""Jobs that tests hand to run_cycle(jobs=...). Module level, so pool workers can import them.

They only announce themselves (a file named after the worker's pid while the job runs) or raise;
the faults themselves are injected from outside by the tests, as an operator's host would.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import struct
import time
from pathlib import Path

from pqd.runner import jobs

ANNOUNCE_ENV = "PQDTEST_ANNOUNCE_DIR"


def _busy_file() -> Path:
    return Path(os.environ[ANNOUNCE_ENV]) / f"{os.getpid()}.busy"


def announcing_producer(
    q: jobs.ProbeQueue, round_no: int, items: int, pause: float
) -> jobs.JobOutcome:
    busy = _busy_file()
    busy.write_text(str(round_no))
    try:
        return jobs.producer_job(q, round_no, items, pause)
    finally:
        busy.unlink(missing_ok=True)


def announcing_consumer(
    q: jobs.ProbeQueue, round_no: int, items: int, pause: float
) -> jobs.JobOutcome:
    busy = _busy_file()
    busy.write_text(str(round_no))
    try:
        return jobs.consumer_job(q, round_no, items, pause)
    finally:
        busy.unlink(missing_ok=True)


class UnpicklableError(Exception):
    """Pickles but cannot be unpickled (two required arguments, one passed): gh-79492."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def raising_producer(
    q: jobs.ProbeQueue, round_no: int, items: int, pause: float
) -> jobs.JobOutcome:
    raise UnpicklableError("producer refused", 7)


TRIGGER_ENV = "PQDTEST_LEAK_TRIGGER"
#: What the leaked children run: `sleep <this>`, a value no other process on the host has.
SLEEP_ENV = "PQDTEST_SLEEP"


def _exec_sleep() -> None:
    try:
        os.execv("/bin/sleep", ["sleep", os.environ.get(SLEEP_ENV, "300")])
    finally:
        os._exit(127)


def _plain_child() -> None:
    """A child of the worker that outlives the job."""
    if os.fork() == 0:
        _exec_sleep()


def _setsid_grandchild() -> None:
    """The daemon recipe: fork, setsid(), fork again, the middle one exits. The grandchild has
    no parent left but the nearest subreaper, and a session of its own."""
    middle = os.fork()
    if middle == 0:
        os.setsid()
        if os.fork() == 0:
            _exec_sleep()
        os._exit(0)
    os.waitpid(middle, 0)


def spawning_on_trigger_producer(
    q: jobs.ProbeQueue, round_no: int, items: int, pause: float
) -> jobs.JobOutcome:
    """Each time the test writes "plain N" or "setsid N" to the trigger file, the next producer
    leaves N processes of that kind behind (it claims the file by renaming it)."""
    trigger = os.environ.get(TRIGGER_ENV)
    if trigger:
        claimed = f"{trigger}.{os.getpid()}"
        try:
            os.rename(trigger, claimed)
        except FileNotFoundError:
            pass
        else:
            kind, _, count = Path(claimed).read_text().partition(" ")
            os.unlink(claimed)
            for _ in range(int(count or 1)):
                _setsid_grandchild() if kind == "setsid" else _plain_child()
    return jobs.producer_job(q, round_no, items, pause)


def forking_producer(
    q: jobs.ProbeQueue, round_no: int, items: int, pause: float
) -> jobs.JobOutcome:
    """Leaves a grandchild behind that outlives the job (a leak, as a careless job would)."""
    if round_no == 1:
        _plain_child()
    return jobs.producer_job(q, round_no, items, pause)


def setsid_leaking_producer(
    q: jobs.ProbeQueue, round_no: int, items: int, pause: float
) -> jobs.JobOutcome:
    """Leaves one setsid() grandchild behind in round 1 of every cycle: a leak each cycle."""
    if round_no == 1:
        _setsid_grandchild()
    return jobs.producer_job(q, round_no, items, pause)


BURN_ENV = "PQDTEST_BURN_SECONDS"


def burning_producer(
    q: jobs.ProbeQueue, round_no: int, items: int, pause: float
) -> jobs.JobOutcome:
    """Spends $PQDTEST_BURN_SECONDS (default 0.2) of this worker's own CPU time first."""
    until = time.process_time() + float(os.environ.get(BURN_ENV, "0.2"))
    while time.process_time() < until:
        pass
    return jobs.producer_job(q, round_no, items, pause)


def _announce(text: str) -> None:
    """Tell the test this worker's pid (the file's name) and ``text``, then carry on."""
    directory = os.environ.get(ANNOUNCE_ENV)
    if directory:
        (Path(directory) / f"{os.getpid()}.busy").write_text(text)


def sleeping_producer(
    q: jobs.ProbeQueue, round_no: int, items: int, pause: float
) -> jobs.JobOutcome:
    """Never finishes on its own: the cycle times out with this job in time.sleep."""
    _announce("sleeping")
    time.sleep(3600)  # SLEEPING_LINE: the line "Where it was stuck" must point at
    return jobs.producer_job(q, round_no, items, pause)


def _manager_pid(q: jobs.ProbeQueue) -> int:
    """The Manager's pid: the peer of the proxy's connection (SO_PEERCRED on its unix socket)."""
    connection = q._tls.connection  # type: ignore[attr-defined]
    peer = socket.socket(fileno=os.dup(connection.fileno()))
    try:
        creds = peer.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    finally:
        peer.close()
    return int(struct.unpack("3i", creds)[0])


def churning_producer(
    q: jobs.ProbeQueue, round_no: int, items: int, pause: float
) -> jobs.JobOutcome:
    """Puts for an hour (each put_nowait is a round trip to the Manager, Full or not), after
    telling the test the Manager's pid: a test that stops the Manager finds this worker blocked
    in put_nowait."""
    q.put_nowait("A")
    q.get_nowait()
    _announce(f"manager {_manager_pid(q)}")
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Full):
            q.put_nowait("A")  # CHURN_LINE
    return jobs.producer_job(q, round_no, items, pause)


def shared_memory_leaving_producer(
    q: jobs.ProbeQueue, round_no: int, items: int, pause: float
) -> jobs.JobOutcome:
    """Leaves a shared-memory block in /dev/shm (closed, never unlinked) in round 1, as a job
    that forgets ``unlink()`` does; the resource tracker would remove it only when it exits."""
    if round_no == 1:
        from multiprocessing import shared_memory

        shared_memory.SharedMemory(create=True, size=4096).close()
    return jobs.producer_job(q, round_no, items, pause)
