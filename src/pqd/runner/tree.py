"""The operating system's view of one cycle: every process of the probe's tree that the cycle
owns, the multiprocessing helpers it relies on, and what the tree costs (CPU, peak RSS).

The runner owns its whole tree (docs/design.md §1a): its cgroup's members, or everything below
it, which as a child subreaper includes double-forked and setsid() orphans. Everything of the
tree is the cycle's except multiprocessing's helpers (forkserver, resource tracker), which live
on between cycles.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Mapping

from pqd.results import StuckProcess
from pqd.runner import mp_private, procs, stacks
from pqd.runner.containment import ProbeCgroup
from pqd.runner.procs import ProcessRef


class CycleTree:
    """The processes one cycle has claimed and the helpers it has seen; used once per cycle."""

    def __init__(self, cgroup: ProbeCgroup | None) -> None:
        self.own_pid = os.getpid()
        self.cgroup = cgroup
        self.owned: dict[int, ProcessRef] = {}
        self.helpers: dict[int, str] = {}  # every helper seen alive during the cycle
        self.peak_rss = 0
        self.max_open_files = 0  # the most descriptors one process held when RSS was sampled

    def members(self) -> list[int]:
        """Every process of the tree now: the cgroup's members, or the runner's descendants."""
        if self.cgroup is not None:
            return self.cgroup.pids()
        return procs.descendants(self.own_pid)

    # -- helpers (forkserver, resource tracker) -----

    def note_helpers(self) -> dict[int, str]:
        """Remember the helpers alive now: one that dies later in the cycle is a finding."""
        for pid, role in mp_private.helper_pids().items():
            if pid not in self.helpers and not procs.is_gone(pid):
                self.helpers[pid] = role
        return dict(self.helpers)

    def helper_problem(self) -> str | None:
        """Why a helper the cycle relies on is not serving: gone, or stopped (SIGSTOP/ptrace).

        Checked before blaming the Manager or a worker: a dead forkserver makes multiprocessing
        report exit code 255 for every process it forked, alive or not. A /proc read that
        fails for another reason than the helper's absence raises (EMFILE under an open-files
        limit): the cycle then fails with that error, which names the limit, and no live
        helper is reported dead."""
        for pid, role in self.helpers.items():
            status = procs.state(pid, strict=True)
            if status in (None, "Z", "X"):
                return f"{role} pid {pid} died"
            if status in ("T", "t"):
                return f"{role} pid {pid} is stopped (state {status})"
        return None

    # -- ownership -----

    def claim(self) -> None:
        """Remember every process of the probe's tree so far, except the helpers. Called before
        teardown too, to take each process's peak RSS while it still exists."""
        helpers = set(mp_private.helper_pids()) | set(self.helpers)
        for pid in self.members():
            if pid == self.own_pid or pid in helpers or pid in self.owned:
                continue
            ref = ProcessRef.of(pid)
            if ref is not None:
                self.owned[pid] = ref
        self.note_peak_rss([self.own_pid, *helpers, *self.owned])

    def owned_alive(self) -> list[ProcessRef]:
        return [proc for proc in self.owned.values() if not _is_gone(proc, self.own_pid)]

    def note_peak_rss(self, pids: Iterable[int]) -> None:
        for pid in pids:
            self.peak_rss = max(self.peak_rss, procs.peak_rss_bytes(pid) or 0)
            self.max_open_files = max(self.max_open_files, procs.open_files(pid) or 0)

    def cpu_seconds(self) -> float:
        """CPU used so far by the tree's long-lived part: the runner (with every child it reaped)
        and its helpers (with the workers and Managers the forkserver reaped). Differences of
        this are a cycle's CPU; a cgroup's own counter is used where there is one."""
        helpers = self.note_helpers()
        if self.cgroup is not None:
            usage = self.cgroup.cpu_seconds()
            if usage is not None:
                return usage
        return sum(procs.cpu_seconds(pid) or 0.0 for pid in [self.own_pid, *helpers])

    def where_stuck(self, roles: Mapping[int, str], *, ask: bool) -> tuple[StuckProcess, ...]:
        """Every live process of the tree: state, wchan, stacks (if ``ask``). ``roles`` names
        the ones the cycle started; then come the runner's helpers, and the rest are "other"."""
        # Helpers started while the pool started (a failure there) are named from
        # multiprocessing's own record, not only those noted alive: under an exhausted
        # RLIMIT_NOFILE the runner cannot open /proc to see that they live.
        helpers = {**mp_private.helper_pids(), **self.note_helpers()}
        named = {self.own_pid: "runner", **roles}
        named.update({pid: role for pid, role in helpers.items() if pid not in named})
        for pid in self.members():
            named.setdefault(pid, "other")
        return stacks.capture(named, os.environ.get(stacks.STACKS_DIR_ENV), ask=ask)


def _is_gone(proc: ProcessRef, own_pid: int) -> bool:
    """True if the process has exited. A zombie whose parent is not us counts as gone: its
    parent (the forkserver) reaps it; our own zombies are reaped by the caller."""
    status = proc.state()
    if status is None or status == "X":
        return True
    return status == "Z" and proc.ppid() != own_pid


def _child_exited() -> bool:
    """True if some child of pqd has exited and not been reaped yet (WNOWAIT: reaps nothing)."""
    if not hasattr(os, "waitid"):
        return True  # cannot tell here: have a look
    try:
        return os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # no children at all
        return False
    except OSError:
        return True  # cannot tell: have a look


def reap_zombie_orphans() -> int:
    """Reap our exited children that nobody else will: orphans adopted as a subreaper.

    multiprocessing's own children and its helpers are left alone: reaping one of those would
    hide its exit code from multiprocessing for good.
    """
    if not _child_exited():
        return 0  # the usual case: no scan of every process on the host
    managed = {p.pid for p in multiprocessing.active_children() if p.pid is not None}
    managed |= set(mp_private.helper_pids())
    return procs.reap_children(keep=managed)
