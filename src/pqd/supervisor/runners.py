"""pqd's side of the per-probe runners (docs/design.md §1a): start them, hand them cycles,
enforce each cycle's deadline from outside, and kill a probe's whole process tree when it fails.

pqd's own process never creates, joins or finalises a pool: everything multiprocessing starts
lives below a runner (pqd.runner.main), so nothing stuck there can hold pqd, and whatever a runner's
tree does, pqd can SIGKILL all of it (its cgroup, or its process group and descendants).

No threads of its own: ``run_cycle`` runs in the caller's thread (a scheduler job, or ``pqd once``)
and waits on the runner's pipe and pidfd with the deadline as its timeout. The runner process itself
is pqd.supervisor.runner_process; what pqd has heard of a cycle, and the result of one it had to
end, pqd.supervisor.progress.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid

from pqd.probe import ProbeConfig
from pqd.results import CycleResult, StuckProcess
from pqd.runner import containment, procs, stacks
from pqd.runner.containment import ProbeCgroup
from pqd.runner.events import Ready
from pqd.runner.host_evidence import Counters
from pqd.supervisor.diagnosis import diagnose
from pqd.supervisor.interpreter import Interpreter, InterpreterError, Interpreters
from pqd.supervisor.progress import (
    CANCELLED,
    LiveObserver,
    Progress,
    blame,
    killed_result,
    peak_rss,
    role_of,
    roles,
    states,
)
from pqd.supervisor.runner_files import RunnerFiles
from pqd.supervisor.runner_process import RunnerProcess

#: How the runner is started; tests swap in a harness that replaces the jobs.
RUNNER_MODULE = "pqd.runner.main"
#: After the runner says a cycle is failing, how long its own teardown may take before pqd
#: kills the tree itself (the runner's result has the better detail, so it gets a chance).
FAILING_GRACE_SECONDS = 2.0
#: How long killed processes get before the result is recorded. The reported duration stays
#: within timeout + 1 s; waiting for stragglers goes on after the duration is taken.
KILL_SECONDS = 0.5
REAP_SECONDS = 5.0
#: Of KILL_SECONDS, at most this long for a resource tracker to clean up after the rest of its
#: tree is dead (milliseconds when nothing holds its pipe; see Runners._kill).
TRACKER_GRACE_SECONDS = 0.3
#: A probe whose interval is shorter keeps its runner (with its forkserver and resource tracker)
#: between cycles; one on a longer interval or a cron schedule gets a fresh runner each cycle.
#: Warm, a default probe's tree holds about 30 MiB more between cycles; cold, each cycle costs
#: about a fresh run's CPU more: at one cycle a minute or less often, memory is the dearer
#: (docs/benchmarks.md, "Cost per probe").
WARM_BELOW_SECONDS = 60.0


class Runners:
    """Every probe's runner. Thread-safe: each probe's cycles run in their own thread."""

    def __init__(
        self,
        cgroup_parent: str | None,
        *,
        python: str = sys.executable,
        runner_module: str | None = None,
        interpreters: Interpreters | None = None,
    ) -> None:
        self.cgroup_parent = cgroup_parent
        self._python = python  # for probes without a ``python`` of their own
        self._module = runner_module or RUNNER_MODULE
        self.interpreters = interpreters or Interpreters()
        self._files = RunnerFiles()  # the runner side, for runners under another interpreter
        self._lock = threading.Lock()
        self._runners: dict[str, RunnerProcess] = {}  # idle runners, by probe
        self._pids: set[int] = set()  # every runner not yet reaped, idle or busy
        self._grouped: set[str] = set()  # probes whose cgroup this pqd created

    @property
    def containment(self) -> str:
        return "subreaper" if self.cgroup_parent is None else "cgroup"

    def interpreter(self, probe: ProbeConfig) -> Interpreter | None:
        """What the probe's runner runs under (asked once per interpreter), None if the path
        is not one (any more): its cycles then fail with spawn_failed."""
        try:
            return self.interpreters.of(probe.python)
        except InterpreterError:
            return None

    def runner_pids(self) -> set[int]:
        """Runners are reaped by their Popen objects, never by the orphan reaper."""
        with self._lock:
            return set(self._pids)

    # -- lifecycle -----

    def _group(self, probe: str) -> ProbeCgroup | None:
        if self.cgroup_parent is None:
            return None
        return ProbeCgroup.for_probe(self.cgroup_parent, probe)

    def _start(self, probe: ProbeConfig, deadline: float) -> RunnerProcess:
        """Start a runner and wait for its "ready". Raises OSError or TimeoutError."""
        group = self._group(probe.name)
        if group is not None:
            group.create()
            with self._lock:
                self._grouped.add(probe.name)
            group.kill()  # whatever an earlier pqd left there
        options = ["--pqd-pid", str(os.getpid())]
        if group is not None:
            options += ["--cgroup", group.path]
        # Under another interpreter the runner imports pqd's runner side from a private copy
        # and nothing else of pqd's installation (pqd.supervisor.runner_files).
        files = None if probe.python is None else self._files.path()
        python = self._python if probe.python is None else probe.python
        environment = dict(probe.environment or ())
        runner = RunnerProcess.launch(
            python, self._module, options, group, files=files, environment=environment
        )
        runner.started_with = _started_with(probe)
        with self._lock:
            self._pids.add(runner.pid)
        try:
            ready = runner.first_event(deadline)
            if not isinstance(ready, Ready):
                _, how = runner.death(KILL_SECONDS)
                raise OSError(f"{how} under {python} before it was ready")
            runner.python = ready.python
        except BaseException:
            self._kill(runner)
            raise
        return runner

    def _take(self, probe: str) -> RunnerProcess | None:
        with self._lock:
            return self._runners.pop(probe, None)

    def _keep(self, probe: str, runner: RunnerProcess) -> None:
        with self._lock:
            self._runners[probe] = runner

    def retire(self, probe: str) -> None:
        """Kill a probe's runner and everything below it (probe removed, pqd stopping)."""
        runner = self._take(probe)
        if runner is not None:
            self._kill(runner)
        # Its cgroup goes too, idle runner or not: a probe whose last cycle failed has none.
        group = self._group(probe)
        with self._lock:
            created = probe in self._grouped
            self._grouped.discard(probe)
        if group is not None and created:
            group.kill()
            procs.wait_gone(group.pids(), KILL_SECONDS)  # rmdir is EBUSY while any is left
            group.remove()

    def close(self) -> None:
        with self._lock:
            names = list(self._runners.keys() | self._grouped)
        for name in names:
            self.retire(name)
        self._files.remove()

    def _kill(self, runner: RunnerProcess, wait: float = KILL_SECONDS) -> list[int]:
        """SIGKILL the runner's whole tree; wait for it at most ``wait`` seconds; return what
        is still there.

        Its resource trackers go last and on their own: once every other process of the tree is
        dead, a tracker reads EOF, unlinks every semaphore and shared-memory block the tree
        registered and did not unregister, and exits (CPython's resource_tracker.main). A
        SIGKILLed tracker leaves them in /dev/shm until reboot: about six named semaphores
        of 4 KiB each per failed spawn or forkserver cycle. It is held stopped until pqd has
        taken the tree's stderr, so its report of what it cleaned ("There appear to be N
        leaked ... objects"), caused by this kill, is not counted as the cycle's warning."""
        deadline = time.monotonic() + wait
        tree = self._tree(runner)
        trackers = frozenset(pid for pid in tree if role_of(pid) == "resource_tracker")
        procs.signal_pids(list(trackers), signal.SIGSTOP)
        containment.kill_tree(runner.pid, runner.group, include_root=True, spare=trackers)
        others = [pid for pid in tree if pid not in trackers]
        procs.kill_pids(others)
        procs.wait_gone(others, _left(deadline))
        runner.close_fds()
        procs.signal_pids(list(trackers), signal.SIGCONT)
        procs.wait_gone(list(trackers), min(TRACKER_GRACE_SECONDS, _left(deadline)))
        containment.kill_tree(runner.pid, runner.group, include_root=True)
        procs.kill_pids(tree)
        left = procs.wait_gone(tree, _left(deadline))
        with contextlib.suppress(subprocess.TimeoutExpired):
            runner.proc.wait(_left(deadline))
        # Killed processes write nothing more; a straggler still exiting needs no dump file.
        shutil.rmtree(runner.stacks_dir, ignore_errors=True)
        if runner.proc.returncode is not None:
            with self._lock:
                self._pids.discard(runner.pid)
        self._reap()
        return left

    def _finish_kill(self, runner: RunnerProcess, left: list[int]) -> None:
        """After the result is taken: make sure nothing of the tree outlives it."""
        deadline = time.monotonic() + REAP_SECONDS
        while left and time.monotonic() < deadline:
            procs.kill_pids(left)
            left = procs.wait_gone(left, 0.1)
            self._reap()
        if runner.proc.returncode is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                runner.proc.wait(max(0.0, deadline - time.monotonic()))
        if runner.proc.returncode is not None:
            with self._lock:
                self._pids.discard(runner.pid)

    def _tree(self, runner: RunnerProcess) -> list[int]:
        if runner.group is not None:
            return runner.group.pids()
        return [runner.pid, *procs.descendants(runner.pid), *self._orphans()]

    def _orphans(self) -> list[int]:
        """pqd's children that are not runners, and their trees: what a runner that died first
        left behind (pqd is a subreaper too, so they re-parent here and not to init).

        A runner's tree is in the runner's process group, or a group of its own after setsid();
        a child in pqd's own group is not from a runner (a program embedding Runners may have
        children of its own, e.g. its own forkserver) and is left alone."""
        found = []
        for pid in self._foreign_children():
            if procs.state(pid) != "Z":
                found += [pid, *procs.descendants(pid)]
        return found

    def _foreign_children(self) -> list[int]:
        runners, own, own_group = self.runner_pids(), os.getpid(), os.getpgrp()
        found = []
        for pid, ppid in procs.parent_pids().items():
            if ppid != own or pid in runners:
                continue
            with contextlib.suppress(OSError):
                if os.getpgid(pid) != own_group:
                    found.append(pid)
        return found

    def _reap(self) -> None:
        """Reap the zombies of runner trees that re-parented to pqd (and only those)."""
        for pid in self._foreign_children():
            if procs.state(pid) == "Z":
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)

    # -- one cycle -----

    def run_cycle(
        self,
        probe: ProbeConfig,
        *,
        observer: LiveObserver | None = None,
        cancel: threading.Event | None = None,
    ) -> CycleResult:
        """Run one cycle of ``probe`` in its runner. Never raises for probe failures; the
        result's duration never exceeds ``probe.timeout`` + 1 s."""
        progress = Progress(probe, uuid.uuid4().hex[:12], time.time(), time.monotonic())
        deadline = progress.t0 + probe.timeout
        runner = self._runner_for(probe, progress, deadline)
        if isinstance(runner, CycleResult):
            return runner
        # The cgroup counters as the cycle begins: what moved by its end is evidence of a cause.
        # Its cgroups are found afresh each cycle (some 0.1 ms): a warm runner can be moved
        # between them (by an operator, cgrulesengd, a container runtime) after it started.
        before = Counters.read(runner.pid)
        cpu_before = runner.group.cpu_seconds() if runner.group is not None else None
        try:
            runner.send(probe, progress.cycle_id)
            ended = self._follow(runner, progress, deadline, observer, cancel)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # A broken pipe, or an event that is not what this pqd's runner sends.
            ended = ("helper_died", f"runner pid {runner.pid}: {type(exc).__name__}: {exc}")
        except BaseException:
            self._finish_kill(runner, self._kill(runner))  # never leave a tree unowned
            raise
        result = progress.result
        if result is not None and result.success:
            return self._succeeded(probe, runner, result, before)
        # A failed cycle: kill the whole tree; the next cycle gets a fresh runner.
        tree = self._tree(runner)
        tree_states = states(tree)
        rss = peak_rss(list(tree_states))
        named = roles(runner, progress, tree)  # before the kill: cmdlines go with it
        stuck: tuple[StuckProcess, ...] = ()
        if result is None and ended is not None and ended[1] != CANCELLED:
            stuck = stacks.capture(named, runner.stacks_dir, ask=probe.capture_stacks)
        # What the capture took comes out of the kill's wait: the result stays within
        # timeout + 1 s (stragglers are still waited for, after the result is taken).
        left = self._kill(runner, max(0.05, min(KILL_SECONDS, deadline + 0.9 - time.monotonic())))
        if result is None:
            reason, detail = ended or ("timeout", "")
            reason, detail = blame(runner, tree_states, named, reason, detail, progress)
            cpu_after = runner.group.cpu_seconds() if runner.group is not None else None
            cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
            result = killed_result(progress, reason, detail, runner, cpu, rss or None, stuck)
        self._finish_kill(runner, left)
        return diagnose(result, runner.stderr.take(), runner.pid, before, progress.roles)

    def _runner_for(
        self, probe: ProbeConfig, progress: Progress, deadline: float
    ) -> RunnerProcess | CycleResult:
        """The probe's warm runner, else a new one; a runner that cannot start is the
        cycle's failed result."""
        runner = self._take(probe.name)
        if runner is not None and (
            runner.proc.poll() is not None or runner.started_with != _started_with(probe)
        ):
            self._kill(runner)  # died between cycles, or python or environment changed
            runner = None
        if runner is not None:
            return self._unless_stopped(runner, progress)
        # A new runner is born in pqd's own cgroups: a limit there can refuse it.
        born = Counters.read(os.getpid())
        try:
            return self._start(probe, deadline)
        except (OSError, TimeoutError) as exc:
            if isinstance(exc, TimeoutError) and time.monotonic() >= deadline:
                # The probe's own timeout passed first: the deadline, not the start, failed.
                detail = (
                    f"the runner was not ready within the probe's timeout of "
                    f"{probe.timeout:g}s; pqd killed it"
                )
                failed = killed_result(progress, "timeout", detail)
            else:
                failed = killed_result(progress, "spawn_failed", f"starting the runner: {exc}")
            return diagnose(failed, ("", 0, {}), os.getpid(), born, {})

    def _unless_stopped(
        self, runner: RunnerProcess, progress: Progress
    ) -> RunnerProcess | CycleResult:
        """An idle runner stopped (SIGSTOP, a debugger) would read nothing of the cycle: it is
        helper_died at once, not after the whole timeout (and an overlap skip)."""
        status = procs.state(runner.pid)
        if status not in ("T", "t"):
            return runner
        # Its state, taken before the kill, is the evidence of its cause (stopped), as for a
        # runner stopped mid-cycle; a stopped process answers no stack request.
        stuck = stacks.capture({runner.pid: "runner"}, runner.stacks_dir, ask=False)
        left = self._kill(runner)
        detail = f"runner pid {runner.pid} is stopped (state {status}) before the cycle was sent"
        failed = killed_result(progress, "helper_died", detail, runner, stuck=stuck)
        self._finish_kill(runner, left)
        return diagnose(failed, runner.stderr.take(), runner.pid, None, {})

    def _succeeded(
        self, probe: ProbeConfig, runner: RunnerProcess, result: CycleResult, before: Counters
    ) -> CycleResult:
        """Keep the runner for the probe's next cycle, or end it if it cycles less often than
        WARM_BELOW_SECONDS (nothing of its tree waits idle)."""
        stderr = runner.stderr.take()
        if keeps_warm(probe):
            self._keep(probe.name, runner)
        else:
            self._finish_kill(runner, self._kill(runner))
        return diagnose(result, stderr, runner.pid, before, {})

    def _follow(
        self,
        runner: RunnerProcess,
        progress: Progress,
        deadline: float,
        observer: LiveObserver | None,
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
                    events = runner.read_events()
                except EOFError:
                    return runner.death(KILL_SECONDS)
                for event in events:
                    progress.apply(event, observer)
                    if progress.result is not None:
                        return None
            elif exited:
                return runner.death(KILL_SECONDS)


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def keeps_warm(probe: ProbeConfig) -> bool:
    """Whether the probe's runner stays up between its cycles (WARM_BELOW_SECONDS)."""
    return probe.interval is not None and probe.interval < WARM_BELOW_SECONDS


def _started_with(probe: ProbeConfig) -> tuple[object, ...]:
    """The settings a runner is started with; a change needs a new runner."""
    return (probe.python, probe.environment)
