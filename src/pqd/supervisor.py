"""pqd's side of the per-probe runners (design §1a): start them, hand them cycles, enforce each
cycle's deadline from outside, and kill a probe's whole process tree when it fails.

pqd's own process never creates, joins or finalises a pool: everything multiprocessing starts
lives below a runner (pqd.runner), so nothing stuck there can hold pqd, and whatever a runner's
tree does, pqd can SIGKILL all of it (its cgroup, or its process group and descendants).

No threads of its own: ``run_cycle`` runs in the caller's thread (a scheduler job, or ``pqd
once``) and waits on the runner's pipe and pidfd with the deadline as its timeout.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pqd import containment, stacks
from pqd.containment import ProbeCgroup
from pqd.probe import ProbeConfig
from pqd.results import (
    CycleResult,
    JobLedger,
    LiveSample,
    StuckProcess,
    job_report_from_dict,
    result_from_dict,
)

#: How the runner is started; tests swap in a harness that replaces the jobs.
RUNNER_MODULE = "pqd.runner"
#: How long a runner may take to start (interpreter + imports) before the cycle fails.
START_SECONDS = 10.0
#: After the runner says a cycle is failing, how long its own teardown may take before pqd
#: kills the tree itself (the runner's result has the better detail, so it gets a chance).
FAILING_GRACE_SECONDS = 2.0
#: How long killed processes get before the result is recorded. The reported duration stays
#: within timeout + 1 s; waiting for stragglers goes on after the duration is taken.
KILL_SECONDS = 0.5
REAP_SECONDS = 5.0
#: A line from the runner longer than this ends the cycle (pqd's memory stays bounded).
MAX_EVENT_BYTES = 256 * 1024 * 1024

CANCELLED = "cancelled: pqd is stopping"
_FORKSERVER_MARK = "multiprocessing.forkserver"
_TRACKER_MARK = "multiprocessing.resource_tracker"


class Observer(Protocol):
    """Told what happens while a cycle runs; the daemon feeds live gauges from it."""

    def job_finished(self, sample: LiveSample) -> None: ...


@dataclass
class _Runner:
    proc: subprocess.Popen[bytes]
    events: int  # read end of the runner's event pipe
    pidfd: int | None  # readable once the runner exits; None without pidfd support
    group: ProbeCgroup | None
    stacks_dir: str  # where its tree's processes write their stack dumps (pqd.stacks)
    pending: bytearray = field(default_factory=bytearray)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close_fds(self) -> None:
        for fd in (self.events, self.pidfd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def wait_readable(self, seconds: float) -> tuple[bool, bool]:
        """(events readable, runner exited), waiting at most ``seconds``."""
        watched = [self.events] if self.pidfd is None else [self.events, self.pidfd]
        if self.pidfd is None:
            seconds = min(seconds, 0.1)  # poll for the runner's exit instead
        readable, _, _ = select.select(watched, [], [], max(seconds, 0.0))
        exited = self.pidfd in readable if self.pidfd is not None else self.proc.poll() is not None
        return self.events in readable, exited


@dataclass
class _Progress:
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


def role_of(pid: int) -> str:
    """A helper's role from its command line (pqd cannot ask the runner's multiprocessing)."""
    text = containment.cmdline(pid)
    if _FORKSERVER_MARK in text:
        return "forkserver"
    if _TRACKER_MARK in text:
        return "resource_tracker"
    return "other"


class Runners:
    """Every probe's runner. Thread-safe: each probe's cycles run in their own thread."""

    def __init__(
        self,
        cgroup_parent: str | None,
        *,
        python: str = sys.executable,
        runner_module: str | None = None,
    ) -> None:
        self.cgroup_parent = cgroup_parent
        self._python = python
        self._module = runner_module or RUNNER_MODULE
        self._lock = threading.Lock()
        self._runners: dict[str, _Runner] = {}  # idle runners, by probe
        self._pids: set[int] = set()  # every runner not yet reaped, idle or busy

    @property
    def containment(self) -> str:
        return "subreaper" if self.cgroup_parent is None else "cgroup"

    def runner_pids(self) -> set[int]:
        """Runners are reaped by their Popen objects, never by the orphan reaper."""
        with self._lock:
            return set(self._pids)

    # -- lifecycle -----

    def _group(self, probe: str) -> ProbeCgroup | None:
        if self.cgroup_parent is None:
            return None
        return ProbeCgroup.for_probe(self.cgroup_parent, probe)

    def _start(self, probe: str, deadline: float) -> _Runner:
        """Start a runner and wait for its "ready". Raises OSError or TimeoutError."""
        group = self._group(probe)
        if group is not None:
            group.create()
            group.kill()  # whatever an earlier pqd left there
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        stacks_dir = tempfile.mkdtemp(prefix="pqd-stacks-")
        command = [
            self._python,
            "-m",
            self._module,
            "--events-fd",
            str(write_fd),
            "--pqd-pid",
            str(os.getpid()),
        ]
        if group is not None:
            command += ["--cgroup", group.path]
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                pass_fds=(write_fd,),
                process_group=0,
                env={**os.environ, stacks.STACKS_DIR_ENV: stacks_dir},
            )
        except BaseException:
            os.close(read_fd)
            shutil.rmtree(stacks_dir, ignore_errors=True)
            raise
        finally:
            os.close(write_fd)
        with self._lock:
            self._pids.add(proc.pid)
        runner = _Runner(proc, read_fd, _pidfd(proc.pid), group, stacks_dir)
        try:
            ready = _wait_line(runner, deadline)
            if ready is None or ready.get("event") != "ready":
                raise OSError(f"runner pid {proc.pid} exited while starting")
        except BaseException:
            self._kill(runner)
            raise
        return runner

    def _take(self, probe: str) -> _Runner | None:
        with self._lock:
            return self._runners.pop(probe, None)

    def _keep(self, probe: str, runner: _Runner) -> None:
        with self._lock:
            self._runners[probe] = runner

    def retire(self, probe: str) -> None:
        """Kill a probe's runner and everything below it (probe removed, pqd stopping)."""
        runner = self._take(probe)
        if runner is not None:
            self._kill(runner)
            if runner.group is not None:
                runner.group.remove()

    def close(self) -> None:
        with self._lock:
            names = list(self._runners)
        for name in names:
            self.retire(name)

    def _kill(self, runner: _Runner, wait: float = KILL_SECONDS) -> list[int]:
        """SIGKILL the runner's whole tree; wait for it at most ``wait`` seconds; return what
        is still there."""
        tree = self._tree(runner)
        containment.kill_tree(runner.pid, runner.group, include_root=True)
        containment.kill_pids(tree)
        deadline = time.monotonic() + wait
        left = containment.wait_gone(tree, wait)
        with contextlib.suppress(subprocess.TimeoutExpired):
            runner.proc.wait(max(0.0, deadline - time.monotonic()))
        # Killed processes write nothing more; a straggler still exiting needs no dump file.
        shutil.rmtree(runner.stacks_dir, ignore_errors=True)
        if runner.proc.returncode is not None:
            with self._lock:
                self._pids.discard(runner.pid)
        self._reap()
        runner.close_fds()
        if runner.proc.stdin is not None:
            with contextlib.suppress(OSError):
                runner.proc.stdin.close()
        return left

    def _finish_kill(self, runner: _Runner, left: list[int]) -> None:
        """After the result is taken: make sure nothing of the tree outlives it."""
        deadline = time.monotonic() + REAP_SECONDS
        while left and time.monotonic() < deadline:
            containment.kill_pids(left)
            left = containment.wait_gone(left, 0.1)
            self._reap()
        if runner.proc.returncode is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                runner.proc.wait(max(0.0, deadline - time.monotonic()))
        if runner.proc.returncode is not None:
            with self._lock:
                self._pids.discard(runner.pid)

    def _tree(self, runner: _Runner) -> list[int]:
        if runner.group is not None:
            return runner.group.pids()
        return [runner.pid, *containment.descendants(runner.pid), *self._orphans()]

    def _orphans(self) -> list[int]:
        """pqd's children that are not runners, and their trees: what a runner that died first
        left behind (pqd is a subreaper too, so they re-parent here and not to init).

        A runner's tree is in the runner's process group, or a group of its own after setsid();
        a child in pqd's own group is not from a runner (a program embedding Runners may have
        children of its own, e.g. its own forkserver) and is left alone."""
        found = []
        for pid in self._foreign_children():
            if containment.state(pid) != "Z":
                found += [pid, *containment.descendants(pid)]
        return found

    def _foreign_children(self) -> list[int]:
        runners, own, own_group = self.runner_pids(), os.getpid(), os.getpgrp()
        found = []
        for pid, ppid in containment.parent_pids().items():
            if ppid != own or pid in runners:
                continue
            with contextlib.suppress(OSError):
                if os.getpgid(pid) != own_group:
                    found.append(pid)
        return found

    def _reap(self) -> None:
        """Reap the zombies of runner trees that re-parented to pqd (and only those)."""
        for pid in self._foreign_children():
            if containment.state(pid) == "Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)

    # -- one cycle -----

    def run_cycle(
        self,
        probe: ProbeConfig,
        *,
        observer: Observer | None = None,
        cancel: threading.Event | None = None,
    ) -> CycleResult:
        """Run one cycle of ``probe`` in its runner. Never raises for probe failures; the
        result's duration never exceeds ``probe.timeout`` + 1 s."""
        progress = _Progress(probe, uuid.uuid4().hex[:12], time.time(), time.monotonic())
        deadline = progress.t0 + probe.timeout
        runner = self._take(probe.name)
        if runner is not None and runner.proc.poll() is not None:
            self._kill(runner)  # died between cycles: start afresh
            runner = None
        if runner is None:
            try:
                runner = self._start(probe.name, deadline)
            except (OSError, TimeoutError) as exc:
                return _killed_result(progress, "spawn_failed", f"starting the runner: {exc}")
        cpu_before = runner.group.cpu_seconds() if runner.group is not None else None
        try:
            _send(runner, probe, progress.cycle_id)
            ended = self._follow(runner, progress, deadline, observer, cancel)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A broken pipe, or an event that is not what this pqd's runner sends.
            ended = ("helper_died", f"runner pid {runner.pid}: {type(exc).__name__}: {exc}")
        except BaseException:
            self._finish_kill(runner, self._kill(runner))  # never leave a tree unowned
            raise
        result = progress.result
        if result is not None and result.success:
            self._keep(probe.name, runner)
            return result
        # A failed cycle: kill the whole tree; the next cycle gets a fresh runner.
        tree = self._tree(runner)
        states = _states(tree)
        rss = _peak_rss(list(states))
        stuck: tuple[StuckProcess, ...] = ()
        if result is None and ended is not None and ended[1] != CANCELLED:
            stuck = stacks.capture(_roles(runner, progress, tree), runner.stacks_dir)
        # What the capture took comes out of the kill's wait: the result stays within
        # timeout + 1 s (stragglers are still waited for, after the result is taken).
        left = self._kill(runner, max(0.05, min(KILL_SECONDS, deadline + 0.9 - time.monotonic())))
        if result is None:
            reason, detail = ended or ("timeout", "")
            reason, detail = _blame(runner, states, reason, detail, progress)
            cpu_after = runner.group.cpu_seconds() if runner.group is not None else None
            cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
            result = _killed_result(progress, reason, detail, runner, cpu, rss or None, stuck)
        self._finish_kill(runner, left)
        return result

    def _follow(
        self,
        runner: _Runner,
        progress: _Progress,
        deadline: float,
        observer: Observer | None,
        cancel: threading.Event | None,
    ) -> tuple[str, str] | None:
        """Read the runner's events until its result, its death, or the deadline. Returns why
        pqd must end the cycle itself, or None once the result is in."""
        while True:
            now = time.monotonic()
            if cancel is not None and cancel.is_set():
                return ("timeout", CANCELLED)
            if now >= deadline:
                return progress.failing or ("timeout", "")
            until = deadline
            if progress.failing_at is not None:
                until = min(until, progress.failing_at + FAILING_GRACE_SECONDS)
                if now >= until:
                    return progress.failing
            # A stop request is an Event, not a file descriptor: look at it now and then.
            wait = min(until - now, 0.05) if cancel is not None else until - now
            events_ready, exited = runner.wait_readable(wait)
            if events_ready:
                try:
                    lines = _read_lines(runner)
                except EOFError:
                    return _runner_died(runner)
                for line in lines:
                    _apply(progress, json.loads(line), observer)
                    if progress.result is not None:
                        return None
            elif exited:
                return _runner_died(runner)


