"""Many cycles in one process leave its threads, descriptors and children where they started."""

from __future__ import annotations

import time

import psutil
import pytest

from pqd.config import ProbeConfig
from pqd.containment import become_child_subreaper
from pqd.cycle import run_cycle

CYCLES = 200


def footprint() -> tuple[int, int, list[int]]:
    me = psutil.Process()
    return me.num_threads(), me.num_fds(), sorted(p.pid for p in me.children(recursive=True))


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_200_cycles_leave_threads_fds_and_children_flat() -> None:
    assert become_child_subreaper()
    probe = ProbeConfig()
    # The first cycle starts multiprocessing's long-lived forkserver and resource tracker.
    assert run_cycle(probe).success
    before = footprint()

    failures = [r.detail for r in (run_cycle(probe) for _ in range(CYCLES)) if not r.success]

    # A thread that Python has joined can take a few more milliseconds to leave the OS.
    deadline = time.monotonic() + 10
    while (after := footprint()) != before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert failures == []
    assert after == before
