"""Every reach into multiprocessing's private attributes, in one place.

The cycle needs a few things multiprocessing has no public way to give: the processes behind a
Pool and a Manager (to see one die: ``AsyncResult.get()`` waits forever for a killed worker's
result), the pids of its helpers (to recognise one that has died), and the means to tear down
a pool whose dead worker still holds one of its locks (docs/design.md §5). CPython may rename
any of these in a release. ``PRIVATE_ATTRIBUTES`` lists them all, and
tests/unit/runner/test_mp_private.py resolves each on real objects and names the one that is gone.

Most are read with ``getattr`` defaults on purpose: they are read while tearing down after a
failure, where an AttributeError would leave processes behind; the helpers' pids are read
defensively for the reason helper_pids gives.
"""

from __future__ import annotations

import multiprocessing.pool
from collections.abc import Callable
from multiprocessing.managers import BaseManager
from multiprocessing.process import BaseProcess
from typing import Any, Final

#: Each private attribute used below, by what it is reached from.
PRIVATE_ATTRIBUTES: Final = {
    "Pool": ("_pool", "_worker_handler._state", "_inqueue._rlock", "_outqueue._wlock", "_cache"),
    "BaseManager": ("_process",),
    "multiprocessing.forkserver": ("_forkserver._forkserver_pid",),
    "multiprocessing.resource_tracker": ("_resource_tracker._pid",),
}


def helper_pids() -> dict[int, str]:
    """The helpers multiprocessing itself has on record: forkserver and resource tracker.

    Read defensively: these are the only way to recognise a helper that has already died (its
    command line is gone), and a dead helper must be left for multiprocessing to reap — its
    ensure_running() fails with ChildProcessError if anyone else reaps it.

    Versions: the same two attributes from 3.9 to 3.13 (tests/helpers/mp_private_check.py
    resolves them under each CPython found). CPython 3.14 authenticates the forkserver's
    control socket (gh-97514: ``_forkserver_authkey`` beside ``_forkserver_pid``, reset with it
    when the forkserver is stopped); pqd never connects to a forkserver itself, so only the
    pid is read, and an authkey without a pid means no forkserver here. 3.14 (and 3.13.x by
    backport) also reaps the resource tracker when ResourceTracker is deleted or stopped
    (gh-88887, bounded since gh-146313) and sets ``_pid`` to None then: the isinstance check
    below reads that as "no tracker", which it is. 3.14's default start method on Linux
    becomes forkserver (gh-84559); the cycle always names its context
    (multiprocessing.get_context(probe.start_method)), so the default never applies."""
    import multiprocessing.forkserver
    import multiprocessing.resource_tracker

    known = {}
    forkserver_pid = getattr(
        getattr(multiprocessing.forkserver, "_forkserver", None), "_forkserver_pid", None
    )
    tracker_pid = getattr(
        getattr(multiprocessing.resource_tracker, "_resource_tracker", None), "_pid", None
    )
    if isinstance(forkserver_pid, int):
        known[forkserver_pid] = "forkserver"
    if isinstance(tracker_pid, int):
        known[tracker_pid] = "resource_tracker"
    return known


def pool_workers(pool: multiprocessing.pool.Pool | None) -> list[BaseProcess]:
    """The pool's worker processes now, replacements for dead ones included (``Pool._pool``);
    none without a pool."""
    return list(getattr(pool, "_pool", []))


def manager_process(manager: BaseManager) -> BaseProcess:
    """The process a started Manager runs in (``BaseManager._process``)."""
    process: BaseProcess = manager._process  # type: ignore[attr-defined]
    return process


def stop_replacing_workers(pool: multiprocessing.pool.Pool) -> None:
    """Stop the pool's maintenance thread from starting replacements for workers that die (or
    that the cycle kills): its loop runs while ``Pool._worker_handler._state`` is RUN."""
    handler = getattr(pool, "_worker_handler", None)
    if handler is not None:
        handler._state = multiprocessing.pool.TERMINATE


def replace_queue_locks(pool: multiprocessing.pool.Pool, new_lock: Callable[[], Any]) -> None:
    """Give the pool's task queue a new read lock and its result queue a new write lock: a
    worker killed while holding one leaves it locked for good, and ``Pool.terminate()``
    acquires the first and writes through the second."""
    inqueue = getattr(pool, "_inqueue", None)
    outqueue = getattr(pool, "_outqueue", None)
    if inqueue is not None:
        inqueue._rlock = new_lock()
    if outqueue is not None and getattr(outqueue, "_wlock", None) is not None:
        outqueue._wlock = new_lock()


def forget_pending_results(pool: multiprocessing.pool.Pool) -> None:
    """Drop the results the pool still waits for (``Pool._cache``): they will never arrive,
    and terminate() refuses to run with a dead result handler and a non-empty cache
    (gh-79492)."""
    cache = getattr(pool, "_cache", None)
    if cache is not None:
        cache.clear()
