"""pqd's unit under a real systemd 252: install, start, status, every start method under the
shipped hardening, a bad config at start, stop in the middle of a cycle, SIGKILL, and the
exposure score of the running unit."""

from __future__ import annotations

import re
import time

import pytest

from pqd.results import FAILURE_REASONS
from tests.helpers.pqd_process import alive, sample
from tests.helpers.waiting import wait_until
from tests.integration.systemd.service import (
    CONFIG,
    SHIPPED_CONFIG,
    SHIPPED_UNIT,
    STOP_TIMEOUT_SECONDS,
    UNIT,
    UNIT_FILE,
    Service,
    host_processes,
)

# The first test of a session builds the root file system (when not cached) and boots it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ONE_PROBE = '[probes.default]\ninterval = "1s"\n'
#: A cycle that sits in its first job for a long time: stuck, for stop and kill.
STUCK = """
[probes.default]
rounds = 1
job_pause = "20s"
timeout = "2m"
interval = "5m"
"""
#: Runner, resource tracker, forkserver, Manager and 4 pool workers: a cycle under way.
BUSY_PROCESSES = 8
JOB_PAUSE_SECONDS = 20.0


def test_make_install_does_what_readme_says(service: Service) -> None:
    machine = service.machine
    readme = (SHIPPED_UNIT.parents[1] / "README.md").read_text(encoding="utf-8")
    assert "`sudo make install`" in readme and "PIP_ARGS=" in readme
    link = machine.run("readlink", "/usr/local/bin/pqd").stdout.strip()
    assert link == "/opt/pqd/bin/pqd", link
    assert machine.run("cat", UNIT_FILE).stdout == SHIPPED_UNIT.read_text(encoding="utf-8")
    assert machine.run("pqd", "--version").stdout.startswith("pqd ")
    # README: `systemctl enable --now pqd`, and `systemctl reload pqd` after editing the config;
    # `make install` again keeps an edited /etc/pqd/pqd.toml.
    service.systemctl("enable", "--now", UNIT)
    try:
        assert service.systemctl("is-enabled", UNIT).strip() == "enabled"
        service.wait_serving()
        edited = SHIPPED_CONFIG.read_text(encoding="utf-8") + "\n# edited by the operator\n"
        service.configure(edited)
        machine.install_pqd()
        assert machine.run("cat", CONFIG).stdout == edited, "make install replaced the config"
        service.systemctl("reload", UNIT)
        service.wait_value("pqd_config_last_reload_successful", lambda v: v == 1, "to be 1")
    finally:
        service.systemctl("disable", UNIT)


def test_start_returns_after_ready_and_the_port_answers(service: Service) -> None:
    service.configure(ONE_PROBE)
    service.start()
    # No retry: the port answers the moment `systemctl start` has returned.
    status, _ = service.machine.http("/-/ready")
    assert status == 200, "/-/ready did not answer right after systemctl start returned"
    props = service.show(
        "Type", "ActiveState", "SubState", "StatusText", "ExecMainStartTimestampMonotonic"
    )
    props |= service.show("ActiveEnterTimestampMonotonic")
    assert (props["Type"], props["ActiveState"], props["SubState"]) == (
        "notify",
        "active",
        "running",
    )
    # pqd sends STATUS= in the same datagram as READY=1: systemd had it before start returned.
    assert props["StatusText"].startswith("default: "), props
    started = int(props["ExecMainStartTimestampMonotonic"])
    assert int(props["ActiveEnterTimestampMonotonic"]) > started > 0, props


def test_status_shows_pqds_status_text(service: Service) -> None:
    service.configure(ONE_PROBE)
    service.start()
    service.wait_value("pqd_cycles_total", lambda v: v >= 1, "at least 1", probe="default")

    def status_after_a_cycle() -> str | None:
        text = service.systemctl("status", UNIT)
        return text if 'Status: "default: ok in ' in text else None

    text = wait_until(status_after_a_cycle, "systemctl status to show the cycle")
    line = next(line.strip() for line in text.splitlines() if "Status:" in line)
    assert line == f'Status: "{service.prop("StatusText")}"', line
    assert re.fullmatch(r'Status: "default: ok in [\d.]+s, 10 jobs, 0 leaked"', line), line


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_every_start_method_works_under_the_shipped_unit(service: Service, method: str) -> None:
    # The unit exactly as shipped: the installed file is the repo's and nothing overrides it.
    installed = service.machine.run("cat", UNIT_FILE).stdout
    assert installed == SHIPPED_UNIT.read_text(encoding="utf-8")
    assert service.show("DropInPaths", "FragmentPath") == {
        "DropInPaths": "",
        "FragmentPath": UNIT_FILE,
    }
    service.configure(f'[probes.m]\nstart_method = "{method}"\ninterval = "1s"\n')
    service.start()
    service.wait_value("pqd_cycles_total", lambda v: v >= 3, "at least 3", probe="m")
    text = service.scrape()
    info = {"probe": "m", "start_method": method, "containment": "cgroup"}
    assert sample(text, "pqd_probe_info", **info) == 1, text
    failures = {
        r: sample(text, "pqd_cycle_failures_total", probe="m", reason=r) for r in FAILURE_REASONS
    }
    assert set(failures.values()) == {0}, failures
    assert sample(text, "pqd_last_cycle_success", probe="m") == 1
    assert sample(text, "pqd_last_cycle_jobs_completed", probe="m") == 10


