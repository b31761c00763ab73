"""The watchdog under a real systemd: pqd withholds its ping when it is stopped or its scheduler
is wedged, systemd kills it within WatchdogSec (as shipped: 30 s), Restart=on-failure starts it
again, and the new pqd serves."""

from __future__ import annotations

import pytest

from tests.helpers.waiting import wait_until
from tests.integration.systemd.service import UNIT, WATCHDOG_SECONDS, Service

# Whichever test comes first in a session builds the root file system (when not cached).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ONE_PROBE = '[probes.default]\ninterval = "1s"\n'
#: systemd's timer fires at the last ping plus WatchdogSec, and the last ping came before the
#: fault; what it may add is its own event loop's latency.
LATENESS_SECONDS = 1.0


def seconds_between(service: Service, first: str, then: str, after: str) -> float:
    """Between systemd's journal entry containing ``first`` and the next containing ``then``
    (both on the journal's own monotonic clock)."""

    def entry(text: str, cursor: str) -> dict[str, object] | None:
        return next((e for e in service.entries(cursor) if text in str(e.get("MESSAGE"))), None)

    one = wait_until(lambda: entry(first, after), f"systemd to log {first!r}", 30)
    other = wait_until(
        lambda: entry(then, str(one["__CURSOR"])),
        f"systemd to log {then!r}",
        WATCHDOG_SECONDS + 30,
    )
    return (int(str(other["__MONOTONIC_TIMESTAMP"])) - int(str(one["__MONOTONIC_TIMESTAMP"]))) / 1e6


def assert_killed_by_the_watchdog_and_back(service: Service, fault: str, fault_logged: str) -> None:
    """Inject ``fault`` (a signal to pqd's main process, through systemctl), then: killed for the
    watchdog within WatchdogSec of it, restarted once, and a new pqd serving cycles."""
    service.wait_value("pqd_cycles_total", lambda v: v >= 1, "at least 1", probe="default")
    restarts, main = service.restarts(), service.main_pid()
    before = service.machine.cursor()
    service.systemctl("kill", "-s", fault, "--kill-whom=main", UNIT)
    took = seconds_between(service, fault_logged, "Watchdog timeout", before)
    assert took <= WATCHDOG_SECONDS + LATENESS_SECONDS, f"killed {took:.1f}s after the fault"
    service.wait_systemd_says("Failed with result 'watchdog'", after=before)
    wait_until(lambda: service.restarts() == restarts + 1, "systemd to restart pqd", 60)
    service.wait_serving()
    assert service.main_pid() not in (0, main)
    assert service.prop("ActiveState") == "active"
    service.wait_value(
        "pqd_cycles_total", lambda v: v >= 1, "a cycle of the new pqd", probe="default"
    )
    print(f"\nwatchdog: {fault} -> killed after {took:.1f}s (WatchdogSec={WATCHDOG_SECONDS:.0f}s)")


def test_a_stopped_pqd_is_killed_by_the_watchdog_and_restarted(service: Service) -> None:
    service.configure(ONE_PROBE)
    service.start()
    assert service.prop("WatchdogUSec") == f"{WATCHDOG_SECONDS:.0f}s"
    assert_killed_by_the_watchdog_and_back(service, "STOP", "Sent signal SIGSTOP")


def test_a_wedged_scheduler_is_killed_by_the_watchdog_and_restarted(service: Service) -> None:
    # pqd's own Python with a scheduler that hangs on SIGUSR1 (tests/helpers/wedge_harness.py):
    # the drop-in changes ExecStart= alone, every other directive is the shipped unit's.
    service.harness_exec_start("tests/helpers/wedge_harness.py")
    service.configure(ONE_PROBE)
    service.start()
    assert service.prop("DropInPaths").endswith("/test.conf")
    assert_killed_by_the_watchdog_and_back(service, "USR1", "Sent signal SIGUSR1")
