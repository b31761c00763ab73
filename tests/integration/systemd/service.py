"""The fixtures of the tests under a real systemd, and `Service`, pqd's unit in the container as a
test sees it: systemctl, journalctl, HTTP, and the host's view of the unit's cgroups.

``machine`` (one per session) is the booted container with pqd installed by `make install`;
``service`` (one per test) starts from the unit exactly as installed, no drop-in, and the
shipped config, and at the end stops pqd, checks the unit's journal (every line pqd wrote is one
logfmt event, no traceback anywhere) and puts the unit back as installed.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers.launcher import logfmt
from tests.helpers.pqd_process import sample
from tests.helpers.waiting import wait_until
from tests.integration.systemd import rootfs
from tests.integration.systemd.machine import SOURCE, Machine, booted

UNIT = "pqd.service"
UNIT_FILE = "/etc/systemd/system/pqd.service"
CONFIG = "/etc/pqd/pqd.toml"
DROP_IN = "/etc/systemd/system/pqd.service.d/test.conf"
SHIPPED_UNIT = rootfs.REPO / "systemd/pqd.service"
SHIPPED_CONFIG = rootfs.REPO / "systemd/pqd.toml"
#: The unit's WatchdogSec and TimeoutStopSec, as shipped.
WATCHDOG_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 30.0
LOGFMT_KEYS = ("ts", "level", "logger", "msg")
#: How the command line says it refuses its arguments or config file (pqd.cli), in one line.
REFUSALS = ("pqd: config error: ", "pqd: error: ")
PYTHON = "/opt/pqd/bin/python"  # make install's virtualenv


def message(entry: dict[str, object]) -> str:
    """An entry's MESSAGE; journald gives bytes that are not UTF-8 as a list of numbers."""
    value = entry.get("MESSAGE", "")
    if isinstance(value, list):
        return bytes(value).decode(errors="replace")
    return str(value)


def is_pqds(entry: dict[str, object]) -> bool:
    """Written by the service's processes (stdout/stderr), not by systemd about the unit."""
    return entry.get("_TRANSPORT") == "stdout"


