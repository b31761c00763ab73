"""'Where it was stuck': a failed cycle reports each live process of its tree (role, /proc state,
wchan) and the Python stacks of those that can answer, taken before pqd kills the tree.

Real runners (tests.helpers.fault_runner, whose producer is a fault_jobs job), real pools and
Managers, faults injected from outside with signals, as on an operator's host."""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from pqd.probe import ProbeConfig
from pqd.results import CycleResult, StuckProcess
from pqd.supervisor.runners import Runners
from tests.helpers import fault_jobs
from tests.helpers.fault_runner import PRODUCER_ENV
from tests.helpers.interpreters import probe_fields
from tests.helpers.pqd_process import running_pqd
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.per_python
REPO = Path(__file__).resolve().parents[3]
TIMEOUT = 3.0
START_METHODS = ["forkserver", "spawn", "fork"]


def probe(start_method: str = "forkserver") -> ProbeConfig:
    return ProbeConfig(
        name=f"stuck-{start_method}",
        start_method=start_method,
        workers=2,
        rounds=1,
        timeout=TIMEOUT,
        **probe_fields(),
    )


def busy_worker(announce: Path) -> tuple[int, str]:
    """The pid of the worker running the fault job, and what it announced."""

    def found() -> tuple[int, str] | None:
        for entry in announce.glob("*.busy"):
            text = entry.read_text()
            if text:
                return int(entry.name.split(".")[0]), text
        return None

    return wait_until(found, "the fault job to start", 30.0)


def line_of(function: object, marker: str) -> int:
    """The line number of the source line of ``function`` that carries ``marker``."""
    lines, first = inspect.getsourcelines(function)
    return first + next(i for i, text in enumerate(lines) if marker in text)


def by_pid(result: CycleResult) -> dict[int, StuckProcess]:
    return {proc.pid: proc for proc in result.stuck}


def assert_within_deadline(result: CycleResult) -> None:
    assert not result.success
    # The guarantee of the supervisor: capture included, the result is in by timeout + 1 s.
    assert result.duration_seconds <= TIMEOUT + 1.0, result.duration_seconds


def assert_whole_tree_listed(result: CycleResult) -> None:
    roles = [proc.role for proc in result.stuck]
    assert roles[0] == "runner", roles
    assert "Manager" in roles, roles
    assert {"pool worker 1", "pool worker 2"} <= set(roles), roles


@pytest.mark.parametrize("start_method", START_METHODS)
def test_sleeping_job_stack_shows_the_sleeping_line(
    fault_runners: Runners, announce: Path, monkeypatch: pytest.MonkeyPatch, start_method: str
) -> None:
    monkeypatch.setenv(PRODUCER_ENV, "sleeping_producer")
    result = fault_runners.run_cycle(probe(start_method))

    assert result.reason == "timeout", result.detail
    # Every process asleep, none stopped or in D: a slow job, nothing on the host to blame.
    assert result.cause == "unknown", result.cause_detail
    assert_within_deadline(result)
    assert_whole_tree_listed(result)
    pid, _ = busy_worker(announce)
    worker = by_pid(result)[pid]
    assert worker.role.startswith("pool worker"), worker
    assert worker.state == "S", worker
    assert worker.stack is not None, worker.note
    line = line_of(fault_jobs.sleeping_producer, "SLEEPING_LINE")
    assert f'fault_jobs.py", line {line} in sleeping_producer' in worker.stack, worker.stack
    # Every other Python process of the tree answered too (the resource tracker has no hook).
    for proc in result.stuck:
        if proc.role != "resource_tracker":
            assert proc.stack, (proc.role, proc.note)


def test_stopped_worker_is_named_with_state_t(
    fault_runners: Runners, announce: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PRODUCER_ENV, "sleeping_producer")
    stopped: list[int] = []

    def stop_the_worker() -> None:
        pid, _ = busy_worker(announce)
        os.kill(pid, signal.SIGSTOP)
        stopped.append(pid)

    injector = _in_thread(stop_the_worker)
    result = fault_runners.run_cycle(probe())
    injector.join(30)

    assert stopped, "the fault was not injected"
    assert_within_deadline(result)
    worker = by_pid(result)[stopped[0]]
    assert worker.role.startswith("pool worker"), worker
    assert worker.state == "T", worker
    assert worker.stack is None
    assert "stopped" in worker.note, worker.note
    assert result.cause == "stopped" and f"pid {stopped[0]}" in result.cause_detail, result


