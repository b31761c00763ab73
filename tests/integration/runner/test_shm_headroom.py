"""/dev/shm headroom for real, in a private /dev/shm of its own (tests.helpers.conditions): its
size and free space, the entries left there by earlier cycles, and what a cycle itself leaves,
each compared with what the test reads itself (docs/design.md §2, "Headroom").

The cycles run in a Python process inside the mount namespace, as in a probe's runner."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.conditions import command, environment, private_shm, run, worker_hook
from tests.helpers.namespaces import mount_namespace, shm_steps
from tests.helpers.pqd_process import running_pqd, sample
from tests.helpers.waiting import wait_until

ROOT = Path(__file__).resolve().parents[3]

RUNNER = """
import json, os, sys
from pqd.probe import ProbeConfig
from pqd.runner.cycle import JobFunctions, run_cycle
from tests.helpers import fault_jobs


def main():
    method, job, planted = sys.argv[1], sys.argv[2], int(sys.argv[3])
    cycles = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    for n in range(planted):  # what earlier, killed cycles left behind
        with open(f"/dev/shm/sem.mp-planted{n}", "wb") as f:
            f.write(bytes(32))
    jobs = None
    if job == "leave":
        jobs = JobFunctions(producer=fault_jobs.shared_memory_leaving_producer)
    for _ in range(cycles):
        st = os.statvfs("/dev/shm")
        before = sorted(os.listdir("/dev/shm"))
        result = run_cycle(ProbeConfig(start_method=method, timeout=20), jobs=jobs)
        print(json.dumps({
            "reason": result.reason,
            "cause": result.cause,
            "cause_detail": result.cause_detail,
            "leaked": result.leaked_shm_objects,
            "headroom": result.headroom.__dict__,
            "size": st.f_blocks * st.f_frsize,
            "available": st.f_bavail * st.f_frsize,
            "before": before,
            "after": sorted(os.listdir("/dev/shm")),
        }), flush=True)


if __name__ == "__main__":
    main()
