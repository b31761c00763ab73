"""The Manager and the Pool of one cycle as multiprocessing objects: whether they are alive, and
their teardown when the cycle has failed.

A forced teardown SIGKILLs every process of the tree first and only then lets the pool and
Manager objects finish, so that none of them waits on a lock or a socket a dead process held
(docs/design.md §5).
"""

from __future__ import annotations

import contextlib
import multiprocessing.context
import multiprocessing.managers
import multiprocessing.pool
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

from pqd.runner import mp_private
from pqd.runner.deadline_calls import BlockingCaller
from pqd.runner.procs import ProcessRef
from pqd.runner.tree import CycleTree, reap_zombie_orphans

#: How long killed processes get to disappear before they are counted as left behind.
REAP_SECONDS = 3.0
#: How long exited descendants may linger (their parent has not reaped them yet) before a
#: process is counted as leaked.
SETTLE_SECONDS = 2.0


class CycleProcesses:
    """What multiprocessing started for one cycle; filled in as the cycle starts them."""

    def __init__(self, ctx: multiprocessing.context.BaseContext, caller: BlockingCaller) -> None:
        self.ctx = ctx
        self.caller = caller
        self.manager: multiprocessing.managers.SyncManager | None = None
        self.manager_process: BaseProcess | None = None
        self.pool: multiprocessing.pool.Pool | None = None
        # The pool replaces dead workers behind our back; the originals, so a death is seen.
        self.pool_processes: list[BaseProcess] = []

    def manager_started(self, manager: multiprocessing.managers.SyncManager) -> None:
        self.manager, self.manager_process = manager, mp_private.manager_process(manager)

    def pool_started(self, pool: multiprocessing.pool.Pool) -> None:
        self.pool, self.pool_processes = pool, mp_private.pool_workers(pool)

    def started_pids(self) -> tuple[int, tuple[int, ...]]:
        """The Manager's pid and the pool workers', once they have started."""
        assert self.manager_process is not None and self.manager_process.pid is not None
        return self.manager_process.pid, tuple(p.pid or 0 for p in self.pool_processes)

    # -- liveness -----

    def manager_alive(self) -> bool:
        return self.manager_process is not None and self.manager_process.exitcode is None

    def dead_worker(self) -> BaseProcess | None:
        for process in self.pool_processes:
            if process.exitcode is not None:
                return process
        return None

    def workers_live(self) -> int:
        return sum(1 for p in mp_private.pool_workers(self.pool) if p.exitcode is None)

    def pids(self) -> list[int]:
        """The Manager and the pool's workers, replacements included."""
        processes = [*self.pool_processes, *mp_private.pool_workers(self.pool)]
        if self.manager_process is not None:
            processes.append(self.manager_process)
        return [p.pid for p in processes if p.pid is not None]

    def roles(self) -> dict[int, str]:
        """The Manager and each pool worker by role, as "Where it was stuck" names them."""
        roles = {}
        if self.manager_process is not None and self.manager_process.pid is not None:
            roles[self.manager_process.pid] = "Manager"
        for number, process in enumerate(self.pool_processes, 1):
            if process.pid is not None:
                roles[process.pid] = f"pool worker {number}"
        for process in mp_private.pool_workers(self.pool):
            if process.pid is not None:
                roles.setdefault(process.pid, "pool worker (replacement)")
        return roles

    # -- teardown -----

    def kill_everything(self, tree: CycleTree) -> None:
        """SIGKILL every process the cycle started, then let the pool and Manager objects finish
        without any of them waiting on a lock or a socket that a dead process held."""
        pool = self.pool
        if pool is not None:
            # Stop the pool's maintenance thread from starting replacements for what we kill.
            mp_private.stop_replacing_workers(pool)
        for _ in range(5):
            tree.claim()
            targets = tree.owned_alive()
            if not targets:
                break
            for proc in targets:
                proc.kill()  # only if the pid still names the process we claimed
            self.reap(tree, time.monotonic() + REAP_SECONDS)
        if pool is not None:
            self.finish_pool(pool)
        if self.manager is not None:
            with contextlib.suppress(Exception):
                # The Manager process is dead: shutdown() only joins it and marks the state.
                self.caller.call(self.manager.shutdown, REAP_SECONDS, "stopping the Manager")

    def finish_pool(self, pool: multiprocessing.pool.Pool) -> None:
        """Pool.terminate() once a dead worker can no longer hold it up: with the pool's queue
        locks replaced and the results it waits for forgotten."""
        mp_private.replace_queue_locks(pool, self.queue_lock)
        mp_private.forget_pending_results(pool)
        with contextlib.suppress(Exception):
            self.caller.call(pool.terminate, REAP_SECONDS, "terminating the pool")

    def queue_lock(self) -> Any:
        """A lock of the pool's kind, or, where none can be made (ENOSPC: /dev/shm full, as the
        jobs may have left it), a lock of this process: the tree is dead by now and only the
        pool's threads here still take it. A semaphore is never worth a teardown that fails."""
        try:
            return self.ctx.Lock()
        except OSError:
            return threading.Lock()

    def retire_forkserver(self, own_pid: int) -> None:
        """After a cycle could not start its processes, stop the forkserver too: it may be what
        is broken (stopped, or crashed half-way through a request, which leaves it refusing
        connections while multiprocessing still thinks it runs). It is left as a zombie for
        multiprocessing to reap, which then starts a fresh one for the next cycle."""
        if not isinstance(self.ctx, multiprocessing.context.ForkServerContext):
            return
        for pid, role in mp_private.helper_pids().items():
            if role != "forkserver":
                continue
            proc = ProcessRef.of(pid)
            if proc is None or proc.ppid() != own_pid:
                continue
            proc.kill()
            deadline = time.monotonic() + REAP_SECONDS
            while time.monotonic() < deadline and proc.state() not in (None, "Z"):
                time.sleep(0.005)

    def reap(self, tree: CycleTree, deadline: float) -> None:
        """Wait for the cycle's processes to go. multiprocessing reaps its own Process objects
        (so they see their exit codes); orphans pqd adopted as a subreaper are reaped here."""
        for process in [*self.pool_processes, self.manager_process]:
            if process is not None:
                with contextlib.suppress(Exception):
                    process.join(max(0.0, deadline - time.monotonic()))
        while True:
            reap_zombie_orphans()
            if not tree.owned_alive() or time.monotonic() >= deadline:
                return
            time.sleep(0.01)

    def find_leaks(self, tree: CycleTree) -> list[ProcessRef]:
        """Processes of the tree still there after a clean teardown, helpers aside."""
        self.reap(tree, time.monotonic() + SETTLE_SECONDS)
        # Orphans that re-parented to us after the last look (a double fork's grandchild).
        tree.claim()
        reap_zombie_orphans()
        return sorted(tree.owned_alive(), key=lambda p: p.pid)
