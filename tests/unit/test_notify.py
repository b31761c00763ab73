"""Notifier against real AF_UNIX datagram sockets standing in for systemd's notification socket."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pqd.notify import Notifier

# recv() waits at most this long for a datagram that should already be queued: on AF_UNIX the
# datagram is in the receiver's queue when sendto returns, so this only bounds a failing test.
RECV_TIMEOUT = 5.0


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket on a filesystem path, and the NOTIFY_SOCKET value for it."""
    path = tmp_path / "n.sock"
    # sockaddr_un holds 108 bytes; pytest's tmp_path stays well below for these test names.
    assert len(os.fsencode(path)) < 108
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(os.fsencode(path))
    server.settimeout(RECV_TIMEOUT)
    yield server, str(path)
    server.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound abstract-namespace datagram socket, and its "@name" NOTIFY_SOCKET value."""
    name = f"pqd-test-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(b"\0" + name.encode())
    server.settimeout(RECV_TIMEOUT)
    yield server, "@" + name
    server.close()


def nothing_queued(server: socket.socket) -> bool:
    """True when no datagram is waiting (checked without waiting: sends are synchronous)."""
    server.setblocking(False)
    try:
        server.recv(65536)
    except BlockingIOError:
        return True
    finally:
        server.settimeout(RECV_TIMEOUT)
    return False


@pytest.mark.parametrize("which", ["path_socket", "abstract_socket"])
def test_every_message_has_exact_bytes(which: str, request: pytest.FixtureRequest) -> None:
    server, address = request.getfixturevalue(which)
    n = Notifier.from_environ(
        {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert n.enabled
    assert n.watchdog_interval == 15.0

    n.ready()
    assert server.recv(4096) == b"READY=1"
    n.ready("serving on :10029")
    assert server.recv(4096) == b"READY=1\nSTATUS=serving on :10029"
    n.status("last cycle ok in 1.2s")
    assert server.recv(4096) == b"STATUS=last cycle ok in 1.2s"
    n.watchdog()
    assert server.recv(4096) == b"WATCHDOG=1"
    n.stopping()
    assert server.recv(4096) == b"STOPPING=1"
    n.close()


def test_reloading_carries_monotonic_usec(path_socket: tuple[socket.socket, str]) -> None:
    server, address = path_socket
    n = Notifier.from_environ({"NOTIFY_SOCKET": address})
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = server.recv(4096).split(b"\n")
    assert first == b"RELOADING=1"
    key, _, value = second.partition(b"=")
    assert key == b"MONOTONIC_USEC"
    assert before <= int(value) <= after
    n.close()


def test_status_is_one_line_and_cannot_inject_assignments(
    path_socket: tuple[socket.socket, str],
) -> None:
    server, address = path_socket
    n = Notifier.from_environ({"NOTIFY_SOCKET": address})
    n.status("first\nREADY=1\r\nthird\rfourth\0fifth")
    assert server.recv(4096) == b"STATUS=first READY=1 third fourth fifth"
    n.ready("a\nb")
    assert server.recv(4096) == b"READY=1\nSTATUS=a b"
    n.status("caf\u00e9 \udcff")  # a lone surrogate must not make the send fail
    assert server.recv(4096) == "STATUS=caf\u00e9 ?".encode()
    n.close()


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    n = Notifier.from_environ({"WATCHDOG_USEC": "1000000"})
    assert not n.enabled
    assert n.watchdog_interval is None
    # Each call returns normally and, having nowhere to send, reports nothing sent.
    n.ready("x")
    n.status("x")
    n.watchdog()
    n.reloading()
    n.stopping()
    n.close()
    assert n._send(["READY=1"]) is False


@pytest.mark.parametrize("value", ["", "relative/path.sock", "@", "vsock:2:1234"])
def test_unusable_notify_socket_values_disable_the_notifier(value: str) -> None:
    n = Notifier.from_environ({"NOTIFY_SOCKET": value})
    assert not n.enabled
    assert n._send(["READY=1"]) is False


@pytest.mark.parametrize(
    ("watchdog_usec", "watchdog_pid", "expected"),
    [
        ("2000000", None, 1.0),
        ("2000000", "self", 1.0),
        ("2000000", "other", None),
        ("2000000", "not-a-pid", None),
        (None, None, None),
        ("0", None, None),
        ("-5", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval_honours_usec_and_pid(
    path_socket: tuple[socket.socket, str],
    watchdog_usec: str | None,
    watchdog_pid: str | None,
    expected: float | None,
) -> None:
    server, address = path_socket
    environ = {"NOTIFY_SOCKET": address}
    if watchdog_usec is not None:
        environ["WATCHDOG_USEC"] = watchdog_usec
    if watchdog_pid == "self":
        environ["WATCHDOG_PID"] = str(os.getpid())
    elif watchdog_pid == "other":
        environ["WATCHDOG_PID"] = str(os.getpid() + 1)
    elif watchdog_pid is not None:
        environ["WATCHDOG_PID"] = watchdog_pid
    n = Notifier.from_environ(environ)
    assert n.watchdog_interval == expected
    n.watchdog()
    if expected is None:
        # A watchdog armed for another process (or not at all) is never pinged.
        assert nothing_queued(server)
    else:
        assert server.recv(4096) == b"WATCHDOG=1"
    n.close()


def test_vanished_socket_never_raises_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    n = Notifier.from_environ({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"})
    # Nothing listens yet: every call still returns normally.
    n.ready("x")
    n.status("x")
    n.watchdog()
    n.reloading()
    n.stopping()
    assert n._send(["STATUS=x"]) is False

    # systemd comes back (daemon-reexec): the next message gets through.
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(os.fsencode(path))
    server.settimeout(RECV_TIMEOUT)
    try:
        assert n._send(["STATUS=back"]) is True
        assert server.recv(4096) == b"STATUS=back"
    finally:
        server.close()
    path.unlink()
    assert n._send(["STATUS=gone again"]) is False
    n.close()


def test_close_is_idempotent_and_silences(path_socket: tuple[socket.socket, str]) -> None:
    server, address = path_socket
    n = Notifier.from_environ({"NOTIFY_SOCKET": address})
    n.status("before")
    assert server.recv(4096) == b"STATUS=before"
    n.close()
    n.close()
    n.status("after")
    assert nothing_queued(server)


def test_a_forked_copy_stays_silent(path_socket: tuple[socket.socket, str]) -> None:
    server, address = path_socket
    n = Notifier.from_environ({"NOTIFY_SOCKET": address})
    # What a child made with the "fork" start method sees: this object, created by another pid.
    n._pid = os.getpid() + 1
    n.ready()
    assert nothing_queued(server)
    n._pid = os.getpid()
    n.ready()
    assert server.recv(4096) == b"READY=1"
    n.close()
