"""Faults injected from outside, as an operator's host would: each ends the cycle with its reason
within timeout + 5 s, leaves no process of the cycle alive, and the next cycle succeeds. The
result then goes through the supervisor's diagnosis as pqd's would (this process is the runner),
and the cause is asserted too (docs/design.md §1, "Causes")."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from pqd.probe import ProbeConfig
from pqd.results import CycleResult, Headroom, JobReport
from pqd.runner.containment import become_child_subreaper
from pqd.runner.cycle import JobFunctions, run_cycle
from pqd.runner.host_evidence import Counters
from pqd.supervisor.diagnosis import diagnose
from tests.helpers import conditions as c
from tests.helpers import fault_jobs

START_METHODS = ["forkserver", "spawn", "fork"]
ANNOUNCING = JobFunctions(
    producer=fault_jobs.announcing_producer, consumer=fault_jobs.announcing_consumer
)
WAIT_SECONDS = 30.0


@pytest.fixture(scope="module", autouse=True)
def _subreaper() -> None:
    assert become_child_subreaper()


@dataclass
class Recorder:
    """A CycleObserver that remembers the pids a cycle started."""

    manager_pid: int = 0
    worker_pids: tuple[int, ...] = ()
    started: threading.Event = field(default_factory=threading.Event)

    def processes_started(self, manager_pid: int, worker_pids: tuple[int, ...]) -> None:
        self.manager_pid = manager_pid
        self.worker_pids = worker_pids
        self.started.set()

    def begun(
        self, host_pid_count: int, helpers: dict[int, str], headroom: Headroom | None = None
    ) -> None:
        pass

    def job_finished(self, report: JobReport) -> None:
        pass

    def failing(self, reason: str, detail: str) -> None:
        pass


def wait_for(predicate: Callable[[], object], what: str, seconds: float = WAIT_SECONDS) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {seconds}s waiting for {what}")


def busy_pids(announce_dir: Path) -> list[int]:
    return [int(p.name.split(".")[0]) for p in announce_dir.glob("*.busy")]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def announce(announce_dir: Path) -> Iterator[Path]:
    for stale in announce_dir.glob("*.busy"):
        stale.unlink()
    yield announce_dir


def run_with_fault(
    probe: ProbeConfig, jobs: JobFunctions, inject: Callable[[Recorder], None]
) -> tuple[CycleResult, Recorder, float]:
    """Run a cycle on this thread while ``inject`` acts on another, as an outside actor."""
    recorder = Recorder()
    errors: list[BaseException] = []

    def actor() -> None:
        try:
            inject(recorder)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=actor, name="fault-injector")
    thread.start()
    before = Counters.read(os.getpid())
    t0 = time.monotonic()
    result = run_cycle(probe, jobs=jobs, observer=recorder)
    elapsed = time.monotonic() - t0
    thread.join(WAIT_SECONDS)
    assert not errors, errors
    return diagnosed(result, before), recorder, elapsed


def diagnosed(result: CycleResult, before: Counters) -> CycleResult:
    """``result`` with the cause pqd gives it; the tree's stderr is the test's own here."""
    return diagnose(result, ("", 0, {}), os.getpid(), before, {})


def assert_clean_after(result: CycleResult, recorder: Recorder, probe: ProbeConfig) -> None:
    started = [recorder.manager_pid, *recorder.worker_pids]
    assert started and all(started)
    assert not [pid for pid in started if alive(pid)], "a process of the failed cycle survived"
    after = run_cycle(probe.__class__(start_method=probe.start_method))
    assert after.success, after.detail
    assert after.leaked_processes == 0


@pytest.mark.parametrize("start_method", START_METHODS)
def test_worker_killed_mid_job(start_method: str, announce: Path) -> None:
    probe = ProbeConfig(start_method=start_method, job_pause=2.0, timeout=60.0)

    def inject(rec: Recorder) -> None:
        (pid, *_) = wait_for(lambda: busy_pids(announce), "a busy worker")  # type: ignore[misc]
        os.kill(pid, signal.SIGKILL)

    result, rec, elapsed = run_with_fault(probe, ANNOUNCING, inject)

    assert (result.success, result.reason) == (False, "worker_died"), result.detail
    assert (result.cause, result.cause_detail.count("SIGKILL")) == ("killed", 1), result
    assert elapsed < 2.0 + 5.0  # seen long before the 60 s timeout
    assert result.jobs_failed == 1
    assert_clean_after(result, rec, probe)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_worker_killed_while_idle(start_method: str, announce: Path) -> None:
    probe = ProbeConfig(start_method=start_method, job_pause=1.0, timeout=60.0)

    def inject(rec: Recorder) -> None:
        rec.started.wait(WAIT_SECONDS)
        busy = wait_for(lambda: busy_pids(announce), "a busy worker")
        idle = [pid for pid in rec.worker_pids if pid not in busy]  # type: ignore[operator]
        os.kill(idle[0], signal.SIGKILL)

    result, rec, elapsed = run_with_fault(probe, ANNOUNCING, inject)

    assert (result.success, result.reason) == (False, "worker_died"), result.detail
    assert result.cause == "killed" and "no OOM kill was recorded" in result.cause_detail, result
    assert elapsed < 60.0 + 5.0
    assert_clean_after(result, rec, probe)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_worker_stopped(start_method: str, announce: Path) -> None:
    probe = ProbeConfig(start_method=start_method, job_pause=0.5, timeout=3.0)

    def inject(rec: Recorder) -> None:
        (pid, *_) = wait_for(lambda: busy_pids(announce), "a busy worker")  # type: ignore[misc]
        os.kill(pid, signal.SIGSTOP)

    result, rec, elapsed = run_with_fault(probe, ANNOUNCING, inject)

    assert (result.success, result.reason) == (False, "timeout"), result.detail
    assert result.cause == "stopped" and "state T" in result.cause_detail, result
    assert probe.timeout <= elapsed < probe.timeout + 5.0
    assert_clean_after(result, rec, probe)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_manager_killed(start_method: str, announce: Path) -> None:
    probe = ProbeConfig(start_method=start_method, job_pause=1.0, timeout=60.0)

    def inject(rec: Recorder) -> None:
        rec.started.wait(WAIT_SECONDS)
        wait_for(lambda: busy_pids(announce), "a busy worker")
        os.kill(rec.manager_pid, signal.SIGKILL)

    result, rec, elapsed = run_with_fault(probe, ANNOUNCING, inject)

    assert (result.success, result.reason) == (False, "manager_died"), result.detail
    assert result.cause == "killed" and "Manager pid" in result.cause_detail, result
    assert elapsed < 60.0 + 5.0
    assert_clean_after(result, rec, probe)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_job_raising_an_unpicklable_exception(start_method: str) -> None:
    probe = ProbeConfig(start_method=start_method, timeout=20.0)
    jobs = JobFunctions(producer=fault_jobs.raising_producer)

    result, rec, elapsed = run_with_fault(probe, jobs, lambda rec: None)

    assert (result.success, result.reason) == (False, "job_error"), result.detail
    assert "UnpicklableError: producer refused" in result.detail
    # The job's own exception, which the job wrapper reports as text (no unpickling in the
    # runner): nothing on the host made it.
    assert result.cause == "unknown" and "no host cause found" in result.cause_detail, result
    assert elapsed < probe.timeout + 5.0
    assert_clean_after(result, rec, probe)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_pool_that_cannot_start(start_method: str) -> None:
    """File descriptors run out on the host: the Manager and the pool cannot be started. Three
    free descriptors are enough for the cycle's own bookkeeping, not for starting processes."""
    probe = ProbeConfig(start_method=start_method, timeout=20.0)
    before = Counters.read(os.getpid())
    with c.open_files_left(3):
        t0 = time.monotonic()
        result = run_cycle(probe)
        elapsed = time.monotonic() - t0
    # Diagnosed under the restored limit: the cause is the error's, the number today's.
    result = diagnosed(result, before)

    assert (result.success, result.reason) == (False, "spawn_failed"), result.detail
    assert "Too many open files" in result.detail
    assert result.cause == "open_files_limit" and "RLIMIT_NOFILE" in result.cause_detail, result
    assert elapsed < probe.timeout + 5.0
    assert result.leaked_processes == 0
    after = run_cycle(ProbeConfig(start_method=start_method))
    assert after.success, after.detail


def test_leftover_grandchild_is_a_leak_and_is_killed() -> None:
    before = Counters.read(os.getpid())
    result = run_cycle(
        ProbeConfig(start_method="fork"), jobs=JobFunctions(producer=fault_jobs.forking_producer)
    )
    result = diagnosed(result, before)

    assert (result.success, result.reason) == (False, "leak"), result.detail
    assert result.cause == "unknown" and "no host cause found" in result.cause_detail, result
    assert result.leaked_processes == 1
    (pid,) = result.leaked_pids
    assert not alive(pid)
    assert run_cycle(ProbeConfig(start_method="fork")).success
