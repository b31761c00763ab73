"""Faults injected from outside into a running `pqd run`, as an operator's host would: each is
counted under its reason, the next cycle succeeds, and /metrics answers throughout."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.integration import fault_jobs
from tests.integration.pqd_process import PqdProcess, sample, wait_until

REPO = Path(__file__).resolve().parents[2]
HARNESS = Path(__file__).with_name("pqd_fault_harness.py")

# Jobs pause so that a cycle takes about 3 s: long enough to be hit in the middle.
FAULTY = """
[probes.victim]
start_method = "forkserver"
interval = "1s"
job_pause = "300ms"
timeout = "8s"

[probes.bystander]
start_method = "spawn"
interval = "2s"
workers = 2
"""


class Scraper:
    """Scrapes /metrics every 100 ms on its own thread and remembers every failure."""

    def __init__(self, pqd: PqdProcess) -> None:
        self.pqd = pqd
        self.failures: list[str] = []
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            status, _ = self.pqd.get("/metrics")
            self.count += 1
            if status != 200:
                self.failures.append(f"status {status} at {time.monotonic():.1f}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


@contextlib.contextmanager
def faulty_pqd(
    tmp_path: Path, config: str = FAULTY, **kwargs: object
) -> Iterator[tuple[PqdProcess, Scraper]]:
    pqd = PqdProcess(tmp_path, config, **kwargs).wait_ready()  # type: ignore[arg-type]
    scraper = Scraper(pqd)
    try:
        yield pqd, scraper
    finally:
        scraper.stop()
        pqd.stop()


def counter(pqd: PqdProcess, name: str, **labels: str) -> float:
    return sample(pqd.scrape(), name, **labels) or 0.0


def cycle_processes(pqd: PqdProcess) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The victim probe's (Manager, workers) right now: its forkserver's children (the only
    forkserver probe's, below its runner). The Manager is the one with a listening socket."""
    managers, workers = [], []
    for child in pqd.descendants():
        with contextlib.suppress(psutil.Error):
            if "multiprocessing.forkserver" not in " ".join(child.cmdline()):
                continue
            for proc in child.children():
                sockets = proc.net_connections(kind="unix")
                if any("listener-" in str(s.laddr) for s in sockets):
                    managers.append(proc)
                else:
                    workers.append(proc)
    return managers, workers


def in_a_cycle(pqd: PqdProcess) -> tuple[psutil.Process, list[psutil.Process]]:
    def found() -> tuple[psutil.Process, list[psutil.Process]] | None:
        managers, workers = cycle_processes(pqd)
        return (managers[0], workers) if len(managers) == 1 and len(workers) == 4 else None

    return wait_until(found, "a victim cycle in progress")


def assert_failure_then_success(
    pqd: PqdProcess, scraper: Scraper, reason: str, inject: Callable[[], None]
) -> None:
    failures_before = counter(pqd, "pqd_cycle_failures_total", probe="victim", reason=reason)
    bystander_before = counter(pqd, "pqd_cycles_total", probe="bystander")
    # A fault that lands after the last job, while the pool is being closed anyway, does not
    # fail the cycle (its measurements are complete): then the next cycle is hit again.
    text = ""
    for _attempt in range(5):
        inject()
        try:
            text = pqd.scrape_until(
                lambda t: (
                    (sample(t, "pqd_cycle_failures_total", probe="victim", reason=reason) or 0)
                    > failures_before
                ),
                f"a {reason} failure to be counted",
                seconds=15,
            )
            break
        except AssertionError:
            continue
    assert text, f"no {reason} failure counted after 5 injections"
    successes = sample(text, "pqd_last_cycle_success_timestamp_seconds", probe="victim") or 0
    pqd.scrape_until(
        lambda t: (
            (sample(t, "pqd_last_cycle_success_timestamp_seconds", probe="victim") or 0) > successes
            and sample(t, "pqd_last_cycle_success", probe="victim") == 1
        ),
        "the next victim cycle to succeed",
    )
    if "[probes.bystander]" not in pqd.config_path.read_text():
        assert scraper.failures == []
        return
    pqd.scrape_until(
        lambda t: (
            (sample(t, "pqd_cycles_total", probe="bystander") or 0) > bystander_before
            and sample(t, "pqd_last_cycle_success", probe="bystander") == 1
        ),
        "the bystander probe to keep cycling successfully",
    )
    assert scraper.failures == []
    assert scraper.count > 0


