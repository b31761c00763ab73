"""Loaded by `site` in every interpreter whose PYTHONPATH has this directory (the worker_hook
condition puts it there). Inert unless $PQDCOND_HOOK_DIR is set; then it wraps CPython's
``multiprocessing.pool.worker`` (stdlib, the same signature 3.9 to 3.13) so that each pool
worker, under any start method:

* announces itself: ``worker-PID`` in the hook dir, and ``busy-PID`` while a job runs;
* takes at most one queued fault: a file ``fault-N`` in the hook dir, claimed atomically by
  renaming it to ``claimed-N-PID``; its text says what the claiming job does instead of
  running normally (``segv``, ``bus``, ``abrt``, ``oom BYTES``, ``sleep SECONDS``, ``stop``,
  ``exit CODE``, ``unpicklable_result``, ``unpicklable_error``, ``leave_semaphores N``);
* and, besides, the fault in a file ``every-job`` of the hook dir, if there is one: every job
  does it, for as long as the file is there (a leak that repeats, cycle after cycle).

It knows nothing of pqd: only that pqd's cycle runs a multiprocessing.Pool.
"""

from __future__ import annotations

import os
from typing import Any


class _Unpicklable(Exception):
    """Pickles, cannot be unpickled (two required arguments, one passed): gh-79492."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _claim(hook_dir: str) -> str | None:
    for name in sorted(os.listdir(hook_dir)):
        if name.startswith("fault-"):
            claimed = f"claimed-{name[6:]}-{os.getpid()}"
            try:
                os.rename(os.path.join(hook_dir, name), os.path.join(hook_dir, claimed))
            except OSError:
                continue
            with open(os.path.join(hook_dir, claimed)) as f:
                return f.read().strip()
    return None


def _sigbus(hook_dir: str) -> None:
    import mmap

    path = os.path.join(hook_dir, f"bus-{os.getpid()}")
    with open(path, "w+b") as f:
        f.truncate(mmap.PAGESIZE)
        mapped = mmap.mmap(f.fileno(), mmap.PAGESIZE)
        f.truncate(0)
        mapped[0]  # a page past the end of the file: SIGBUS


def _leave_semaphores(count: int) -> None:
    """Named semaphores left in /dev/shm: made as multiprocessing makes its own ("/mp-..."),
    closed and never unlinked, as a process leaves them whose resource tracker is gone or that
    never had one (billiard#293). Stops quietly once /dev/shm is full: the failure that follows
    is the next semaphore multiprocessing itself needs, not this one."""
    import _multiprocessing

    for _ in range(count):
        name = f"/mp-pqdcond-leak-{os.getpid()}-{os.urandom(6).hex()}"
        try:
            _multiprocessing.SemLock(1, 1, 1, name, False)  # SEMAPHORE, value, max, name, unlink
        except OSError:
            return


def _fault(hook_dir: str, fault: str) -> Any:
    """Do the fault; return a replacement result, or None to run the job normally."""
    kind, _, arg = fault.partition(" ")
    if kind == "segv":
        import ctypes

        ctypes.string_at(0)
    elif kind == "bus":
        _sigbus(hook_dir)
    elif kind == "abrt":
        os.abort()
    elif kind == "oom":
        held = b"\x01" * int(arg)  # written, so every page is charged
        del held
    elif kind == "sleep":
        import time

        time.sleep(float(arg))
    elif kind == "stop":
        import signal

        os.kill(os.getpid(), signal.SIGSTOP)
    elif kind == "exit":
        os._exit(int(arg or "1"))
    elif kind == "unpicklable_result":
        return lambda: None
    elif kind == "unpicklable_error":
        raise _Unpicklable("fault hook raised an exception that cannot be unpickled", 7)
    elif kind == "leave_semaphores":
        _leave_semaphores(int(arg))
    return None


def _every_job(hook_dir: str) -> str | None:
    try:
        with open(os.path.join(hook_dir, "every-job")) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _wrap_job(hook_dir: str, func: Any) -> Any:
    def job(*args: Any, **kwargs: Any) -> Any:
        busy = os.path.join(hook_dir, f"busy-{os.getpid()}")
        with open(busy, "w"):
            pass
        try:
            fault = _claim(hook_dir)
            if fault is not None:
                replaced = _fault(hook_dir, fault)
                if replaced is not None:
                    return replaced
            repeated = _every_job(hook_dir)
            if repeated is not None:
                replaced = _fault(hook_dir, repeated)
                if replaced is not None:
                    return replaced
            return func(*args, **kwargs)
        finally:
            os.unlink(busy)

    return job


def _install(hook_dir: str) -> None:
    import functools
    import multiprocessing.pool as pool

    original = pool.worker  # type: ignore[attr-defined]

    @functools.wraps(original)
    def worker(inqueue: Any, outqueue: Any, *args: Any, **kwargs: Any) -> Any:
        with open(os.path.join(hook_dir, f"worker-{os.getpid()}"), "w"):
            pass
        get = inqueue.get

        def get_task() -> Any:
            task = get()
            if task is None:
                return task
            job, i, func, fargs, fkwargs = task
            return job, i, _wrap_job(hook_dir, func), fargs, fkwargs

        inqueue.get = get_task  # worker() reads inqueue.get after this
        return original(inqueue, outqueue, *args, **kwargs)

    pool.worker = worker  # type: ignore[attr-defined]


if os.environ.get("PQDCOND_HOOK_DIR"):
    _install(os.environ["PQDCOND_HOOK_DIR"])
