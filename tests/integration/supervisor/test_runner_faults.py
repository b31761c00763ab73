"""A probe's runner and helpers stopped or slow, seen by pqd's supervisor in this test process
(docs/design.md §1, "Reasons"): the reason names what failed, not the deadline that noticed it.
Real runners and pools; faults made from outside with signals, as on an operator's host."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import psutil
import pytest

from pqd.probe import ProbeConfig
from pqd.results import CycleResult
from pqd.runner.containment import OOM_SCORE_ADJ_RAISE
from pqd.supervisor.runners import Runners
from tests.helpers.interpreters import probe_fields
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.per_python


def probe(timeout: float) -> ProbeConfig:
    # An interval below WARM_BELOW_SECONDS: the runner and its helpers stay up between cycles.
    return ProbeConfig(
        name="victim",
        start_method="forkserver",
        workers=2,
        rounds=1,
        interval=1.0,
        timeout=timeout,
        **probe_fields(),
    )


def first_cycle(runners: Runners, config: ProbeConfig) -> CycleResult:
    result = runners.run_cycle(config)
    assert result.success, (result.reason, result.detail)
    return result


def forkserver_of(result: CycleResult) -> int:
    for child in psutil.Process(result.main_pid).children():
        if "multiprocessing.forkserver" in " ".join(child.cmdline()):
            return child.pid
    raise AssertionError(f"no forkserver below runner pid {result.main_pid}")


def test_a_forkserver_stopped_while_idle_is_helper_died(runners: Runners) -> None:
    config = probe(timeout=3.0)
    forkserver = forkserver_of(first_cycle(runners, config))
    os.kill(forkserver, signal.SIGSTOP)

    failed = runners.run_cycle(config)

    # Said by the runner ("starting the Manager: forkserver pid N ...") or, when pqd's deadline
    # (a few ms earlier) wins, by pqd; before, pqd then said "timeout" (1 run in 3 here): its
    # check read the roles after the kill.
    assert failed.reason == "helper_died", failed.detail
    assert failed.detail.endswith(f"forkserver pid {forkserver} is stopped (state T)")
    assert failed.cause == "stopped" and f"pid {forkserver}" in failed.cause_detail, failed
    assert failed.duration_seconds <= config.timeout + 1
    # The table names it as the reason does: its role was read before the tree was killed.
    assert {(s.pid, s.role, s.state) for s in failed.stuck} >= {(forkserver, "forkserver", "T")}
    assert runners.run_cycle(config).success


def test_a_stopped_idle_runner_is_helper_died_before_the_cycle_is_sent(runners: Runners) -> None:
    config = probe(timeout=30.0)
    runner = first_cycle(runners, config).main_pid
    os.kill(runner, signal.SIGSTOP)
    # The condition is a runner in state T before the cycle is sent (delivery is not instant).
    wait_until(lambda: psutil.Process(runner).status() == "stopped", "the runner to stop")

    failed = runners.run_cycle(config)

    assert (failed.reason, failed.detail) == (
        "helper_died",
        f"runner pid {runner} is stopped (state T) before the cycle was sent",
    )
    assert failed.cause == "stopped", (failed.cause, failed.cause_detail)
    assert f"runner pid {runner} was stopped (state T)" in (failed.cause_detail or "")
    # It waited for nothing: far less than the timeout it used to cost, on a busy machine too.
    assert failed.duration_seconds < config.timeout / 3
    after = runners.run_cycle(config)
    assert after.success and after.main_pid != runner
    assert not psutil.pid_exists(runner) or psutil.Process(runner).status() == "zombie"


def test_a_timeout_shorter_than_the_runners_start_up_is_a_timeout(runners: Runners) -> None:
    # No runner starts (an interpreter, then pqd's runner side) in 10 ms.
    config = dataclasses.replace(probe(timeout=0.01), interval=None)

    failed = runners.run_cycle(config)

    assert (failed.reason, failed.detail) == (
        "timeout",
        "the runner was not ready within the probe's timeout of 0.01s; pqd killed it",
    )
    assert failed.cause == "unknown", failed.cause_detail  # a deadline too short, not the host


def test_a_probes_tree_is_offered_to_the_oom_killer_before_pqd(runners: Runners) -> None:
    """The runner and, through inheritance, its forkserver and resource tracker have an
    oom_score_adj above pqd's (here: this process's) by OOM_SCORE_ADJ_RAISE."""
    own = int(Path("/proc/self/oom_score_adj").read_text())
    runner = psutil.Process(first_cycle(runners, probe(timeout=20.0)).main_pid)
    tree = [runner, *runner.children()]
    assert len(tree) == 3, tree  # the runner, its forkserver and resource tracker
    want = min(1000, own + OOM_SCORE_ADJ_RAISE)
    assert [int(Path(f"/proc/{p.pid}/oom_score_adj").read_text()) for p in tree] == [want] * 3