def _runner_died(runner: _Runner) -> tuple[str, str]:
    try:
        code = runner.proc.wait(KILL_SECONDS)
    except subprocess.TimeoutExpired:
        return ("helper_died", f"runner pid {runner.pid} closed its event pipe")
    how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
    return ("helper_died", f"runner pid {runner.pid} {how}")


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:  # kernel < 5.3
        return None


def _send(runner: _Runner, probe: ProbeConfig, cycle_id: str) -> None:
    from dataclasses import asdict

    assert runner.proc.stdin is not None
    line = json.dumps({"cycle": asdict(probe), "cycle_id": cycle_id}) + "\n"
    runner.proc.stdin.write(line.encode())
    runner.proc.stdin.flush()


def _read_lines(runner: _Runner) -> list[str]:
    data = os.read(runner.events, 1 << 20)
    if not data:
        raise EOFError("the runner closed its event pipe")
    runner.pending += data
    if len(runner.pending) > MAX_EVENT_BYTES:
        raise ValueError(f"the runner sent more than {MAX_EVENT_BYTES} bytes in one event")
    *lines, rest = runner.pending.split(b"\n")
    runner.pending = bytearray(rest)
    return [line.decode() for line in lines if line]


def _wait_line(runner: _Runner, deadline: float) -> dict[str, Any] | None:
    """The runner's first event, or None if it exited first. TimeoutError past the deadline."""
    limit = min(deadline, time.monotonic() + START_SECONDS)
    while True:
        left = limit - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"runner pid {runner.pid} not ready in time")
        events_ready, exited = runner.wait_readable(left)
        if events_ready:
            try:
                lines = _read_lines(runner)
            except EOFError:
                return None
            if lines:
                return dict(json.loads(lines[0]))
        elif exited:
            return None


