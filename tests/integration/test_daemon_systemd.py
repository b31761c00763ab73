"""The test plays systemd: it binds the notify socket, starts pqd with NOTIFY_SOCKET and
WATCHDOG_USEC, and reads what pqd tells it."""

from __future__ import annotations

import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.pqd_process import PqdProcess, sample
from tests.helpers.waiting import wait_until

WEDGE = Path(__file__).resolve().parents[1] / "helpers/wedge_harness.py"
CONFIG = '[probes.default]\ninterval = "1s"\n'


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []

    def pump(self, seconds: float) -> None:
        """Collect datagrams for up to ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def drain(self) -> list[str]:
        """Take what is queued now, without waiting, and forget everything collected so far."""
        self.sock.setblocking(False)
        taken = [m for _, m in self.messages]
        try:
            while True:
                taken.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)
        self.messages = []
        return taken

    def wait_for(self, text: str, seconds: float = 30.0) -> float:
        """Wait until a datagram containing ``text`` arrives; return when it did."""
        deadline = time.monotonic() + seconds
        while True:
            for at, message in self.messages:
                if text in message.splitlines() or text in message:
                    return at
            if time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} within {seconds}s: {self.messages}")
            self.pump(0.2)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    try:
        yield sock
    finally:
        sock.close()


def start(tmp_path: Path, notify: NotifySocket, *, command: list[str] | None = None) -> PqdProcess:
    env = {"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    return PqdProcess(tmp_path, CONFIG, env=env, command=command).wait_ready()


def test_ready_status_watchdog_and_stopping(tmp_path: Path, notify: NotifySocket) -> None:
    pqd = start(tmp_path, notify)
    try:
        ready = notify.wait_for("READY=1")
        status = notify.wait_for("STATUS=default: ok")
        notify.pump(2.5)
        pings = [at for at, m in notify.messages if m == "WATCHDOG=1"]
        pqd.signal(signal.SIGTERM)
        stopping = notify.wait_for("STOPPING=1")
        code = pqd.proc.wait(10)
    finally:
        pqd.stop()

    assert code == 0
    assert ready <= status <= stopping
    assert len(pings) >= 3  # every 0.5 s with WATCHDOG_USEC=1 s
    ready_message = next(m for _, m in notify.messages if "READY=1" in m)
    assert "STATUS=" in ready_message


def test_watchdog_pings_stop_when_the_scheduler_hangs(tmp_path: Path, notify: NotifySocket) -> None:
    pqd = start(tmp_path, notify, command=[sys.executable, str(WEDGE)])
    try:
        notify.wait_for("WATCHDOG=1")
        pqd.signal(signal.SIGUSR1)  # the wrapper then wedges APScheduler's dispatch loop
        wedged_at = time.monotonic()
        wait_until(
            lambda: pqd.log_events("not progressing: withholding the systemd watchdog ping"),
            "pqd to notice the wedged scheduler",
        )
        noticed_at = time.monotonic()
        notify.drain()  # pings sent before pqd noticed
        notify.pump(3.0)  # six ping periods
        late_pings = [m for _, m in notify.messages if m == "WATCHDOG=1"]
        still_serving = pqd.get("/metrics")[0]
    finally:
        pqd.stop()

    assert late_pings == []
    assert noticed_at - wedged_at < 15
    assert still_serving == 200  # the HTTP side is not what hung


def test_healthy_answers_503_with_the_reason_when_the_scheduler_hangs(tmp_path: Path) -> None:
    """Outside systemd (no watchdog, no heartbeat job) /-/healthy is what a Kubernetes liveness
    probe or Docker HEALTHCHECK sees: it must fail when probes stop being dispatched."""
    pqd = PqdProcess(tmp_path, CONFIG, command=[sys.executable, str(WEDGE)]).wait_ready()
    try:
        assert pqd.get("/-/healthy") == (200, "Healthy\n")
        pqd.signal(signal.SIGUSR1)  # the wrapper then wedges APScheduler's dispatch loop
        status, body = wait_until(
            lambda: (got := pqd.get("/-/healthy"))[0] == 503 and got,
            "/-/healthy to report the hang",
            seconds=40,
        )
        still_serving = pqd.get("/metrics")[0]
    finally:
        pqd.stop()

    assert status == 503
    assert body.startswith("Not healthy: probe default: not dispatched for")
    assert still_serving == 200


def test_probes_added_by_reload_cannot_starve_the_watchdog_heartbeat(
    tmp_path: Path, notify: NotifySocket
) -> None:
    """The scheduler's threads were sized to the probes at start-up: twelve long-running probes
    added by a reload took every thread, the heartbeat job stopped and so did the pings."""
    pqd = start(tmp_path, notify)
    added = "".join(
        f'[probes.long{i}]\nstart_method = "fork"\nworkers = 1\njob_pause = "1s"\ninterval = "1s"\n'
        for i in range(12)
    )
    try:
        notify.wait_for("WATCHDOG=1")
        pqd.config_path.write_text(CONFIG + added)
        pqd.signal(signal.SIGHUP)

        def running() -> int:
            text = pqd.scrape()
            return sum(
                (sample(text, "pqd_workers_live", probe=f"long{i}") or 0) > 0 for i in range(12)
            )

        wait_until(lambda: running() == 12, "all twelve added probes to be mid-cycle", seconds=60)
        notify.drain()
        notify.pump(8.0)  # longer than the 5 s without a heartbeat that stops the pings
        pings = [at for at, m in notify.messages if m == "WATCHDOG=1"]
        still_running = running()
    finally:
        pqd.stop()

    assert still_running == 12  # the window fell inside the cycles (10 s each)
    assert len(pings) >= 12  # every 0.5 s with WATCHDOG_USEC=1 s
