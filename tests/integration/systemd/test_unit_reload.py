"""`systemctl reload pqd` under a real systemd (ExecReload= sends SIGHUP): a good file is applied
by the same process; a bad or hostile one is refused with one line in the journal and the old
config keeps running."""

from __future__ import annotations

import pytest

from tests.helpers.waiting import wait_until
from tests.integration.systemd.service import UNIT, Service

# Whichever test comes first in a session builds the root file system (when not cached).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

OLD = '[probes.old]\ninterval = "1s"\n'
NEW = OLD + '\n[probes.new]\ninterval = "1s"\nstart_method = "spawn"\n'
REFUSED = "config reload refused; keeping the running config"
#: Deep enough to pass CPython's recursion limit (1000) in anything that walks the parsed
#: document recursively; tomllib itself parses both forms without complaint.
DEPTH = 1000
HOSTILE = {
    "deep-dotted-key": OLD + ".".join(["k"] * DEPTH) + " = 1\n",
    "deep-table-header": OLD + "[" + ".".join(["k"] * DEPTH) + "]\nx = 1\n",
}


def reload(service: Service, text: str) -> tuple[int, str]:
    """Write ``text`` as the config and `systemctl reload pqd`; the main pid before it and the
    journal's cursor at the moment of the reload."""
    main = service.main_pid()
    service.configure(text)
    cursor = service.machine.cursor()
    service.systemctl("reload", UNIT)
    return main, cursor


def cycles(service: Service, probe: str) -> float:
    return service.wait_value("pqd_cycles_total", lambda v: v >= 1, "at least 1", probe=probe)


def assert_refused_and_still_running_the_old_config(
    service: Service, text: str, names: str
) -> None:
    service.configure(OLD)
    service.start()
    before = cycles(service, "old")
    main, cursor = reload(service, text)

    def refused_or_gone() -> dict[str, str] | None:
        if service.main_pid() != main:  # no point waiting for the refusal of a pqd gone
            return {"gone": "\n".join(service.lines(after=cursor)[-5:])}
        return next((e for e in service.events(after=cursor) if e.get("msg") == REFUSED), None)

    event = wait_until(refused_or_gone, "the refusal", 60)
    assert "gone" not in event, f"pqd exited on the reload; its last lines:\n{event['gone']}"
    assert event.get("err") and names in event["err"], event
    service.wait_value("pqd_config_last_reload_successful", lambda v: v == 0, "to be 0")
    # Still the same process, still cycling the old probe; the one line and nothing else.
    service.wait_value("pqd_cycles_total", lambda v: v > before, f"above {before}", probe="old")
    assert (service.main_pid(), service.prop("ActiveState")) == (main, "active")
    errors = [e for e in service.events(after=cursor) if e.get("level") not in ("info", "debug")]
    assert errors == [event], errors


def test_reload_with_a_good_file_applies_it_in_the_same_process(service: Service) -> None:
    service.configure(OLD)
    service.start()
    cycles(service, "old")
    main, cursor = reload(service, NEW)
    event = service.wait_event(
        lambda e: e.get("msg") == "config reloaded", "the reload", after=cursor
    )
    assert event["probes"] == "old,new", event
    service.wait_value("pqd_config_last_reload_successful", lambda v: v == 1, "to be 1")
    cycles(service, "new")
    info = service.value("pqd_probe_info", probe="new", start_method="spawn", containment="cgroup")
    assert info == 1
    assert (service.main_pid(), service.restarts()) == (main, 0)
    # systemd went through "reloading" and is back at active (RELOADING=1, then READY=1).
    wait_until(lambda: service.prop("SubState") == "running", "the unit to be running again")
    assert service.prop("ActiveState") == "active"


def test_reload_with_a_bad_file_keeps_the_old_config(service: Service) -> None:
    assert_refused_and_still_running_the_old_config(
        service, OLD + "\n[probes.bad]\nworkers = 0\n", "probes.bad.workers=0"
    )


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_reload_with_a_hostile_file_keeps_the_old_config(service: Service, kind: str) -> None:
    # What the refusal says of such a file is the config loader's to word; that there is one.
    assert_refused_and_still_running_the_old_config(service, HOSTILE[kind], "")