def test_stopped_manager_leaves_the_worker_in_a_queue_call(
    fault_runners: Runners, announce: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PRODUCER_ENV, "churning_producer")
    seen: list[tuple[int, int]] = []

    def stop_the_manager() -> None:
        pid, text = busy_worker(announce)
        manager = int(text.split()[1])
        os.kill(manager, signal.SIGSTOP)
        seen.append((pid, manager))

    injector = _in_thread(stop_the_manager)
    result = fault_runners.run_cycle(probe())
    injector.join(30)

    assert seen, "the fault was not injected"
    worker_pid, manager_pid = seen[0]
    assert_within_deadline(result)
    processes = by_pid(result)
    assert processes[manager_pid].role == "Manager"
    assert processes[manager_pid].state == "T", processes[manager_pid]
    assert (result.cause, f"Manager pid {manager_pid}" in result.cause_detail) == ("stopped", True)
    worker = processes[worker_pid]
    assert worker.stack is not None, worker.note
    main_thread = worker.stack.rstrip().split("\n\n")[-1]
    # Blocked waiting for the stopped Manager's answer, inside the job's put_nowait.
    assert "in _callmethod" in main_thread, main_thread
    line = line_of(fault_jobs.churning_producer, "CHURN_LINE")
    assert f'fault_jobs.py", line {line} in churning_producer' in main_thread, main_thread


def test_job_error_keeps_the_worker_traceback(
    fault_runners: Runners, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PRODUCER_ENV, "raising_producer")
    result = fault_runners.run_cycle(probe())

    assert result.reason == "job_error", result.detail
    assert result.cause == "unknown", result.cause_detail  # the job's own exception
    assert_within_deadline(result)
    traceback = result.job_traceback or ""
    assert traceback.startswith("Traceback (most recent call last):"), traceback
    assert "in raising_producer" in traceback, traceback
    assert 'raise UnpicklableError("producer refused", 7)' in traceback, traceback
    assert traceback.rstrip().endswith("UnpicklableError: producer refused"), traceback
    # The runner found the failure itself and captured its tree before tearing it down.
    assert_whole_tree_listed(result)


def test_pqd_once_prints_and_exports_where_it_was_stuck(tmp_path: Path) -> None:
    """`pqd once` (through the fault harness): the text output and --json carry the capture."""
    config = tmp_path / "pqd.toml"
    config.write_text(f'[probes.stuck]\nworkers = 2\nrounds = 1\ntimeout = "{TIMEOUT:g}s"\n')
    env = {**os.environ, PRODUCER_ENV: "sleeping_producer", "PYTHONPATH": str(REPO)}
    harness = str(REPO / "tests/helpers/fault_harness.py")
    line = line_of(fault_jobs.sleeping_producer, "SLEEPING_LINE")
    expected = f'fault_jobs.py", line {line} in sleeping_producer'

    text = _run([sys.executable, harness, "once", "--config", str(config)], env)
    assert "where it was stuck:" in text, text
    assert expected in text, text

    once_json = [sys.executable, harness, "once", "--json", "--config", str(config)]
    result = json.loads(_run(once_json, env))[0]
    stuck = result["stuck"]
    assert result["cause"] == "unknown", result["cause_detail"]  # a slow job, the host is fine
    assert stuck[0]["role"] == "runner", stuck
    assert any(expected in (p["stack"] or "") for p in stuck), stuck


def _run(command: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    return done.stdout


def _in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_daemon_logs_and_serves_where_it_was_stuck(tmp_path: Path) -> None:
    """The real daemon (through the fault harness): the failed cycle's log line summarises the
    capture and its page shows each process and the sleeping line."""
    config = f'[probes.stuck]\ninterval = "1s"\nworkers = 2\nrounds = 1\ntimeout = "{TIMEOUT:g}s"\n'
    env = {PRODUCER_ENV: "sleeping_producer", "PYTHONPATH": str(REPO)}
    harness = (sys.executable, str(REPO / "tests/helpers/fault_harness.py"))
    line = line_of(fault_jobs.sleeping_producer, "SLEEPING_LINE")
    with running_pqd(tmp_path, config, env=env, command=harness) as pqd:
        failed = wait_until(lambda: pqd.log_events("cycle failed"), "a failed cycle", 60.0)[0]
        assert (failed["reason"], failed["cause"]) == ("timeout", "unknown"), failed
        assert failed["stuck"].startswith("runner pid "), failed
        assert f"at fault_jobs.py:{line} in sleeping_producer" in failed["stuck"], failed

        status, page = pqd.get(f"/cycles/{failed['cycle_id']}")
        assert status == 200, page
        assert "Where it was stuck" in page, page
        assert f"fault_jobs.py&quot;, line {line} in sleeping_producer" in page, page


def test_capture_stacks_false_signals_nothing(
    fault_runners: Runners, announce: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PRODUCER_ENV, "sleeping_producer")
    quiet = dataclasses.replace(probe(), capture_stacks=False)
    result = fault_runners.run_cycle(quiet)

    assert result.reason == "timeout", result.detail
    # Every process asleep, none stopped or in D: a slow job, nothing on the host to blame.
    assert result.cause == "unknown", result.cause_detail
    assert_within_deadline(result)
    assert_whole_tree_listed(result)
    pid, _ = busy_worker(announce)
    assert by_pid(result)[pid].state == "S"
    assert all(p.stack is None for p in result.stuck), result.stuck
    assert {p.note for p in result.stuck} == {"stacks not captured (capture_stacks = false)"}
