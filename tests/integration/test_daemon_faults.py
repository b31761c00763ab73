"""Faults injected from outside into a running `pqd run`, as an operator's host would: each is
counted under its reason, the next cycle succeeds, and /metrics answers throughout."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

import psutil
import pytest

from tests.helpers import fault_jobs
from tests.helpers.daemon_faults import (
    FAULTY,
    HARNESS,
    REPO,
    assert_failure_then_success,
    counter,
    cycle_processes,
    faulty_pqd,
    in_a_cycle,
)
from tests.helpers.pqd_process import sample
from tests.helpers.waiting import wait_until

# The probes' python comes from PQD_PYTHON in a per_python run (tests/conftest.py).
pytestmark = pytest.mark.per_python


def test_worker_sigkilled(tmp_path: Path) -> None:
    killed: list[int] = []
    with faulty_pqd(tmp_path) as (pqd, scraper):

        def inject() -> None:
            _, workers = in_a_cycle(pqd)
            workers[0].send_signal(signal.SIGKILL)
            killed.append(workers[0].pid)

        # A SIGKILL with no OOM kill counted: something outside pqd killed it.
        words = ("was killed by SIGKILL", "no OOM kill was recorded")
        line = assert_failure_then_success(pqd, scraper, "worker_died", inject, "killed", words)
    assert any(f"pool worker pid {pid} " in line["cause_detail"] for pid in killed), line


def test_worker_sigstopped(tmp_path: Path) -> None:
    stopped: list[int] = []
    with faulty_pqd(tmp_path) as (pqd, scraper):

        def inject() -> None:
            _, workers = in_a_cycle(pqd)
            for worker in workers:  # whichever is busy or holds the task lock: all stopped
                worker.send_signal(signal.SIGSTOP)
                stopped.append(worker.pid)

        line = assert_failure_then_success(pqd, scraper, "timeout", inject, "stopped", ("state T",))
    detail = line["cause_detail"]
    assert detail.startswith("pool worker "), line
    assert any(f" pid {pid} was stopped" in detail for pid in stopped), line


def test_manager_sigkilled(tmp_path: Path) -> None:
    killed: list[int] = []
    with faulty_pqd(tmp_path) as (pqd, scraper):

        def inject() -> None:
            manager, _ = in_a_cycle(pqd)
            manager.send_signal(signal.SIGKILL)
            killed.append(manager.pid)

        words = ("was killed by SIGKILL", "no OOM kill was recorded")
        line = assert_failure_then_success(pqd, scraper, "manager_died", inject, "killed", words)
    assert any(f"Manager pid {pid} " in line["cause_detail"] for pid in killed), line


def test_job_hanging_past_the_timeout(tmp_path: Path) -> None:
    """A stopped Manager makes the next queue operation in a job block: the job hangs, and the
    sentence names the stopped Manager, not the workers waiting on it."""
    stopped: list[int] = []
    with faulty_pqd(tmp_path) as (pqd, scraper):

        def inject() -> None:
            manager, _ = in_a_cycle(pqd)
            manager.send_signal(signal.SIGSTOP)
            stopped.append(manager.pid)

        line = assert_failure_then_success(pqd, scraper, "timeout", inject, "stopped", ("state T",))
    assert any(f"Manager pid {pid} " in line["cause_detail"] for pid in stopped), line


def pids_cgroup() -> Path | None:
    root = Path("/sys/fs/cgroup/pids")
    if not (root / "cgroup.procs").exists() or not os.access(root, os.W_OK):
        return None
    return root


def test_pool_that_cannot_start_under_a_process_limit(tmp_path: Path) -> None:
    root = pids_cgroup()
    assert root is not None, "needs a writable cgroup v1 pids controller (/sys/fs/cgroup/pids)"
    group = root / f"pqd-test-{os.getpid()}"
    group.mkdir()
    try:
        with faulty_pqd(tmp_path) as (pqd, scraper):

            def inject() -> None:
                # Not before a victim cycle ended: until then its runner may still be starting,
                # born outside the cgroup it is moved into (whose counters it never read).
                wait_until(
                    lambda: (
                        counter(pqd, "pqd_cycles_total", probe="victim") >= 1
                        and not cycle_processes(pqd)[1]
                    ),
                    "the victim between cycles",
                )
                # pqd and its helpers (the forkserver forks the workers) move in; pids.max
                # counts threads too: the tasks there now fit, no new process does.
                for proc in [psutil.Process(pqd.proc.pid), *pqd.descendants()]:
                    # One may exit once listed (ESRCH): it then needs no moving.
                    with contextlib.suppress(ProcessLookupError):
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

            assert_failure_then_success(pqd, scraper, "spawn_failed", inject, "process_limit")
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

        # A process the probe's own job left behind: nothing on the host to blame.
        assert_failure_then_success(
            pqd, scraper, "leak", inject, "unknown", ("no host cause found", "leak")
        )
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
