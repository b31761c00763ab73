"""One probe cycle: the seed's producer/consumer pool run, made exact and measurable.

``run_cycle(probe)`` returns a ``CycleResult`` and never raises for anything the probe can
observe. It never touches Prometheus either; the daemon's metrics writer turns results into
series. It runs in a probe's runner (pqd.runner), which owns the whole process tree below it:
every descendant of the calling process is the cycle's, except multiprocessing's helpers.

The standard library misbehaves in ways that shape this module (design §5):

* ``AsyncResult.get()`` waits forever when the worker running the job is killed, so every wait
  here polls with a deadline and checks that the pool's workers and the Manager are still alive.
* ``Pool.terminate()`` can block for good when a worker died holding one of the pool's locks,
  and Manager proxy calls block for good when the Manager is stopped. Every call into
  multiprocessing that can block runs on a helper thread with a deadline (``_BlockingCaller``),
  and on failure every process the cycle started is SIGKILLed before anything is torn down.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import multiprocessing.managers
import multiprocessing.pool
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from pqd import containment, stacks, workers
from pqd.containment import ProbeCgroup, ProcessRef
from pqd.probe import ProbeConfig
from pqd.results import (
    CycleResult,
    HelperProcess,
    JobKind,
    JobLedger,
    JobReport,
    StuckProcess,
)

T = TypeVar("T")

#: How often a wait re-checks that workers and the Manager are alive.
POLL_SECONDS = 0.05
#: How long a successful cycle may take to close the pool and stop the Manager gracefully.
TEARDOWN_SECONDS = 5.0
#: How long killed processes get to disappear before they are counted as left behind.
REAP_SECONDS = 3.0
#: How long exited descendants may linger (their parent has not reaped them yet) before a
#: process is counted as leaked.
SETTLE_SECONDS = 2.0

#: Imported once by the forkserver instead of by every worker and Manager it forks (each of
#: these cost a forked child 1-30 ms; benchmarks/cycle_cost.py): the jobs; what unpickling a
#: pool worker, the Manager and its queue proxies imports (the proxies pull in hashlib and
#: OpenSSL through multiprocessing.shared_memory); and, because CPython before 3.13 re-runs
#: __main__ in every forkserver child (gh-126631), runpy's pkgutil and what the runner's main
#: module imports. Not the runner module itself: runpy warns when the module it is asked to run
#: as __mp_main__ is already imported.
FORKSERVER_PRELOAD = (
    "pqd.workers",
    "multiprocessing.pool",
    "multiprocessing.managers",
    "multiprocessing.queues",
    "multiprocessing.synchronize",
    "multiprocessing.popen_forkserver",
    "pkgutil",
    "argparse",
    "json",
    "pqd.containment",
    "pqd.stack_dump_hook",
)


class CycleFailure(Exception):
    """Ends a cycle with one of the reasons in results.FAILURE_REASONS."""

    def __init__(self, reason: str, detail: str, traceback: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.traceback = traceback  # a job_error's worker traceback, as text


CANCELLED = "cancelled: pqd is stopping"


class Cancelled(Exception):
    """The daemon is stopping; the cycle is cut short (and not exported)."""


class CycleObserver(Protocol):
    """Told what happens while a cycle runs; the runner streams it to pqd as it happens, so pqd
    knows how far a cycle got when it has to kill it."""

    def begun(self, host_pid_count: int, helpers: dict[int, str]) -> None: ...

    def processes_started(self, manager_pid: int, worker_pids: tuple[int, ...]) -> None: ...

    def job_finished(self, report: JobReport) -> None: ...

    def failing(self, reason: str, detail: str) -> None: ...


class _NoObserver:
    def begun(self, host_pid_count: int, helpers: dict[int, str]) -> None:
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

    producer: workers.Job = workers.producer_job
    consumer: workers.Job = workers.consumer_job


class _BlockingCaller:
    """Runs calls that may block forever on one daemon thread and waits for them with a deadline.

    A daemon thread, not a ThreadPoolExecutor: the interpreter joins executor threads at exit,
    and a call stuck on a stopped Manager would then keep pqd from exiting. Once a call has
    missed its deadline the thread is considered lost: it unblocks when the cycle's processes are
    killed, and later calls are refused rather than queued behind it.
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], _Pending] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.stuck = False

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            func, pending = call
            try:
                pending.value = func()
            except BaseException as exc:  # handed back to the waiting thread
                pending.error = exc
            pending.done.set()

    def call(
        self,
        func: Callable[[], T],
        timeout: float,
        what: str,
        cancel: threading.Event | None = None,
    ) -> T:
        if self.stuck:
            raise TimeoutError(f"{what}: an earlier call is still blocked")
        if self._thread.ident is None:
            # Started on first use, inside the cycle's error handling: under a process limit
            # (pids.max counts threads) even this thread may not start, and that is a finding.
            self._thread.start()
        pending = _Pending()
        self._calls.put((func, pending))
        deadline = time.monotonic() + max(timeout, 0.0)
        while not pending.done.wait(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0))):
            if cancel is not None and cancel.is_set():
                self.stuck = True
                raise Cancelled(f"{what}: {CANCELLED}")
            if time.monotonic() >= deadline:
                self.stuck = True
                raise TimeoutError(f"{what} did not return within {timeout:.1f}s")
        if pending.error is not None:
            raise pending.error
        return pending.value  # type: ignore[no-any-return]

    def close(self, timeout: float) -> bool:
        """Stop the thread; False if it is still blocked after ``timeout``."""
        if self._thread.ident is None:
            return True
        self._calls.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    value: Any = None
    error: BaseException | None = None