class Service:
    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.cursor = machine.cursor()

    # -- systemctl -----

    def systemctl(self, *args: str, check: bool = True) -> str:
        return self.machine.run("systemctl", "--no-pager", *args, check=check).stdout

    def show(self, *properties: str) -> dict[str, str]:
        text = self.systemctl("show", UNIT, "-p", ",".join(properties))
        return dict(line.partition("=")[::2] for line in text.splitlines())

    def prop(self, name: str) -> str:
        return self.show(name)[name]

    def start(self) -> None:
        self.systemctl("start", UNIT)

    def configure(self, text: str) -> None:
        self.machine.write(CONFIG, text)

    def drop_in(self, service_lines: str) -> None:
        """A drop-in ``[Service]`` section for this test; removed again by ``reset``."""
        self.machine.write(DROP_IN, "[Service]\n" + service_lines)
        self.systemctl("daemon-reload")

    def harness_exec_start(self, harness: str, *, env: dict[str, str] | None = None) -> None:
        """A drop-in that changes only ExecStart=: ``harness`` (a path below the checkout's
        copy, or ``-m module``) run by pqd's own Python with the unit's usual arguments, after
        ``env`` (given through env(1), so that ExecStart= stays the one directive changed)."""
        prefix = ["/usr/bin/env", f"PYTHONPATH={SOURCE}"]
        prefix += [f"{k}={v}" for k, v in (env or {}).items()]
        target = harness.split() if harness.startswith("-m ") else [f"{SOURCE}/{harness}"]
        command = [*prefix, PYTHON, *target, "run", "--config", CONFIG]
        self.drop_in("ExecStart=\nExecStart=" + shlex.join(command) + "\n")

    def main_pid(self) -> int:
        """pqd's main pid as the container sees it (0 when not running)."""
        return int(self.prop("MainPID"))

    def restarts(self) -> int:
        return int(self.prop("NRestarts"))

    # -- HTTP -----

    def scrape(self) -> str:
        status, body = self.machine.http("/metrics")
        assert status == 200, f"/metrics answered {status}"
        return body

    def value(self, name: str, **labels: str) -> float | None:
        status, body = self.machine.http("/metrics")
        return sample(body, name, **labels) if status == 200 else None

    def wait_value(
        self,
        name: str,
        holds: Callable[[float], bool],
        what: str,
        seconds: float = 60.0,
        **labels: str,
    ) -> float:
        def attempt() -> list[float] | None:  # a list: a value of 0 is an answer too
            value = self.value(name, **labels)
            return [value] if value is not None and holds(value) else None

        return wait_until(attempt, f"{name}{labels} {what}", seconds)[0]

    def wait_serving(self, seconds: float = 60.0) -> None:
        wait_until(lambda: self.machine.http("/-/ready")[0] == 200, "/-/ready to answer", seconds)

    # -- journal -----

    def entries(self, after: str | None = None) -> list[dict[str, object]]:
        """The unit's journal entries (systemd's about it and its processes' own) since the test
        began, or since the cursor ``after``."""
        return self.machine.journal("-u", UNIT, "--after-cursor", after or self.cursor)

    def events(self, after: str | None = None) -> list[dict[str, str]]:
        """pqd's log lines since the test began (or ``after``), each parsed as logfmt."""
        return [logfmt(message(e)) for e in self.entries(after) if is_pqds(e)]

    def systemd_says(self, after: str | None = None) -> list[str]:
        return [message(e) for e in self.entries(after) if not is_pqds(e)]

    def wait_event(
        self,
        holds: Callable[[dict[str, str]], bool],
        what: str,
        seconds: float = 60.0,
        after: str | None = None,
    ) -> dict[str, str]:
        def attempt() -> dict[str, str] | None:
            return next((e for e in self.events(after) if holds(e)), None)

        return wait_until(attempt, what, seconds)

    def wait_systemd_says(self, text: str, seconds: float = 60.0, after: str | None = None) -> str:
        def attempt() -> str | None:
            return next((m for m in self.systemd_says(after) if text in m), None)

        return wait_until(attempt, f"systemd to log {text!r}", seconds)

    def lines(self, after: str | None = None) -> list[str]:
        """What pqd's processes wrote since the test began (or ``after``), line by line."""
        return [message(e) for e in self.entries(after) if is_pqds(e)]

    def check_journal(self) -> None:
        """Every line pqd's processes wrote is one logfmt event, or the one line of the command
        line's refusal (before any config, and so any log format, is known); no traceback."""
        entries = self.entries()
        tracebacks = [message(e) for e in entries if "Traceback" in message(e)]
        assert not tracebacks, f"a traceback reached the journal: {tracebacks}"
        for line in self.lines():
            if line.startswith(REFUSALS):
                continue
            fields = logfmt(line)
            assert all(fields.get(k) for k in LOGFMT_KEYS), f"not logfmt: {line!r}"

    # -- the unit's cgroups, from the host -----

    def group(self, probe: str | None = None) -> Path:
        """The host directory of the unit's cgroup, or of one probe's below it."""
        path = f"/system.slice/{UNIT}" + (f"/probe-{probe}" if probe else "")
        return self.machine.host_cgroup(path)

    def group_pids(self, probe: str | None = None, *, recursive: bool = False) -> set[int]:
        """Host pids in the unit's cgroup (or a probe's), and with ``recursive`` in all below."""
        top = self.group(probe)
        groups = [top, *(p for p in top.rglob("*") if p.is_dir())] if recursive else [top]
        pids: set[int] = set()
        for group in groups:
            with contextlib.suppress(FileNotFoundError):
                pids |= {int(x) for x in (group / "cgroup.procs").read_text().split()}
        return pids

    def wait_probe_busy(self, probe: str, processes: int, seconds: float = 60.0) -> set[int]:
        """Wait until the probe's cgroup holds at least ``processes`` processes (a cycle with its
        Manager and pool is under way); return their host pids."""

        def attempt() -> set[int] | None:
            pids = self.group_pids(probe)
            return pids if len(pids) >= processes else None

        return wait_until(attempt, f"{processes} processes in probe {probe}'s cgroup", seconds)

    # -- set-up and tear-down -----

    def reset(self) -> None:
        """pqd stopped and disabled, the unit as installed (no drop-in), the shipped config,
        counters reset."""
        self.systemctl("disable", "--now", UNIT, check=False)
        if self.prop("ActiveState") not in ("inactive", "failed"):
            self.systemctl("kill", "-s", "KILL", UNIT, check=False)
            wait_until(
                lambda: self.prop("ActiveState") in ("inactive", "failed"), "pqd to be stopped"
            )
        self.machine.run("rm", "-rf", os.path.dirname(DROP_IN))
        self.systemctl("daemon-reload")
        self.systemctl("reset-failed", UNIT, check=False)
        self.configure(SHIPPED_CONFIG.read_text(encoding="utf-8"))


def host_processes(pids: set[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            found.append(psutil.Process(pid))
    return found


@pytest.fixture(scope="session")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    with booted(tmp_path_factory.mktemp("systemd")) as booted_machine:
        yield booted_machine


@pytest.fixture
def service(machine: Machine) -> Iterator[Service]:
    unit = Service(machine)
    unit.reset()
    unit.cursor = machine.cursor()
    started = time.monotonic()
    try:
        yield unit
    finally:
        try:
            unit.systemctl("stop", UNIT, check=False)
            unit.check_journal()
        finally:
            unit.reset()
            print(f"\n{UNIT} test took {time.monotonic() - started:.1f}s")
