"""The shared-memory phase of a cycle (docs/design.md §1): the runner creates a
``multiprocessing.shared_memory.SharedMemory`` block of the probe's ``shared_memory_bytes``, a
producer job in a pool worker writes all of it and a consumer job in a pool worker reads it
back, as ML data loaders pass batches between processes; the runner then unlinks it, whatever
happened. A page /dev/shm has no room for kills the writing worker with SIGBUS (the block is
sized with ftruncate, cpython#114389): that failure's detail says it came in this phase, and its
cause is ``shm_full`` (pqd.runner.causes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from multiprocessing import resource_tracker, shared_memory
from multiprocessing.pool import AsyncResult, Pool
from typing import Any

from pqd.runner import jobs
from pqd.runner.causes import SHM_PHASE

#: Every failure of the phase starts its detail with this (pqd.supervisor.diagnosis reads it).
WHERE = SHM_PHASE

#: Waits for a job with the cycle's deadline (raising the cycle's failure): its outcome.
Wait = Callable[["AsyncResult[Any]", str, float], dict[str, Any]]


class ShmPhaseError(Exception):
    """The phase's block could not be created, or a job found it wrong: a job_error."""

    reason = "job_error"

    @property
    def detail(self) -> str:
        return str(self)


def prepare() -> None:
    """Before the pool forks its workers: the runner's resource tracker is running, so that a
    forked worker attaching the block registers it there. Without it (the fork start method
    starts none) each such worker starts a tracker of its own, left behind as a leak."""
    resource_tracker.ensure_running()


def run(pool: Pool | None, size: int, wait: Wait, deadline: float) -> None:
    """Fill and check one block of ``size`` bytes before ``deadline``."""
    assert pool is not None  # the phase comes after the pool's start
    try:
        block = shared_memory.SharedMemory(create=True, size=size)
    except OSError as exc:
        raise ShmPhaseError(f"creating a {size}-byte block: {type(exc).__name__}: {exc}") from None
    try:
        for job, what in (
            (jobs.fill_shared_memory, "producer"),
            (jobs.check_shared_memory, "consumer"),
        ):
            outcome = wait(pool.apply_async(job, (block.name, size)), f"{what} job", deadline)
            if outcome.get("error"):
                raise ShmPhaseError(f"{what} job: {outcome['error']}")
    finally:
        block.close()
        with contextlib.suppress(OSError):
            block.unlink()
