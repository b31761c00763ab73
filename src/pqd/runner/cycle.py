"""One probe cycle: the seed's producer/consumer pool run, made exact and measurable.

``run_cycle(probe)`` returns a ``CycleResult`` and never raises for anything the probe can
observe. It never touches Prometheus either; the daemon's metrics writer turns results into
series. It runs in a probe's runner (pqd.runner.main), which owns the whole process tree below it:
every descendant of the calling process is the cycle's, except multiprocessing's helpers.

The standard library misbehaves in ways that shape this module (docs/design.md §5):

* ``AsyncResult.get()`` waits forever when the worker running the job is killed, so every wait
  here polls with a deadline and checks that the pool's workers and the Manager are still alive.
* ``Pool.terminate()`` can block for good when a worker died holding one of the pool's locks,
  and Manager proxy calls block for good when the Manager is stopped. Every call into
  multiprocessing that can block runs on a helper thread with a deadline
  (pqd.runner.deadline_calls), and on failure every process the cycle started is SIGKILLed before
  anything is torn down (pqd.runner.teardown).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.context
import multiprocessing.managers
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pqd.probe import ProbeConfig
from pqd.results import (
    CycleResult,
    Headroom,
    HelperProcess,
    JobKind,
    JobLedger,
    JobReport,
    StuckProcess,
    settings_and_jobs,
)
from pqd.runner import headroom, jobs, mp_private, procs, shm_phase
from pqd.runner.containment import ProbeCgroup
from pqd.runner.deadline_calls import CANCELLED, POLL_SECONDS, BlockingCaller, Cancelled
from pqd.runner.phase_clock import PhaseClock
from pqd.runner.procs import ProcessRef
from pqd.runner.teardown import REAP_SECONDS, CycleProcesses
from pqd.runner.tree import CycleTree

T = TypeVar("T")

#: How long a successful cycle may take to close the pool and stop the Manager gracefully.
TEARDOWN_SECONDS = 5.0

#: Imported once by the forkserver instead of by every worker and Manager it forks (each of
#: these cost a forked child 1-30 ms; benchmarks/cycle_cost.py): the jobs; what unpickling a
#: pool worker, the Manager and its queue proxies imports (the proxies pull in hashlib and
#: OpenSSL through multiprocessing.shared_memory); and, because CPython before 3.13 re-runs
#: __main__ in every forkserver child (gh-126631), runpy's pkgutil and what the runner's main
#: module imports. Not the runner module itself: runpy warns when the module it is asked to run
#: as __mp_main__ is already imported.
FORKSERVER_PRELOAD = (
    "pqd.runner.jobs",
    "multiprocessing.pool",
    "multiprocessing.managers",
    "multiprocessing.queues",
    "multiprocessing.synchronize",
    "multiprocessing.popen_forkserver",
    "pkgutil",
    "argparse",
    "json",
    "pqd.runner.containment",
    "pqd.runner.stack_dump_hook",
)


class CycleFailure(Exception):
    """Ends a cycle with one of the reasons in results.FAILURE_REASONS."""

    def __init__(self, reason: str, detail: str, traceback: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.traceback = traceback  # a job_error's worker traceback, as text


class CycleObserver(Protocol):
    """Told what happens while a cycle runs; the runner streams it to pqd as it happens, so pqd
    knows how far a cycle got when it has to kill it."""

    def begun(
        self, host_pid_count: int, helpers: dict[int, str], headroom: Headroom | None = None
    ) -> None: ...

    def processes_started(self, manager_pid: int, worker_pids: tuple[int, ...]) -> None: ...

    def job_finished(self, report: JobReport) -> None: ...

    def failing(self, reason: str, detail: str) -> None: ...


class _NoObserver:
    def begun(
        self, host_pid_count: int, helpers: dict[int, str], headroom: Headroom | None = None
    ) -> None:
        pass

    def processes_started(self, manager_pid: int, worker_pids: tuple[int, ...]) -> None:
        pass

    def job_finished(self, report: JobReport) -> None:
        pass

    def failing(self, reason: str, detail: str) -> None:
        pass


@dataclass(frozen=True)
class JobFunctions:
    """The jobs a cycle runs. Tests pass their own (module-level, so workers can import them)."""

    producer: jobs.Job = jobs.producer_job
    consumer: jobs.Job = jobs.consumer_job


@dataclass(frozen=True)
class _Start:
    """What is measured as a cycle begins, before it starts any process."""

    wall: float  # time.time()
    t0: float  # time.monotonic()
    helpers: dict[int, str]  # the helpers multiprocessing had on record
    cpu_seconds: float  # CycleTree.cpu_seconds()
    pid_count: int  # processes on the host
    headroom: Headroom  # docs/design.md §2
    shm_before: frozenset[str]  # /dev/shm's entries (headroom.leaked_shm)


class _Cycle:
    """The state of one running cycle; used once by run_cycle."""

    def __init__(
        self,
        probe: ProbeConfig,
        jobs: JobFunctions,
        observer: CycleObserver,
        cancel: threading.Event | None,
        cgroup: ProbeCgroup | None,
    ) -> None:
        self.probe, self.jobs, self.observer, self.cancel = probe, jobs, observer, cancel
        ctx = multiprocessing.get_context(probe.start_method)
        if isinstance(ctx, multiprocessing.context.ForkServerContext):
            # Forked workers then start with these imported, and nothing of pqd's own
            # __main__ (which may be a test runner) is imported into the forkserver.
            ctx.set_forkserver_preload(list(FORKSERVER_PRELOAD))
        if probe.shared_memory_bytes:
            shm_phase.prepare()
        self.procs = CycleProcesses(ctx, BlockingCaller(f"pqd-cycle-{probe.name}"))
        self.tree = CycleTree(cgroup)
        self.phases = PhaseClock()
        self.probe_queue: Any = None
        self.ledger = JobLedger()
        self.job_counter = 0
        self.jobs_failed = 0
        self.pid_count_during = -1
        # How it ended: the failure (None for a success) and what the runner saw then.
        self.failure: CycleFailure | None = None
        self.leaked: list[ProcessRef] = []
        self.leaked_commands: tuple[str, ...] = ()
        self.stuck: tuple[StuckProcess, ...] = ()

    def begin(self) -> _Start:
        wall, t0, helpers = time.time(), time.monotonic(), mp_private.helper_pids()
        cpu, pids, (room, shm) = self.tree.cpu_seconds(), procs.host_pid_count(), headroom.begin()
        start = _Start(wall, t0, helpers, cpu, pids, room, shm)
        self.observer.begun(start.pid_count, dict(self.tree.helpers), start.headroom)
        return start

    # -- deadlines and liveness -----

    def call(self, func: Callable[[], T], deadline: float, what: str, reason: str) -> T:
        try:
            return self.procs.caller.call(func, deadline - time.monotonic(), what, self.cancel)
        except (TimeoutError, Cancelled) as exc:
            problem = self.tree.helper_problem()
            if problem is not None:
                raise CycleFailure("helper_died", f"{what}: {problem}") from None
            raise CycleFailure("timeout", str(exc)) from None
        except CycleFailure:
            raise
        except Exception as exc:
            raise CycleFailure(reason, f"{what}: {type(exc).__name__}: {exc}") from None

    def check_alive(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CycleFailure("timeout", CANCELLED)
        problem = self.tree.helper_problem()
        if problem is not None:
            raise CycleFailure("helper_died", problem)
        manager = self.procs.manager_process
        if manager is not None and not self.procs.manager_alive():
            raise CycleFailure(
                "manager_died", f"Manager pid {manager.pid} exited (exit code {manager.exitcode})"
            )
        dead = self.procs.dead_worker()
        if dead is not None:
            raise CycleFailure(
                "worker_died", f"pool worker pid {dead.pid} exited (exit code {dead.exitcode})"
            )

    # -- phases -----

    def run(self, start: _Start) -> CycleFailure | None:
        """Start the processes, run the jobs, close everything gracefully; the failure that ended
        it early, if any. The phase that failed is left open (PhaseClock)."""
        deadline = start.t0 + self.probe.timeout
        try:
            with self.phases.phase("pool_start", since=start.t0):
                self.start(deadline)
                self.pid_count_during = procs.host_pid_count()
            with self.phases.phase("jobs"):
                self.run_jobs(deadline)
                self.check_counts()
            if self.probe.shared_memory_bytes:
                with self.phases.phase("shared_memory"):
                    self.shared_memory(deadline)
            with self.phases.phase("teardown"):
                # Peak RSS while the workers still exist; what they left is found after teardown.
                self.tree.note_peak_rss([self.tree.own_pid, *self.tree.helpers, *self.procs.pids()])
                self.close_gracefully()
        except CycleFailure as exc:
            # Without its traceback: the frames hold this cycle, which holds the failure, and
            # such a cycle of references keeps the pool's named semaphores in /dev/shm until a
            # garbage collection that a runner killed first never does.
            return exc.with_traceback(None)
        except Exception as exc:  # a bug or an OS error we did not foresee: still clean up
            reason = "spawn_failed" if self.phases.current == "pool_start" else "job_error"
            return CycleFailure(reason, f"{type(exc).__name__}: {exc}")
        return None

    def start(self, deadline: float) -> None:
        procs = self.procs
        manager = self.call(self.start_manager, deadline, "starting the Manager", "spawn_failed")
        procs.manager_started(manager)
        self.probe_queue = self.call(
            lambda: manager.Queue(self.probe.queue_maxsize),
            deadline,
            "creating the Manager queue",
            "manager_died",
        )
        pool = self.call(
            lambda: procs.ctx.Pool(
                self.probe.workers,
                initializer=jobs.init_worker,
                initargs=(self.probe_queue, self.tree.own_pid),
            ),
            deadline,
            "starting the pool",
            "spawn_failed",
        )
        procs.pool_started(pool)
        self.tree.note_helpers()
        self.observer.processes_started(*procs.started_pids())

    def start_manager(self) -> multiprocessing.managers.SyncManager:
        # ctx.Manager() with an initializer: the Manager, too, dies with pqd.
        manager = multiprocessing.managers.SyncManager(ctx=self.procs.ctx)
        manager.start(initializer=jobs.init_manager, initargs=(self.tree.own_pid,))
        return manager

    def run_jobs(self, deadline: float) -> None:
        probe = self.probe
        plan: list[tuple[JobKind, jobs.Job]] = [
            ("producer", self.jobs.producer),
            ("consumer", self.jobs.consumer),
        ]
        for round_no in range(1, probe.rounds + 1):
            for kind, job in plan:
                self.run_one(kind, job, round_no, deadline)

    def run_one(self, kind: JobKind, job: jobs.Job, round_no: int, deadline: float) -> None:
        try:
            outcome = self.wait_for_job(kind, job, round_no, deadline)
        except CycleFailure:
            # The job in flight is lost with the cycle.
            self.jobs_failed += 1
            raise
        self.job_counter += 1
        depth = self.call(self.probe_queue.qsize, deadline, "sampling queue depth", "manager_died")
        live = self.procs.workers_live()
        report = JobReport(
            kind=kind,
            round=round_no,
            pid=int(outcome["pid"]),
            process_name=str(outcome["process_name"]),
            is_alive=bool(outcome["is_alive"]),
            parent_pid=int(outcome["parent_pid"]),
            host_pid_count=int(outcome["host_pid_count"]),
            started_at=float(outcome["started_at"]),
            items=tuple(outcome["items"]),
            item_count=int(outcome["item_count"]),
            full_events=int(outcome["full_events"]),
            operation_counts=tuple(outcome["operation_counts"]),
            operation_total=float(outcome["operation_total"]),
            error=None,
            job_counter=self.job_counter,
            queue_depth_after=depth,
            workers_live_after=live,
        )
        self.ledger.add(report)
        self.observer.job_finished(report)

    def wait_for_job(
        self, kind: JobKind, job: jobs.Job, round_no: int, deadline: float
    ) -> dict[str, Any]:
        assert self.procs.pool is not None
        probe = self.probe
        pending = self.procs.pool.apply_async(
            jobs.run_job,
            (job, round_no, probe.items_per_producer, probe.job_pause),
        )
        outcome = self.outcome(pending, f"{kind} job of round {round_no}", deadline)
        error = outcome.get("error")
        if error is not None:
            # A dead Manager shows up in the worker as EOFError/BrokenPipeError first; name the
            # cause, not the symptom. The Manager's exit may take a moment to be seen.
            settle = time.monotonic() + 0.5
            while self.procs.manager_alive() and time.monotonic() < settle:
                time.sleep(0.01)
            self.check_alive()
            raise CycleFailure(
                "job_error",
                f"{kind} job of round {round_no} raised {error}",
                outcome.get("traceback"),
            )
        return outcome

    def outcome(self, pending: Any, what: str, deadline: float) -> dict[str, Any]:
        """A job's outcome once it is ready, checking the tree is alive while it is not."""
        while not pending.ready():
            self.check_alive()
            left = deadline - time.monotonic()
            if left <= 0:
                problem = self.tree.helper_problem()
                if problem is not None:
                    raise CycleFailure("helper_died", problem)
                raise CycleFailure("timeout", f"{what} unfinished after {self.probe.timeout:g}s")
            pending.wait(min(POLL_SECONDS, left))
        try:
            outcome: dict[str, Any] = pending.get(0)
        except Exception as exc:
            raise CycleFailure("job_error", f"{what}: {exc!r}") from None
        return outcome

    def shared_memory(self, deadline: float) -> None:
        """The shared-memory phase (pqd.runner.shm_phase): a failure there says so."""
        try:
            shm_phase.run(self.procs.pool, self.probe.shared_memory_bytes, self.outcome, deadline)
        except (CycleFailure, shm_phase.ShmPhaseError) as exc:
            raise CycleFailure(exc.reason, f"{shm_phase.WHERE}: {exc.detail}") from None

    def check_counts(self) -> None:
        probe = self.probe
        expected_jobs = 2 * probe.rounds
        put, got, full = self.ledger.items_put, self.ledger.items_got, self.ledger.full_events
        if (
            self.job_counter != expected_jobs
            or put + full != probe.rounds * probe.items_per_producer
        ):
            raise CycleFailure(
                "job_error",
                f"counts do not add up: {self.job_counter} of {expected_jobs} jobs, "
                f"{put} put + {full} full of {probe.rounds * probe.items_per_producer} items",
            )
        if got != put:
            raise CycleFailure("job_error", f"counts do not add up: {put} put but {got} got")

    def close_gracefully(self) -> None:
        """Close and join the pool and stop the Manager, as the seed's ``with`` blocks do."""
        deadline = time.monotonic() + TEARDOWN_SECONDS
        pool, manager = self.procs.pool, self.procs.manager
        assert pool is not None and manager is not None
        self.call(pool.close, deadline, "closing the pool", "worker_died")
        self.call(pool.join, deadline, "joining the pool", "worker_died")
        self.call(manager.shutdown, deadline, "stopping the Manager", "manager_died")

    # -- how it ends -----

    def abandon(self, failure: CycleFailure) -> None:
        """After a failure: look at where the tree was stuck, then SIGKILL all of it."""
        self.failure = failure
        self.observer.failing(failure.reason, failure.detail)
        self.stuck = self.where_stuck()
        failed_phase = self.phases.stop()
        with self.phases.phase("teardown"):
            self.tree.claim()
            self.procs.kill_everything(self.tree)
            if failed_phase == "pool_start" or failure.reason == "helper_died":
                self.procs.retire_forkserver(self.tree.own_pid)

    def finish(self) -> None:
        """After a graceful teardown: a process left behind, or a helper that failed meanwhile,
        still fails the cycle."""
        with self.phases.phase("teardown"):
            self.leaked = self.procs.find_leaks(self.tree)
        try:
            problem = self.tree.helper_problem()
        except OSError as exc:  # /proc unreadable (EMFILE): the error, not a dead helper
            problem = None
            self.failure = self.failure or CycleFailure("job_error", f"checking helpers: {exc}")
        if self.leaked:
            pids = ", ".join(str(p.pid) for p in self.leaked)
            self.failure = CycleFailure(
                "leak", f"{len(self.leaked)} process(es) left behind: {pids}"
            )
        elif problem is not None:
            self.failure = CycleFailure("helper_died", problem)
        if self.failure is not None:
            self.observer.failing(self.failure.reason, self.failure.detail)
            self.stuck = self.where_stuck()
        self.leaked_commands = tuple(procs.cmdline(p.pid) for p in self.leaked)
        self.procs.kill_everything(self.tree)
        if problem is not None:
            self.procs.retire_forkserver(self.tree.own_pid)

    def where_stuck(self) -> tuple[StuckProcess, ...]:
        """Every live process of the tree, before anything is killed: state, wchan, stacks."""
        if self.cancel is not None and self.cancel.is_set():
            return ()  # pqd is stopping: nobody will look at this cycle
        return self.tree.where_stuck(self.procs.roles(), ask=self.probe.capture_stacks)

    def result(self, cycle_id: str, start: _Start) -> CycleResult:
        pid_count_after = procs.host_pid_count()
        cpu_seconds = self.tree.cpu_seconds() - start.cpu_seconds
        ended_at = time.time()
        failure = self.failure
        return CycleResult(
            **settings_and_jobs(self.probe, self.ledger),
            cycle_id=cycle_id,
            main_pid=self.tree.own_pid,
            main_process_name=multiprocessing.current_process().name,
            started_at=start.wall,
            ended_at=ended_at,
            duration_seconds=time.monotonic() - start.t0,
            success=failure is None,
            reason=None if failure is None else failure.reason,
            detail="ok" if failure is None else failure.detail,
            jobs_completed=self.job_counter,
            jobs_failed=self.jobs_failed,
            host_pid_count_before=start.pid_count,
            host_pid_count_during=self.pid_count_during,
            host_pid_count_after=pid_count_after,
            leaked_processes=len(self.leaked),
            leaked_pids=tuple(p.pid for p in self.leaked),
            leaked_commands=self.leaked_commands,
            helpers_started=tuple(
                HelperProcess(pid=pid, role=role)
                for pid, role in sorted(mp_private.helper_pids().items())
                if pid not in start.helpers
            ),
            phase_seconds=dict(self.phases.seconds),
            containment="subreaper" if self.tree.cgroup is None else "cgroup",
            cpu_seconds=max(cpu_seconds, 0.0),
            max_rss_bytes=self.tree.peak_rss or None,
            stuck=self.stuck,
            job_traceback=None if failure is None else failure.traceback,
            headroom=start.headroom,
            max_open_files=self.tree.max_open_files or None,
            python_implementation=sys.implementation.name,
            python_version=sys.version.split()[0],
        )


def run_cycle(
    probe: ProbeConfig,
    *,
    jobs: JobFunctions | None = None,
    observer: CycleObserver | None = None,
    cancel: threading.Event | None = None,
    cycle_id: str | None = None,
    cgroup: ProbeCgroup | None = None,
) -> CycleResult:
    """Run one cycle of ``probe`` and report what it saw. Never raises for probe failures and
    leaves no process of its own behind, whatever happened.

    ``cgroup`` is the probe's group when the runner lives in one (its members are the tree).
    Setting ``cancel`` ends the cycle early as a failure with detail ``CANCELLED``."""
    cycle = _Cycle(probe, jobs or JobFunctions(), observer or _NoObserver(), cancel, cgroup)
    start = cycle.begin()
    failure = cycle.run(start)
    if failure is not None:
        cycle.abandon(failure)
    else:
        cycle.finish()
    cycle.procs.caller.close(REAP_SECONDS)
    result = cycle.result(cycle_id or os.urandom(6).hex(), start)
    del cycle, failure  # the pool's semaphores are unlinked as its objects go
    return dataclasses.replace(result, leaked_shm_objects=headroom.leaked_shm(start.shm_before))