def test_worker_sigkilled(tmp_path: Path) -> None:
    with faulty_pqd(tmp_path) as (pqd, scraper):

        def inject() -> None:
            _, workers = in_a_cycle(pqd)
            workers[0].send_signal(signal.SIGKILL)

        assert_failure_then_success(pqd, scraper, "worker_died", inject)


def test_worker_sigstopped(tmp_path: Path) -> None:
    with faulty_pqd(tmp_path) as (pqd, scraper):

        def inject() -> None:
            _, workers = in_a_cycle(pqd)
            for worker in workers:  # whichever is busy or holds the task lock: all stopped
                worker.send_signal(signal.SIGSTOP)

        assert_failure_then_success(pqd, scraper, "timeout", inject)


def test_manager_sigkilled(tmp_path: Path) -> None:
    with faulty_pqd(tmp_path) as (pqd, scraper):

        def inject() -> None:
            manager, _ = in_a_cycle(pqd)
            manager.send_signal(signal.SIGKILL)

        assert_failure_then_success(pqd, scraper, "manager_died", inject)


def test_job_hanging_past_the_timeout(tmp_path: Path) -> None:
    """A stopped Manager makes the next queue operation in a job block: the job hangs."""
    with faulty_pqd(tmp_path) as (pqd, scraper):

        def inject() -> None:
            manager, _ = in_a_cycle(pqd)
            manager.send_signal(signal.SIGSTOP)

        assert_failure_then_success(pqd, scraper, "timeout", inject)


def pids_cgroup() -> Path | None:
    root = Path("/sys/fs/cgroup/pids")
    if not (root / "cgroup.procs").exists() or not os.access(root, os.W_OK):
        return None
    return root


@pytest.mark.skipif(pids_cgroup() is None, reason="needs a writable cgroup v1 pids controller")
def test_pool_that_cannot_start_under_a_process_limit(tmp_path: Path) -> None:
    root = pids_cgroup()
    assert root is not None
    group = root / f"pqd-test-{os.getpid()}"
    group.mkdir()
    try:
        with faulty_pqd(tmp_path) as (pqd, scraper):

            def inject() -> None:
                wait_until(lambda: not cycle_processes(pqd)[1], "the victim between cycles")
                # pqd and its helpers (the forkserver forks the workers) move in; pids.max
                # counts threads too: the tasks there now fit, no new process does.
                for proc in [psutil.Process(pqd.proc.pid), *pqd.descendants()]:
                    (group / "cgroup.procs").write_text(str(proc.pid))
                tasks = (group / "tasks").read_text().split()
                (group / "pids.max").write_text(str(len(tasks)))
                pqd.scrape_until(
                    lambda t: (
                        (
                            sample(
                                t, "pqd_cycle_failures_total", probe="victim", reason="spawn_failed"
                            )
                            or 0
                        )
                        > 0
                    ),
                    "a cycle to fail to start",
                )
                for pid in (group / "cgroup.procs").read_text().split():
                    with contextlib.suppress(OSError):
                        (root / "cgroup.procs").write_text(pid)

            assert_failure_then_success(pqd, scraper, "spawn_failed", inject)
    finally:
        with contextlib.suppress(OSError):
            group.rmdir()


def test_grandchild_left_behind_is_counted_and_killed(tmp_path: Path) -> None:
    trigger = tmp_path / "leak-now"
    env = {fault_jobs.TRIGGER_ENV: str(trigger), "PYTHONPATH": str(REPO)}
    # The harness swaps the producer of every probe: one probe, so the victim takes the trigger.
    victim_only = FAULTY.split("[probes.bystander]")[0]
    with faulty_pqd(tmp_path, victim_only, env=env, command=[sys.executable, str(HARNESS)]) as (
        pqd,
        scraper,
    ):

        def inject() -> None:
            trigger.write_text("plain 1")

        assert_failure_then_success(pqd, scraper, "leak", inject)
        text = pqd.scrape()
        leak_events = [e for e in pqd.log_events("cycle failed") if e.get("reason") == "leak"]

    assert leak_events and leak_events[0]["leaked"] == "1"
    assert (sample(text, "pqd_cycle_failures_total", probe="victim", reason="leak") or 0) >= 1
    leftovers = [
        p
        for p in psutil.process_iter(["cmdline", "ppid"])
        if p.info["cmdline"] == ["sleep", "300"] and p.info["ppid"] in (pqd.proc.pid, 1)
    ]
    assert leftovers == []