def test_a_bad_config_at_start_exits_78_and_is_not_restarted(service: Service) -> None:
    service.configure("[probes.default]\nworkers = 0\n")
    result = service.machine.run("systemctl", "start", UNIT, check=False)
    assert result.returncode != 0, "systemctl start succeeded with a bad config"
    props = service.show("ExecMainStatus", "Result", "ActiveState", "SubState", "NRestarts")
    # SubState "failed", not "auto-restart": no restart is pending (RestartPreventExitStatus=78).
    assert props == {
        "ExecMainStatus": "78",
        "Result": "exit-code",
        "ActiveState": "failed",
        "SubState": "failed",
        "NRestarts": "0",
    }, props
    lines = wait_until(service.lines, "pqd's line in the journal")
    assert lines == [
        "pqd: config error: probes.default.workers=0: must be an integer from 1 to 256"
    ], lines


def test_stop_in_a_stuck_cycle_stops_in_time_and_leaves_nothing(service: Service) -> None:
    service.configure(STUCK)
    # Enabled, so that systemd keeps the unit loaded once stopped, and its main process's exit
    # status with it (an unreferenced inactive unit is unloaded, and show then reads zeros).
    service.systemctl("enable", "--now", UNIT)
    service.wait_probe_busy("default", BUSY_PROCESSES)
    tree = host_processes(service.group_pids(recursive=True))
    stop_asked = service.machine.cursor()
    started = time.monotonic()
    service.systemctl("stop", UNIT)
    took = time.monotonic() - started
    # pqd did not wait for the job in progress, and systemd did not have to time it out.
    assert took < min(JOB_PAUSE_SECONDS, STOP_TIMEOUT_SECONDS), f"stop took {took:.1f}s"
    props = service.show("Result", "ExecMainCode", "ExecMainStatus", "ActiveState")
    assert props == {
        "Result": "success",
        "ExecMainCode": "1",  # CLD_EXITED
        "ExecMainStatus": "0",
        "ActiveState": "inactive",
    }, props
    assert not alive(tree), f"left running: {alive(tree)}"
    assert not service.group_pids(recursive=True), "processes left in the unit's cgroups"
    said = service.systemd_says(after=stop_asked)
    assert not [m for m in said if "Killing process" in m or "timed out" in m], said


@pytest.mark.parametrize("whom", ["all", "main"])
def test_sigkill_in_a_cycle_leaves_nothing_of_any_probe(service: Service, whom: str) -> None:
    service.configure(STUCK + STUCK.replace("default]", 'other]\nstart_method = "spawn"'))
    service.start()
    busy = service.wait_probe_busy("default", BUSY_PROCESSES)
    busy |= service.wait_probe_busy("other", BUSY_PROCESSES - 2)  # no forkserver under spawn
    trees = host_processes(busy)
    restarts, main = service.restarts(), service.main_pid()
    service.systemctl("kill", "-s", "KILL", f"--kill-whom={whom}", UNIT)
    wait_until(lambda: not alive(trees), "every process of the probes' trees to be gone", 30)
    # Killed by a signal: Restart=on-failure brings pqd back.
    wait_until(lambda: service.restarts() == restarts + 1, "systemd to restart pqd", 60)
    service.wait_serving()
    assert service.main_pid() not in (0, main)


def test_security_exposure_of_the_running_unit_is_at_most_2(service: Service) -> None:
    service.start()
    report = service.machine.run("systemd-analyze", "security", UNIT, "--no-pager").stdout
    match = re.search(r"Overall exposure level for pqd\.service:\s*([\d.]+)", report)
    assert match, report
    score = float(match.group(1))
    print(f"\nsystemd-analyze security {UNIT} (running): {score}")
    assert score <= 2.0, report
