"""`pqd run` as a real process: what its gauges say when a count was not measured, and when a
reload changes a configured value while a cycle is running (docs/design.md §2)."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import psutil

from tests.helpers.pqd_process import PqdProcess, running_pqd, sample, wait_until

# spawn: the runner's Manager and pool workers are its own children, so an idle runner (no
# cycle in flight) is one whose only child is its resource tracker. Cycles are 4 s apart and
# take well under 2 s, so the runner is stopped between two of them.
STOPPABLE = """
[probes.p]
start_method = "spawn"
workers = 2
interval = "4s"
timeout = "3s"
"""


def _value(pqd: PqdProcess, name: str) -> float | None:
    return sample(pqd.scrape(), name, probe="p")


def _runner(pqd: PqdProcess) -> psutil.Process:
    """The probe's runner: the child of pqd started with an event pipe."""

    def find() -> psutil.Process | None:
        for child in psutil.Process(pqd.pid).children():
            try:
                if "--events-fd" in child.cmdline():
                    return child
            except psutil.NoSuchProcess:
                continue
        return None

    return wait_until(find, "the probe's runner")


def _idle(runner: psutil.Process) -> bool:
    """No cycle in flight: the runner's only children are multiprocessing's resource tracker
    (a child that is exiting, or cannot be read, counts as a cycle's)."""
    try:
        return all("resource_tracker" in " ".join(c.cmdline()) for c in runner.children())
    except psutil.Error:
        return False


def _stop_between_cycles(pqd: PqdProcess) -> tuple[psutil.Process, float]:
    """SIGSTOP the runner right after a cycle completed, before the next one reaches it; the
    cycles total it was stopped after."""
    for _ in range(5):
        done = _value(pqd, "pqd_cycles_total") or 0
        wait_until(lambda n=done: (_value(pqd, "pqd_cycles_total") or 0) > n, "a cycle to end")
        runner = _runner(pqd)
        runner.send_signal(signal.SIGSTOP)
        # Stopped, it cannot take the next cycle's request; checked once it can no longer move.
        if _idle(runner):
            return runner, done + 1
        runner.send_signal(signal.SIGCONT)
    raise AssertionError("the runner was never idle right after a cycle")


def test_a_cycle_killed_before_its_runner_reported_the_start_keeps_the_pid_delta(
    tmp_path: Path,
) -> None:
    """Its "before" count stayed at the -1 placeholder and was subtracted anyway:
    pqd_last_cycle_pid_count_delta read about the host's whole pid count (75 on the
    reporter's host). The gauge keeps the last measured delta instead."""
    with running_pqd(tmp_path, STOPPABLE) as pqd:
        wait_until(lambda: _value(pqd, "pqd_last_cycle_success") == 1, "a first good cycle")
        runner, completed = _stop_between_cycles(pqd)
        measured = _value(pqd, "pqd_last_cycle_pid_count_delta")
        assert measured is not None
        text = pqd.scrape_until(
            lambda t: (sample(t, "pqd_cycles_total", probe="p") or 0) > completed,
            "the cycle of the stopped runner to be recorded",
        )
        failed = [e for e in pqd.log_events("cycle failed") if e["probe"] == "p"]
        host_pids = len([p for p in os.listdir("/proc") if p.isdigit()])

    assert not runner.is_running() or runner.status() == psutil.STATUS_ZOMBIE
    assert sample(text, "pqd_last_cycle_success", probe="p") == 0
    assert sample(text, "pqd_cycle_failures_total", probe="p", reason="helper_died") == 1
    assert len(failed) == 1 and re.search(r"runner pid \d+ is stopped", failed[0]["detail"])
    # The failed cycle measured no "before": the delta of the cycle before it stays.
    assert sample(text, "pqd_last_cycle_pid_count_delta", probe="p") == measured
    assert "pid_delta" not in failed[0]  # nor does its log line make one up
    # The host count at its end was measured (by pqd): it is exported.
    assert 0 < (sample(text, "pqd_host_pid_count", probe="p") or 0) <= 2 * host_pids


# A cycle of about 1.6 s (10 jobs of 150 ms, plus the pool's start), the reporter's shape.
SLOW = """
enable_reload_endpoint = true

[probes.p]
start_method = "forkserver"
workers = {workers}
queue_maxsize = {maxsize}
shared_memory_bytes = {shm}
job_pause = "150ms"
interval = "3s"
"""
OLD = {"workers": 4, "maxsize": 3, "shm": 0}
NEW = {"workers": 2, "maxsize": 5, "shm": 65536}
CONFIGURED = ("pqd_workers_configured", "pqd_queue_capacity", "pqd_shared_memory_bytes")


def _configured(text: str) -> tuple[float | None, ...]:
    return tuple(sample(text, name, probe="p") for name in CONFIGURED)


def test_configured_gauges_stay_at_the_reloaded_values_when_an_older_cycle_finishes(
    tmp_path: Path,
) -> None:
    """After a reload that changed workers in the middle of a cycle, pqd_workers_configured
    showed the new value, flipped back to the old one when that cycle finished, then forward
    again at the next cycle's end."""
    old, new = tuple(map(float, OLD.values())), tuple(map(float, NEW.values()))
    with running_pqd(tmp_path, SLOW.format(**OLD)) as pqd:
        assert _configured(pqd.scrape()) == old
        # Jobs running: the cycle is in its middle, as the reporter reloaded.
        text = pqd.scrape_until(
            lambda t: (sample(t, "pqd_workers_live", probe="p") or 0) > 0, "jobs"
        )
        in_flight = sample(text, "pqd_cycles_total", probe="p") or 0
        pqd.config_path.write_text(SLOW.format(**NEW))
        assert pqd.get("/-/reload", method="POST")[0] == 200
        # Every scrape from the reload until the next cycle, begun after it, has completed.
        seen = []
        deadline = time.monotonic() + 30
        while (sample(text := pqd.scrape(), "pqd_cycles_total", probe="p") or 0) < in_flight + 2:
            assert time.monotonic() < deadline, "two cycles did not complete in 30 s"
            seen.append(_configured(text))
        seen.append(_configured(text))
        finished = [e["cycle_id"] for e in pqd.log_events("cycle finished") if e["probe"] == "p"]
        pages = [pqd.get(f"/cycles/{cycle_id}")[1] for cycle_id in finished]

    assert seen and set(seen) == {new}, sorted(set(seen))
    # What each finished cycle used belongs to it: the one begun before the reload, 4 workers.
    workers = [re.search(r"<th>workers</th>\s*<td>(\d+)</td>", page) for page in pages]
    assert [m and int(m[1]) for m in workers][-2:] == [OLD["workers"], NEW["workers"]]
