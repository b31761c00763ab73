"""Many cycles in one process leave its threads, descriptors and children where they started.

The cycles run in a Python process of their own, as they do in a probe's runner: in the test
process, what earlier tests left (a thread of a call that missed its deadline, pipes of a failed
pool awaiting the garbage collector) may leave during the run and move the baseline.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CYCLES = 200

RUNNER = """
import json, sys, threading, time
import psutil
from pqd.probe import ProbeConfig
from pqd.runner.containment import become_child_subreaper
from pqd.runner.cycle import run_cycle


def footprint():
    me = psutil.Process()
    return [me.num_threads(), me.num_fds(), sorted(p.pid for p in me.children(recursive=True))]


def settled_footprint():
    # Once the OS agrees with Python on the threads alive: a thread Python has joined can take
    # a few more milliseconds to leave the OS (polled with a deadline, not a fixed sleep).
    deadline = time.monotonic() + 10
    while psutil.Process().num_threads() != threading.active_count():
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    return footprint()


def main():
    assert become_child_subreaper()
    probe = ProbeConfig()
    # The first cycle starts multiprocessing's long-lived forkserver and resource tracker.
    first = run_cycle(probe)
    before = settled_footprint()
    failures = [r.detail for r in (run_cycle(probe) for _ in range(int(sys.argv[1])))]
    failures = [d for d in failures if d != "ok"]
    after = settled_footprint()
    print(json.dumps({"first": first.success, "before": before, "after": after,
                      "failures": failures}))


if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_200_cycles_leave_threads_fds_and_children_flat() -> None:
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(CYCLES)],
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    assert report["first"] is True
    assert report["failures"] == []
    assert report["after"] == report["before"]
    assert report["before"][0] >= 1 and report["before"][1] > 0  # really measured