def _apply(progress: _Progress, event: dict[str, Any], observer: Observer | None) -> None:
    kind = event.get("event")
    if kind == "begun":
        progress.pid_count_before = int(event["host_pid_count"])
        for pid, role in dict(event.get("helpers", {})).items():
            progress.roles.setdefault(int(pid), str(role))
    elif kind == "processes":
        progress.processes_at = time.monotonic()
        progress.roles[int(event["manager"])] = "Manager"
        for number, pid in enumerate(event["workers"], 1):
            progress.roles[int(pid)] = f"pool worker {number}"
    elif kind == "job":
        report = job_report_from_dict(event["report"])
        progress.jobs.add(report)
        if observer is not None:
            observer.job_finished(
                LiveSample(progress.probe.name, report.queue_depth_after, report.workers_live_after)
            )
    elif kind == "failing":
        progress.failing = (str(event["reason"]), str(event["detail"]))
        progress.failing_at = time.monotonic()
    elif kind == "result":
        progress.result = result_from_dict(event["result"])


def _roles(runner: _Runner, progress: _Progress, tree: Sequence[int]) -> dict[int, str]:
    """Each process of the tree by role, in the order "Where it was stuck" lists them."""
    roles = {pid: role for pid, role in progress.roles.items() if pid in tree}
    roles[runner.pid] = "runner"
    for pid in tree:
        roles.setdefault(pid, role_of(pid))
    return dict(sorted(roles.items(), key=lambda item: _role_rank(item[1])))