def _known_helper_pids() -> dict[int, str]:
    """The helpers multiprocessing itself has on record. Private attributes, read defensively:
    they are the only way to recognise a helper that has already died (its command line is
    gone), and a dead helper must be left for multiprocessing to reap — its ensure_running()
    fails with ChildProcessError if anyone else reaps it."""
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


def _is_gone(proc: ProcessRef, own_pid: int) -> bool:
    """True if the process has exited. A zombie whose parent is not us counts as gone: its
    parent (the forkserver) reaps it; our own zombies are reaped by the caller."""
    status = proc.state()
    if status is None or status == "X":
        return True
    return status == "Z" and proc.ppid() != own_pid


class _Cycle:
    """The state of one running cycle; used once by run_cycle."""

    def __init__(
        self,
        probe: ProbeConfig,
        jobs: JobFunctions,
        observer: CycleObserver,
        cancel: threading.Event | None,
        cycle_id: str,
        cgroup: ProbeCgroup | None,
    ) -> None:
        self.probe = probe
        self.cgroup = cgroup
        self.cancel = cancel
        self.jobs = jobs
        self.observer = observer
        self.own_pid = os.getpid()
        self.cycle_id = cycle_id
        self.ctx = multiprocessing.get_context(probe.start_method)
        if isinstance(self.ctx, multiprocessing.context.ForkServerContext):
            # Forked workers then start with these imported, and nothing of pqd's own
            # __main__ (which may be a test runner) is imported into the forkserver.
            self.ctx.set_forkserver_preload(list(FORKSERVER_PRELOAD))
        self.caller = _BlockingCaller(f"pqd-cycle-{probe.name}")
        self.manager: Any = None
        self.manager_process: Any = None
        self.pool: multiprocessing.pool.Pool | None = None
        self.pool_processes: list[Any] = []
        self.probe_queue: Any = None
        self.ledger = JobLedger()
        self.job_counter = 0
        self.jobs_failed = 0
        self.depth_max = 0
        self.phase_seconds: dict[str, float] = {}
        self.owned: dict[int, ProcessRef] = {}
        self.helpers: dict[int, str] = {}  # every helper seen alive during the cycle
        self.peak_rss = 0

    # -- helpers (forkserver, resource tracker) -----

    def note_helpers(self) -> dict[int, str]:
        """Remember the helpers alive now: one that dies later in the cycle is a finding."""
        for pid, role in _known_helper_pids().items():
            if pid not in self.helpers and not containment.is_gone(pid):
                self.helpers[pid] = role
        return dict(self.helpers)

    def helper_problem(self) -> str | None:
        """Why a helper the cycle relies on is not serving: gone, or stopped (SIGSTOP/ptrace).

        Checked before blaming the Manager or a worker: a dead forkserver makes multiprocessing
        report exit code 255 for every process it forked, alive or not."""
        for pid, role in self.helpers.items():
            status = containment.state(pid)
            if status in (None, "Z", "X"):
                return f"{role} pid {pid} died"
            if status in ("T", "t"):
                return f"{role} pid {pid} is stopped (state {status})"
        return None

    # -- deadlines -----

    def remaining(self, deadline: float) -> float:
        return deadline - time.monotonic()

    def call(self, func: Callable[[], T], deadline: float, what: str, reason: str) -> T:
        try:
            return self.caller.call(func, self.remaining(deadline), what, self.cancel)
        except (TimeoutError, Cancelled) as exc:
            problem = self.helper_problem()
            if problem is not None:
                raise CycleFailure("helper_died", f"{what}: {problem}") from None
            raise CycleFailure("timeout", str(exc)) from None
        except CycleFailure:
            raise
        except Exception as exc:
            raise CycleFailure(reason, f"{what}: {type(exc).__name__}: {exc}") from None

    # -- liveness -----

    def manager_alive(self) -> bool:
        return self.manager_process is not None and self.manager_process.exitcode is None

    def dead_worker(self) -> Any:
        for process in self.pool_processes:
            if process.exitcode is not None:
                return process
        return None

    def check_alive(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CycleFailure("timeout", CANCELLED)
        problem = self.helper_problem()
        if problem is not None:
            raise CycleFailure("helper_died", problem)
        if self.manager_process is not None and not self.manager_alive():
            raise CycleFailure(
                "manager_died",
                f"Manager pid {self.manager_process.pid} exited "
                f"(exit code {self.manager_process.exitcode})",
            )
        dead = self.dead_worker()
        if dead is not None:
            raise CycleFailure(
                "worker_died", f"pool worker pid {dead.pid} exited (exit code {dead.exitcode})"
            )

    def workers_live(self) -> int:
        pool = self.pool
        if pool is None:
            return 0
        current = list(getattr(pool, "_pool", []))
        return sum(1 for process in current if process.exitcode is None)

    # -- phases -----

    def start(self, deadline: float) -> None:
        probe = self.probe
        self.manager = self.call(
            self.start_manager, deadline, "starting the Manager", "spawn_failed"
        )
        self.manager_process = self.manager._process
        self.probe_queue = self.call(
            lambda: self.manager.Queue(probe.queue_maxsize),
            deadline,
            "creating the Manager queue",
            "manager_died",
        )
        self.pool = self.call(
            lambda: self.ctx.Pool(
                probe.workers,
                initializer=workers.init_worker,
                initargs=(self.probe_queue, self.own_pid),
            ),
            deadline,
            "starting the pool",
            "spawn_failed",
        )
        # The pool replaces dead workers behind our back; keep the originals so a death is seen.
        self.pool_processes = list(getattr(self.pool, "_pool", []))
        self.note_helpers()
        self.observer.processes_started(
            self.manager_process.pid, tuple(p.pid for p in self.pool_processes)
        )

    def start_manager(self) -> Any:
        # ctx.Manager() with an initializer: the Manager, too, dies with pqd.
        manager = multiprocessing.managers.SyncManager(ctx=self.ctx)
        manager.start(initializer=workers.init_manager, initargs=(self.own_pid,))
        return manager

    def run_jobs(self, deadline: float) -> None:
        probe = self.probe
        plan: list[tuple[JobKind, workers.Job]] = [
            ("producer", self.jobs.producer),
            ("consumer", self.jobs.consumer),
        ]
        for round_no in range(1, probe.rounds + 1):
            for kind, job in plan:
                self.run_one(kind, job, round_no, deadline)

    def run_one(self, kind: JobKind, job: workers.Job, round_no: int, deadline: float) -> None:
        try:
            outcome = self.wait_for_job(kind, job, round_no, deadline)
        except CycleFailure:
            # The job in flight is lost with the cycle.
            self.jobs_failed += 1
            raise
        self.job_counter += 1
        depth = self.call(self.probe_queue.qsize, deadline, "sampling queue depth", "manager_died")
        self.depth_max = max(self.depth_max, depth)
        live = self.workers_live()
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
        self, kind: JobKind, job: workers.Job, round_no: int, deadline: float
    ) -> dict[str, Any]:
        assert self.pool is not None
        probe = self.probe
        pending = self.pool.apply_async(
            workers.run_job,
            (job, round_no, probe.items_per_producer, probe.job_pause),
        )
        while not pending.ready():
            self.check_alive()
            left = self.remaining(deadline)
            if left <= 0:
                problem = self.helper_problem()
                if problem is not None:
                    raise CycleFailure("helper_died", problem)
                raise CycleFailure(
                    "timeout", f"{kind} job of round {round_no} unfinished after {probe.timeout}s"
                )
            pending.wait(min(POLL_SECONDS, left))
        try:
            outcome: dict[str, Any] = pending.get(0)
        except Exception as exc:
            raise CycleFailure("job_error", f"{kind} job of round {round_no}: {exc!r}") from None
        error = outcome.get("error")
        if error is not None:
            # A dead Manager shows up in the worker as EOFError/BrokenPipeError first; name the
            # cause, not the symptom. The Manager's exit may take a moment to be seen.
            settle = time.monotonic() + 0.5
            while self.manager_alive() and time.monotonic() < settle:
                time.sleep(0.01)
            self.check_alive()
            raise CycleFailure(
                "job_error",
                f"{kind} job of round {round_no} raised {error}",
                outcome.get("traceback"),
            )
        return outcome

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
        pool = self.pool
        assert pool is not None
        self.call(pool.close, deadline, "closing the pool", "worker_died")
        self.call(pool.join, deadline, "joining the pool", "worker_died")
        self.call(self.manager.shutdown, deadline, "stopping the Manager", "manager_died")

    # -- ownership -----

    def claim(self) -> None:
        """Remember every process of the probe's tree so far, except the helpers.

        The runner owns its whole tree (design §1a): its cgroup's members, or everything below
        it, which as a child subreaper includes double-forked and setsid() orphans. Called before
        teardown too, to take each process's peak RSS while it still exists.
        """
        helpers = set(_known_helper_pids()) | set(self.helpers)
        if self.cgroup is not None:
            pids = [p for p in self.cgroup.pids() if p != self.own_pid]
        else:
            pids = containment.descendants(self.own_pid)
        for pid in pids:
            if pid in helpers or pid in self.owned:
                continue
            ref = ProcessRef.of(pid)
            if ref is not None:
                self.owned[pid] = ref
        self.note_peak_rss([self.own_pid, *helpers, *self.owned])

    def note_peak_rss(self, pids: list[int]) -> None:
        for pid in pids:
            self.peak_rss = max(self.peak_rss, containment.peak_rss_bytes(pid) or 0)

    def cycle_pids(self) -> list[int]:
        """The processes the cycle knows without scanning /proc: itself, its helpers, the
        Manager and the pool's workers (replacements included)."""
        processes = [*self.pool_processes, *getattr(self.pool, "_pool", []), self.manager_process]
        return [self.own_pid, *self.helpers, *(p.pid for p in processes if p is not None)]

    def owned_alive(self) -> list[ProcessRef]:
        return [proc for proc in self.owned.values() if not _is_gone(proc, self.own_pid)]

    def where_stuck(self) -> tuple[StuckProcess, ...]:
        """Every live process of the tree, before anything is killed: state, wchan, stacks."""
        if self.cancel is not None and self.cancel.is_set():
            return ()  # pqd is stopping: nobody will look at this cycle
        roles = {self.own_pid: "runner"}
        if self.manager_process is not None:
            roles[self.manager_process.pid] = "Manager"
        for number, process in enumerate(self.pool_processes, 1):
            roles[process.pid] = f"pool worker {number}"
        for process in getattr(self.pool, "_pool", []):
            roles.setdefault(process.pid, "pool worker (replacement)")
        roles.update({pid: role for pid, role in self.helpers.items() if pid not in roles})
        if self.cgroup is not None:
            tree = self.cgroup.pids()
        else:
            tree = containment.descendants(self.own_pid)
        for pid in tree:
            roles.setdefault(pid, "other")
        return stacks.capture(roles, os.environ.get(stacks.STACKS_DIR_ENV))

    # -- forced teardown -----

    def kill_everything(self) -> None:
        """SIGKILL every process the cycle started, then let the pool and Manager objects finish
        without any of them waiting on a lock or a socket that a dead process held."""
        pool = self.pool
        if pool is not None:
            # Stop the pool's maintenance thread from starting replacements for what we kill.
            handler = getattr(pool, "_worker_handler", None)
            if handler is not None:
                handler._state = multiprocessing.pool.TERMINATE
        for _ in range(5):
            self.claim()
            targets = self.owned_alive()
            if not targets:
                break
            for proc in targets:
                proc.kill()  # only if the pid still names the process we claimed
            self.reap(time.monotonic() + REAP_SECONDS)
        if pool is not None:
            self.finish_pool(pool)
        if self.manager is not None:
            with contextlib.suppress(Exception):
                # The Manager process is dead: shutdown() only joins it and marks the state.
                self.caller.call(self.manager.shutdown, REAP_SECONDS, "stopping the Manager")

    def retire_forkserver(self) -> None:
        """After a cycle could not start its processes, stop the forkserver too: it may be what
        is broken (stopped, or crashed half-way through a request, which leaves it refusing
        connections while multiprocessing still thinks it runs). It is left as a zombie for
        multiprocessing to reap, which then starts a fresh one for the next cycle."""
        if not isinstance(self.ctx, multiprocessing.context.ForkServerContext):
            return
        for pid, role in _known_helper_pids().items():
            if role != "forkserver":
                continue
            proc = ProcessRef.of(pid)
            if proc is None or proc.ppid() != self.own_pid:
                continue
            proc.kill()
            deadline = time.monotonic() + REAP_SECONDS
            while time.monotonic() < deadline and proc.state() not in (None, "Z"):
                time.sleep(0.005)

    def finish_pool(self, pool: multiprocessing.pool.Pool) -> None:
        """Pool.terminate() with the pool's locks replaced: a worker SIGKILLed while holding the
        task queue's read lock or the result queue's write lock leaves them locked forever, and
        terminate() acquires the first and writes through the second."""
        inqueue = getattr(pool, "_inqueue", None)
        outqueue = getattr(pool, "_outqueue", None)
        if inqueue is not None:
            inqueue._rlock = self.ctx.Lock()
        if outqueue is not None and getattr(outqueue, "_wlock", None) is not None:
            outqueue._wlock = self.ctx.Lock()
        # Results that will never arrive; terminate() refuses to run with a dead result handler
        # and a non-empty cache (gh-79492).
        cache = getattr(pool, "_cache", None)
        if cache is not None:
            cache.clear()
        with contextlib.suppress(Exception):
            self.caller.call(pool.terminate, REAP_SECONDS, "terminating the pool")

    def reap(self, deadline: float) -> None:
        """Wait for the cycle's processes to go. multiprocessing reaps its own Process objects
        (so they see their exit codes); orphans pqd adopted as a subreaper are reaped here."""
        for process in [*self.pool_processes, self.manager_process]:
            if process is not None:
                with contextlib.suppress(Exception):
                    process.join(max(0.0, deadline - time.monotonic()))
        while True:
            reap_zombie_orphans()
            if not self.owned_alive() or time.monotonic() >= deadline:
                return
            time.sleep(0.01)

    def find_leaks(self) -> list[ProcessRef]:
        """Processes of the tree still there after a clean teardown, helpers aside."""
        self.reap(time.monotonic() + SETTLE_SECONDS)
        # Orphans that re-parented to us after the last look (a double fork's grandchild).
        self.claim()
        reap_zombie_orphans()
        return sorted(self.owned_alive(), key=lambda p: p.pid)


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
    managed |= set(_known_helper_pids())
    return containment.reap_children(keep=managed)


