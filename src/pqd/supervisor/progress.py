"""What pqd hears of a cycle while its runner streams it, and the result of a cycle pqd had to
end itself (the runner timed out, died or stopped) built from that (docs/design.md §1a)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pqd.probe import ProbeConfig
from pqd.results import (
    PROCESS_ROLES,
    CycleResult,
    Headroom,
    JobLedger,
    LiveSample,
    StuckProcess,
    settings_and_jobs,
)
from pqd.runner import procs
from pqd.runner.events import Begun, Event, Failing, Finished, JobFinished, ProcessesStarted
from pqd.supervisor.runner_process import RunnerProcess

CANCELLED = "cancelled: pqd is stopping"
_FORKSERVER_MARK = "multiprocessing.forkserver"
_TRACKER_MARK = "multiprocessing.resource_tracker"
_HELPER_ROLES = ("forkserver", "resource_tracker")


class LiveObserver(Protocol):
    """Given the live sample taken after each job; the daemon feeds live gauges from it."""

    def sampled(self, sample: LiveSample) -> None: ...


@dataclass
class Progress:
    """What pqd has heard of a cycle so far: enough to report it if it must be killed."""

    probe: ProbeConfig
    cycle_id: str
    started_at: float
    t0: float
    pid_count_before: int = -1
    processes_at: float | None = None
    roles: dict[int, str] = field(default_factory=dict)  # from "begun" and "processes"
    jobs: JobLedger = field(default_factory=JobLedger)
    failing: tuple[str, str] | None = None
    failing_at: float | None = None
    result: CycleResult | None = None
    headroom: Headroom | None = None  # as the runner read it when the cycle began

    def apply(self, event: Event, observer: LiveObserver | None) -> None:
        """Take in one event of the runner's."""
        if isinstance(event, Begun):
            self.pid_count_before = event.host_pid_count
            self.headroom = event.headroom
            for pid, role in event.helpers.items():
                self.roles.setdefault(pid, role)
        elif isinstance(event, ProcessesStarted):
            self.processes_at = time.monotonic()
            self.roles[event.manager_pid] = "Manager"
            for number, pid in enumerate(event.worker_pids, 1):
                self.roles[pid] = f"pool worker {number}"
        elif isinstance(event, JobFinished):
            report = event.report
            self.jobs.add(report)
            if observer is not None:
                observer.sampled(
                    LiveSample(self.probe.name, report.queue_depth_after, report.workers_live_after)
                )
        elif isinstance(event, Failing):
            self.failing = (event.reason, event.detail)
            self.failing_at = time.monotonic()
        elif isinstance(event, Finished):
            self.result = event.result


def role_of(pid: int) -> str:
    """A helper's role from its command line (pqd cannot ask the runner's multiprocessing)."""
    text = procs.cmdline(pid)
    if _FORKSERVER_MARK in text:
        return "forkserver"
    if _TRACKER_MARK in text:
        return "resource_tracker"
    return "other"


def roles(runner: RunnerProcess, progress: Progress, tree: Sequence[int]) -> dict[int, str]:
    """Each process of the tree by role, in the order "Where it was stuck" lists them."""
    found = {pid: role for pid, role in progress.roles.items() if pid in tree}
    found[runner.pid] = "runner"
    for pid in tree:
        found.setdefault(pid, role_of(pid))
    return dict(sorted(found.items(), key=lambda item: _role_rank(item[1])))


def _role_rank(role: str) -> int:
    """PROCESS_ROLES' order; "pool worker 2" ranks as "pool worker"."""
    for rank, prefix in enumerate(PROCESS_ROLES):
        if role.startswith(prefix):
            return rank
    return len(PROCESS_ROLES)


def states(pids: Sequence[int]) -> dict[int, str]:
    return {pid: s for pid in pids if (s := procs.state(pid)) is not None}


def peak_rss(pids: Sequence[int]) -> int:
    return max((procs.peak_rss_bytes(pid) or 0 for pid in pids), default=0)


def blame(
    runner: RunnerProcess,
    tree_states: dict[int, str],
    named: dict[int, str],
    reason: str,
    detail: str,
    progress: Progress,
) -> tuple[str, str]:
    """The truthful reason for a cycle pqd had to end: a stopped or dead helper (the runner
    itself, its forkserver, its resource tracker) is ``helper_died``, not a timeout.

    ``tree_states`` and ``named`` (roles()) are read before pqd kills the tree: the command
    line of a killed process is gone, and a stopped forkserver would read as "other"."""
    if detail == CANCELLED or reason not in ("timeout",):
        return reason, detail
    if tree_states.get(runner.pid) in ("T", "t"):
        return "helper_died", f"runner pid {runner.pid} is stopped (state T)"
    for pid, status in tree_states.items():
        role = named.get(pid, "other")
        if status in ("T", "t") and role in _HELPER_ROLES:
            return "helper_died", f"{role} pid {pid} is stopped (state {status})"
    if not detail:
        done = progress.jobs.count
        kind = "producer" if done % 2 == 0 else "consumer"
        where = (
            "starting the Manager and the pool"
            if progress.processes_at is None
            else f"{kind} job of round {done // 2 + 1}"
            if done < 2 * progress.probe.rounds
            else "closing the pool and the Manager"
        )
        detail = f"{where} unfinished after {progress.probe.timeout:g}s; pqd killed the tree"
    return reason, detail


def killed_result(
    progress: Progress,
    reason: str,
    detail: str,
    runner: RunnerProcess | None = None,
    cpu_seconds: float | None = None,
    max_rss_bytes: int | None = None,
    stuck: tuple[StuckProcess, ...] = (),
) -> CycleResult:
    """The result of a cycle pqd ended itself, from what the runner had streamed."""
    jobs = progress.jobs
    now = time.monotonic()
    phases: dict[str, float] = {}
    if progress.processes_at is None:
        phases["pool_start"] = now - progress.t0
    else:
        phases["pool_start"] = progress.processes_at - progress.t0
        phases["jobs"] = now - progress.processes_at
    in_flight = progress.processes_at is not None and jobs.count < 2 * progress.probe.rounds
    return CycleResult(
        **settings_and_jobs(progress.probe, jobs),
        cycle_id=progress.cycle_id,
        main_pid=runner.pid if runner is not None else 0,
        main_process_name="MainProcess",
        started_at=progress.started_at,
        ended_at=time.time(),
        duration_seconds=now - progress.t0,
        success=False,
        reason=reason,
        detail=detail,
        jobs_completed=jobs.count,
        jobs_failed=1 if in_flight else 0,
        host_pid_count_before=progress.pid_count_before,
        host_pid_count_during=-1,
        host_pid_count_after=procs.host_pid_count(),
        leaked_processes=0,
        leaked_pids=(),
        helpers_started=(),
        phase_seconds=phases,
        containment="subreaper" if runner is None or runner.group is None else "cgroup",
        cpu_seconds=cpu_seconds,
        max_rss_bytes=max_rss_bytes,
        stuck=stuck,
        headroom=progress.headroom,
        python_implementation=runner.python[0] if runner is not None else "",
        python_version=runner.python[1] if runner is not None else "",
    )