def _role_rank(role: str) -> int:
    for rank, prefix in enumerate(("runner", "Manager", "pool worker", "forkserver", "resource")):
        if role.startswith(prefix):
            return rank
    return 9


def _states(pids: Sequence[int]) -> dict[int, str]:
    return {pid: s for pid in pids if (s := containment.state(pid)) is not None}


def _peak_rss(pids: Sequence[int]) -> int:
    return max((containment.peak_rss_bytes(pid) or 0 for pid in pids), default=0)


def _blame(
    runner: _Runner,
    states: dict[int, str],
    reason: str,
    detail: str,
    progress: _Progress,
) -> tuple[str, str]:
    """The truthful reason for a cycle pqd had to end: a stopped or dead helper (the runner
    itself, its forkserver, its resource tracker) is ``helper_died``, not a timeout."""
    if detail == CANCELLED or reason not in ("timeout",):
        return reason, detail
    if states.get(runner.pid) in ("T", "t"):
        return "helper_died", f"runner pid {runner.pid} is stopped (state T)"
    for pid, status in states.items():
        if status in ("T", "t") and role_of(pid) != "other":
            return "helper_died", f"{role_of(pid)} pid {pid} is stopped (state {status})"
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


def _killed_result(
    progress: _Progress,
    reason: str,
    detail: str,
    runner: _Runner | None = None,
    cpu_seconds: float | None = None,
    max_rss_bytes: int | None = None,
    stuck: tuple[StuckProcess, ...] = (),
) -> CycleResult:
    """The result of a cycle pqd ended itself, from what the runner had streamed."""
    probe, jobs = progress.probe, progress.jobs
    now = time.monotonic()
    phases: dict[str, float] = {}
    if progress.processes_at is None:
        phases["pool_start"] = now - progress.t0
    else:
        phases["pool_start"] = progress.processes_at - progress.t0
        phases["jobs"] = now - progress.processes_at
    in_flight = progress.processes_at is not None and jobs.count < 2 * probe.rounds
    return CycleResult(
        probe=probe.name,
        cycle_id=progress.cycle_id,
        start_method=probe.start_method,
        workers_configured=probe.workers,
        queue_capacity=probe.queue_maxsize,
        rounds=probe.rounds,
        items_per_producer=probe.items_per_producer,
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
        queue_full_events=jobs.full_events,
        items_put=jobs.items_put,
        items_got=jobs.items_got,
        queue_depth_max=jobs.depth_max,
        host_pid_count_before=progress.pid_count_before,
        host_pid_count_during=-1,
        host_pid_count_after=_host_pid_count(),
        leaked_processes=0,
        leaked_pids=(),
        helpers_started=(),
        phase_seconds=phases,
        jobs=jobs.kept(),
        jobs_not_kept=jobs.not_kept,
        put_operations=jobs.put,
        get_operations=jobs.get,
        containment="subreaper" if runner is None or runner.group is None else "cgroup",
        cpu_seconds=cpu_seconds,
        max_rss_bytes=max_rss_bytes,
        stuck=stuck,
    )


def _host_pid_count() -> int:
    try:
        return sum(1 for e in os.scandir("/proc") if e.name.isdigit())
    except OSError:
        return -1