def _tree_cpu_seconds(own_pid: int, helpers: dict[int, str], cgroup: ProbeCgroup | None) -> float:
    """CPU used so far by the tree's long-lived part: the runner (with every child it reaped)
    and its helpers (with the workers and Managers the forkserver reaped). Differences of this
    are a cycle's CPU; a cgroup's own counter is used where there is one."""
    if cgroup is not None:
        usage = cgroup.cpu_seconds()
        if usage is not None:
            return usage
    return sum(containment.cpu_seconds(pid) or 0.0 for pid in [own_pid, *helpers])


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
    cycle = _Cycle(
        probe,
        jobs or JobFunctions(),
        observer or _NoObserver(),
        cancel,
        cycle_id or os.urandom(6).hex(),
        cgroup,
    )
    started_at = time.time()
    t0 = time.monotonic()
    deadline = t0 + probe.timeout
    helpers_before = _known_helper_pids()
    cpu_before = _tree_cpu_seconds(cycle.own_pid, cycle.note_helpers(), cgroup)
    pid_count_before = containment.host_pid_count()
    cycle.observer.begun(pid_count_before, dict(cycle.helpers))
    pid_count_during = -1
    failure: CycleFailure | None = None
    phase = "pool_start"
    phase_t0 = t0
    try:
        cycle.start(deadline)
        pid_count_during = containment.host_pid_count()
        cycle.phase_seconds["pool_start"] = time.monotonic() - phase_t0
        phase, phase_t0 = "jobs", time.monotonic()
        cycle.run_jobs(deadline)
        cycle.check_counts()
        cycle.phase_seconds["jobs"] = time.monotonic() - phase_t0
        phase, phase_t0 = "teardown", time.monotonic()
        # Peak RSS while the workers still exist; what they left behind is found after teardown.
        cycle.note_peak_rss(cycle.cycle_pids())
        cycle.close_gracefully()
    except CycleFailure as exc:
        failure = exc
    except Exception as exc:  # a bug or an OS error we did not foresee: still clean up
        failure = CycleFailure(
            "spawn_failed" if phase == "pool_start" else "job_error", f"{type(exc).__name__}: {exc}"
        )
    leaked: list[ProcessRef] = []
    stuck: tuple[StuckProcess, ...] = ()
    if failure is not None:
        cycle.observer.failing(failure.reason, failure.detail)
        stuck = cycle.where_stuck()
        if phase not in cycle.phase_seconds:
            cycle.phase_seconds[phase] = time.monotonic() - phase_t0
        teardown_t0 = time.monotonic()
        cycle.claim()
        cycle.kill_everything()
        if phase == "pool_start" or failure.reason == "helper_died":
            cycle.retire_forkserver()
        cycle.phase_seconds["teardown"] = cycle.phase_seconds.get("teardown", 0.0) + (
            time.monotonic() - teardown_t0
        )
    else:
        leaked = cycle.find_leaks()
        cycle.phase_seconds["teardown"] = time.monotonic() - phase_t0
        problem = cycle.helper_problem()
        if leaked:
            failure = CycleFailure(
                "leak",
                f"{len(leaked)} process(es) left behind: {', '.join(str(p.pid) for p in leaked)}",
            )
        elif problem is not None:
            failure = CycleFailure("helper_died", problem)
        if failure is not None:
            cycle.observer.failing(failure.reason, failure.detail)
            stuck = cycle.where_stuck()
        leaked_commands = [containment.cmdline(p.pid) for p in leaked]
        cycle.kill_everything()
        if problem is not None:
            cycle.retire_forkserver()
    cycle.caller.close(REAP_SECONDS)
    pid_count_after = containment.host_pid_count()
    cpu_seconds = _tree_cpu_seconds(cycle.own_pid, cycle.note_helpers(), cgroup) - cpu_before
    ended_at = time.time()
    ledger = cycle.ledger
    return CycleResult(
        probe=probe.name,
        cycle_id=cycle.cycle_id,
        start_method=probe.start_method,
        workers_configured=probe.workers,
        queue_capacity=probe.queue_maxsize,
        rounds=probe.rounds,
        items_per_producer=probe.items_per_producer,
        main_pid=cycle.own_pid,
        main_process_name=multiprocessing.current_process().name,
        started_at=started_at,
        ended_at=ended_at,
        duration_seconds=time.monotonic() - t0,
        success=failure is None,
        reason=None if failure is None else failure.reason,
        detail="ok" if failure is None else failure.detail,
        jobs_completed=cycle.job_counter,
        jobs_failed=cycle.jobs_failed,
        queue_full_events=ledger.full_events,
        items_put=ledger.items_put,
        items_got=ledger.items_got,
        queue_depth_max=cycle.depth_max,
        host_pid_count_before=pid_count_before,
        host_pid_count_during=pid_count_during,
        host_pid_count_after=pid_count_after,
        leaked_processes=len(leaked),
        leaked_pids=tuple(p.pid for p in leaked),
        leaked_commands=tuple(leaked_commands) if leaked else (),
        helpers_started=tuple(
            HelperProcess(pid=pid, role=role)
            for pid, role in sorted(_known_helper_pids().items())
            if pid not in helpers_before
        ),
        phase_seconds=dict(cycle.phase_seconds),
        jobs=ledger.kept(),
        jobs_not_kept=ledger.not_kept,
        put_operations=ledger.put,
        get_operations=ledger.get,
        containment="subreaper" if cgroup is None else "cgroup",
        cpu_seconds=max(cpu_seconds, 0.0),
        max_rss_bytes=cycle.peak_rss or None,
        stuck=stuck,
        job_traceback=None if failure is None else failure.traceback,
    )
