"""Delegate=yes under a real systemd, seen from the host: each probe's runner and its whole tree
in a cgroup of its own below the unit's, a job's setsid() grandchild that escaped its session
still in that cgroup, counted as a leak and killed, and a cycle's CPU read from the cgroup (the
forkserver's workers' CPU included).

The probes' jobs come from tests/helpers/fault_jobs.py through the fault harness, the drop-in
changing ExecStart= alone: every other directive is the shipped unit's."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from tests.helpers.fault_jobs import BURN_ENV, SLEEP_ENV
from tests.helpers.fault_runner import PRODUCER_ENV
from tests.helpers.pqd_process import sample
from tests.helpers.waiting import wait_until
from tests.integration.systemd.service import UNIT, Service, host_processes

# Whichever test comes first in a session builds the root file system (when not cached).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

HARNESS = "tests/helpers/fault_harness.py"
BURN_SECONDS = 0.2
#: Producer jobs per cycle: one a round.
ROUNDS = 5


def cgroup_of(pid: int) -> str:
    """The process's cgroup v2 path as the host names it."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise AssertionError(f"process {pid} is in no cgroup v2 group")


def sleepers(marker: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if process.info["cmdline"] == ["sleep", marker]:
            found.append(process)
    return found


def test_each_probe_has_its_own_cgroup_below_the_unit(service: Service) -> None:
    probes = ("a", "b")
    service.configure(
        "".join(f'[probes.{p}]\ninterval = "1s"\njob_pause = "200ms"\n' for p in probes)
    )
    service.start()
    unit = service.group()
    main = service.machine.host_pid(service.main_pid())
    assert str(unit).endswith(f"/system.slice/{UNIT}"), unit
    for probe in probes:
        info = service.value("pqd_probe_info", probe=probe, containment="cgroup")
        assert info == 1, f"probe {probe} is not contained by a cgroup"
        group = service.group(probe)
        assert group.parent == unit, group
        # Mid-cycle, every process of the probe's tree is in its cgroup: the tree listed
        # first, then the group, so that only a process that exited in between is missing.
        runner = next(
            p for p in host_processes(service.wait_probe_busy(probe, 6)) if p.ppid() == main
        )
        tree = {runner.pid, *(c.pid for c in runner.children(recursive=True))}
        in_group = service.group_pids(probe)
        assert len(tree) >= 6 and tree - dead(tree) <= in_group, (tree, in_group)
    assert cgroup_of(main).endswith(f"/system.slice/{UNIT}"), cgroup_of(main)


def dead(pids: set[int]) -> set[int]:
    """Those of ``pids`` that exited since they were listed (a cycle's end reaps its pool)."""
    return {pid for pid in pids if not psutil.pid_exists(pid)}


def test_an_escaped_setsid_grandchild_is_a_leak_and_killed(service: Service) -> None:
    marker = f"{4000 + os.getpid() % 1000}.{os.getpid()}"  # `sleep <marker>`: only ours
    env = {PRODUCER_ENV: "setsid_leaking_producer", SLEEP_ENV: marker}
    service.harness_exec_start(HARNESS, env=env)
    service.configure('[probes.leaky]\ninterval = "1s"\njob_pause = "200ms"\n')
    service.start()
    (child, *_) = wait_until(lambda: sleepers(marker), "a job's setsid() grandchild", 60)
    main = service.machine.host_pid(service.main_pid())
    # It left its session and its parent, not its probe's cgroup.
    assert os.getsid(child.pid) not in (os.getsid(main), os.getsid(child.ppid())), child
    assert cgroup_of(child.pid) == cgroup_of(next(iter(service.group_pids("leaky")))), child
    assert cgroup_of(child.pid).endswith(f"/{UNIT}/probe-leaky")
    event = service.wait_event(
        lambda e: e.get("msg") == "cycle failed" and e.get("reason") == "leak", "a leaky cycle"
    )
    assert event["leaked"] == "1" and "1 process(es) left behind" in event["detail"], event
    wait_until(lambda: not child.is_running(), "the leaked grandchild to be killed")
    assert service.value("pqd_last_cycle_leaked_processes", probe="leaky") == 1
    assert service.prop("ActiveState") == "active"


def test_a_cycles_cpu_is_read_from_the_probes_cgroup(service: Service) -> None:
    # Forkserver: the pool's workers are the forkserver's children, not the runner's, so only
    # the cgroup sees their CPU (a runner counting its reaped children would miss it).
    env = {PRODUCER_ENV: "burning_producer", BURN_ENV: str(BURN_SECONDS)}
    service.harness_exec_start(HARNESS, env=env)
    service.configure(f'[probes.burn]\ninterval = "1s"\nrounds = {ROUNDS}\n')
    service.start()
    service.wait_value("pqd_cycles_total", lambda v: v >= 3, "at least 3", probe="burn")
    text = service.scrape()
    group = service.group("burn")
    usage = next(
        int(line.split()[1])
        for line in (group / "cpu.stat").read_text().splitlines()
        if line.startswith("usage_usec ")
    )
    cycles = sample(text, "pqd_cycles_total", probe="burn")
    total = sample(text, "pqd_cycle_cpu_seconds_total", probe="burn")
    last = sample(text, "pqd_last_cycle_cpu_seconds", probe="burn")
    assert cycles and total is not None and last is not None, text
    burned = ROUNDS * BURN_SECONDS  # the producers' own CPU, a lower bound of a cycle's
    assert last >= burned, f"the last cycle's CPU {last:.3f}s is below its jobs' {burned:.3f}s"
    assert total >= cycles * burned, (total, cycles)
    # Every cycle's CPU is the cgroup's, read later from the host: never more than its total.
    assert total <= usage / 1e6, f"{total:.3f}s counted, the probe's cgroup used {usage / 1e6}s"
    print(f"\ncycle CPU: last {last:.3f}s, {total:.3f}s in {cycles:.0f} cycles; group {usage}us")