"""


def cycles_in_private_shm(
    method: str,
    job: str,
    planted: int,
    fault: str = "",
    every_job: str = "",
    cycles: int = 1,
    size: str = "1m",
) -> list[dict[str, Any]]:
    """What each of ``cycles`` cycles of one runner process saw, in a /dev/shm of ``size``."""
    with private_shm(size) as namespace, worker_hook() as hook:
        if fault:
            hook.add(fault)
        if every_job:
            hook.every_job(every_job)
        done = run(
            [sys.executable, "-c", RUNNER, method, job, str(planted), str(cycles)],
            namespace.wrap,
            hook.wrap,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=90,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def cycle_in_private_shm(method: str, job: str, planted: int, fault: str = "") -> dict[str, Any]:
    (seen,) = cycles_in_private_shm(method, job, planted, fault)
    return seen


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_size_free_space_and_entries_left_by_earlier_cycles_are_the_host_s(method: str) -> None:
    seen = cycle_in_private_shm(method, "plain", planted=5)
    room = seen["headroom"]
    assert seen["reason"] is None
    assert room["shm_size_bytes"] == seen["size"] == 1 << 20
    assert room["shm_available_bytes"] == seen["available"] < seen["size"]
    assert room["shm_objects"] == len(seen["before"]) == 5
    # Those five were there before the cycle: not the cycle's, so not leaked by it.
    assert seen["leaked"] == 0
    assert seen["after"] == seen["before"]


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_a_failed_cycle_leaves_none_of_its_semaphores_in_dev_shm(method: str) -> None:
    # The tree, resource tracker included, is SIGKILLed: only the runner can still unlink the
    # pool's semaphores, which it does as the cycle's objects go.
    seen = cycle_in_private_shm(method, "plain", planted=0, fault="segv")
    assert seen["reason"] == "worker_died"
    assert seen["after"] == seen["before"] == []
    assert seen["leaked"] == 0


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_a_shared_memory_block_a_job_leaves_is_counted_as_leaked(method: str) -> None:
    # The runner's resource tracker outlives the cycle; it would remove the block only when
    # it exits, so the block is the cycle's leak. (Under fork a worker that creates shared
    # memory starts a tracker of its own, which removes the block when it notices the worker
    # gone: at some moment after the pool closed, before or after the cycle's count.)
    seen = cycle_in_private_shm(method, "leave", planted=2)
    new = sorted(set(seen["after"]) - set(seen["before"]))
    assert seen["reason"] is None
    assert len(new) == 1 and new[0].startswith("psm_")
    assert seen["leaked"] == len(new) == 1


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_a_cycle_whose_jobs_fill_dev_shm_with_semaphores_still_ends_and_counts_them(
    method: str,
) -> None:
    # Each job leaves named semaphores until /dev/shm is full (one takes a page). The pool's
    # own were made before, so the jobs finish; the teardown must not need a new semaphore
    # (the runner died of ENOSPC there, the cycle unreported). Its pool's pages, freed at
    # teardown, are what the next cycle's pool takes: that one runs too, its jobs find no room.
    filled, after = cycles_in_private_shm(
        method, "plain", planted=0, every_job="leave_semaphores 1000", cycles=2
    )
    new = sorted(set(filled["after"]) - set(filled["before"]))
    assert filled["reason"] is None
    assert len(new) > 200 and all(n.startswith("sem.mp-pqdcond-leak-") for n in new)
    assert filled["leaked"] == len(new)
    assert 0 < after["available"] < 8 * 4096  # the pages the pool freed at teardown
    assert after["reason"] is None and after["before"] == filled["after"] == after["after"]
    assert after["headroom"]["shm_objects"] == len(new) and after["leaked"] == 0


def test_a_dev_shm_out_of_inodes_with_space_to_spare_is_shm_full() -> None:
    # nr_inodes=64: the directory takes one, 63 empty entries the rest, and all 4 MiB stay
    # free. The pool's first semaphore gets ENOSPC all the same (pqd once classifies it).
    plant = "i=0; while true 2>/dev/null > /dev/shm/sem.mp-planted$i; do i=$((i+1)); done"
    with mount_namespace([*shm_steps("4m,nr_inodes=64"), plant]) as namespace:
        done = run([sys.executable, "-m", "pqd", "once", "--json"], namespace.wrap, timeout=90)
    (seen,) = json.loads(done.stdout)
    assert done.returncode == 1, done.stderr[-2000:]
    assert seen["reason"] == "spawn_failed" and seen["cause"] == "shm_full", seen
    assert seen["cause_detail"].startswith(
        "/dev/shm has no free inode: 63 entries use all 64 of its nr_inodes, "
        "4.0 MiB of 4.0 MiB still free"
    ), seen["cause_detail"]
    # No entry fits: nothing of its space is available, so PqdSharedMemoryLow sees it too.
    assert seen["headroom"]["shm_objects"] == 63
    assert seen["headroom"]["shm_available_bytes"] == 0
    assert seen["headroom"]["shm_size_bytes"] == 4 << 20


THREE_PROBES = "".join(
    f'[probes.p{i}]\nstart_method = "{method}"\ninterval = "1s"\njob_pause = "0s"\n'
    for i, method in enumerate(("forkserver", "spawn", "forkserver"))
)


def test_probes_cycling_side_by_side_do_not_count_each_other_s_semaphores(tmp_path: Path) -> None:
    # Three runners share one /dev/shm; a cycle ending while another's pool is up sees that
    # pool's semaphores as new. They are mapped by live processes, so none is a leak.
    pqd_cmd = [sys.executable, "-m", "pqd"]
    seen: dict[str, float] = {}
    with (
        private_shm("4m") as namespace,
        running_pqd(
            tmp_path,
            THREE_PROBES,
            command=command(pqd_cmd, namespace.wrap),
            env=environment(namespace.wrap),
        ) as pqd,
    ):

        def enough() -> bool:
            text = pqd.scrape()
            for probe in ("p0", "p1", "p2"):
                leaked = sample(text, "pqd_last_cycle_leaked_shm_objects", probe=probe) or 0
                seen[probe] = max(seen.get(probe, 0), leaked)
            return all((sample(text, "pqd_cycles_total", probe=p) or 0) >= 8 for p in seen)

        wait_until(enough, "8 cycles of each probe", 120)
        entries = sorted(os.listdir(namespace.shm_dir(pqd.proc.pid)))
    assert seen == {"p0": 0, "p1": 0, "p2": 0}
    # Between cycles, nothing of theirs is left either (a cycle may be running now).
    assert len([e for e in entries if e.startswith("sem.mp-")]) <= 3 * 6, entries
