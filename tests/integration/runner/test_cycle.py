"""The cycle with real worker processes under each start method: the counts the seed shows."""

from __future__ import annotations

import os

import psutil
import pytest

from pqd.probe import ProbeConfig
from pqd.runner.containment import become_child_subreaper
from pqd.runner.cycle import run_cycle
from pqd.trace import render_trace

START_METHODS = ["forkserver", "spawn", "fork"]


@pytest.fixture(scope="module", autouse=True)
def _subreaper() -> None:
    assert become_child_subreaper()


@pytest.mark.parametrize("start_method", START_METHODS)
def test_default_probe_gives_the_seed_counts(start_method: str) -> None:
    result = run_cycle(ProbeConfig(start_method=start_method))

    assert result.success, result.detail
    assert result.reason is None
    assert result.jobs_completed == 10
    assert result.queue_full_events == 10
    assert result.queue_depth_max == 3
    assert result.leaked_processes == 0
    assert (result.items_put, result.items_got) == (15, 15)
    assert [job.job_counter for job in result.jobs] == list(range(1, 11))
    assert all(job.is_alive for job in result.jobs)
    assert set(result.phase_seconds) == {"pool_start", "jobs", "teardown"}
    assert result.host_pid_count_during > 0
    assert sum(result.operations("put").counts) == 25
    # Each consumer gets until Empty: 3 items plus the get that found the queue empty.
    assert sum(result.operations("get").counts) == 20


@pytest.mark.parametrize("start_method", START_METHODS)
def test_parent_is_the_process_that_really_started_the_worker(start_method: str) -> None:
    result = run_cycle(ProbeConfig(start_method=start_method))

    assert result.success, result.detail
    parents = {job.parent_pid for job in result.jobs}
    assert len(parents) == 1
    (parent,) = parents
    if start_method == "forkserver":
        forkserver = psutil.Process(parent)
        assert forkserver.ppid() == os.getpid()
        assert "multiprocessing.forkserver" in " ".join(forkserver.cmdline())
    else:
        assert parent == os.getpid()
    assert f"parent:  {parent}" in render_trace(result)


@pytest.mark.parametrize("start_method", START_METHODS)
def test_custom_probe_gives_the_counts_that_follow(start_method: str) -> None:
    probe = ProbeConfig(
        name="custom",
        start_method=start_method,
        workers=2,
        queue_maxsize=7,
        rounds=3,
        items_per_producer=9,
    )
    result = run_cycle(probe)

    assert result.success, result.detail
    assert result.jobs_completed == 6
    assert result.queue_full_events == 3 * (9 - 7)
    assert result.queue_depth_max == 7
    assert (result.items_put, result.items_got) == (21, 21)
    assert result.leaked_processes == 0
    assert len({job.pid for job in result.jobs}) <= 2
    assert result.workers_configured == 2
    assert result.queue_capacity == 7


def test_trace_has_the_seed_line_shapes() -> None:
    result = run_cycle(ProbeConfig())
    lines = render_trace(result)

    assert result.success, result.detail
    assert [line for line in lines if line.startswith("count(")] == [
        f"count({n})" for n in (2, 4, 6, 8, 10)
    ]
    assert lines.count("Full q !!!") == 10
    assert sum(line.startswith("put in q：") for line in lines) == 15
    assert sum(line.startswith("get from q：") for line in lines) == 15
    assert lines[-2] == "**********"
    worker_lines = [line for line in lines if line.endswith(" True")]
    assert len(worker_lines) == 10
    assert lines[0].split()[3:] == ["MainProcess", str(result.host_pid_count_before)]
    assert "('pid', " in lines[5 + 3]  # first producer: header, parent, 3 puts, 2 fulls
