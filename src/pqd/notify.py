"""systemd's sd_notify protocol (``Type=notify``), stdlib only.

The protocol is one AF_UNIX datagram of ``KEY=value`` lines sent to ``$NOTIFY_SOCKET``; see
sd_notify(3). Reimplemented here rather than depending on libsystemd bindings so the daemon has no
native dependency and behaves the same inside containers, where NOTIFY_SOCKET is usually unset.

Nothing in this module logs or raises on a failed send: notification is best effort, and the
daemon must keep probing even if systemd went away (or was never there).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Mapping

__all__ = ["Notifier"]

# A send that cannot complete within this bound is dropped: systemd drains its notification
# socket promptly, so a full buffer means systemd is stuck, and the caller (often the thread
# that pings the watchdog) must not hang with it.
_SEND_TIMEOUT_SECONDS = 1.0


def _socket_address(value: str) -> bytes | None:
    """Turn NOTIFY_SOCKET into a sockaddr_un path, or None if it is not one we can use.

    sd_notify(3) accepts an absolute path or ``@name`` for a Linux abstract socket (the leading
    ``@`` stands for a NUL byte). Anything else (a relative path, systemd >= 254's ``vsock:``
    form) is refused, as libsystemd refuses relative paths; pqd then simply does not notify.
    """
    if value.startswith("/"):
        # fsencode keeps bytes that were not valid UTF-8 in the environment intact.
        return os.fsencode(value)
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    return None


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings, or None when the watchdog is not armed for this pid.

    Pinging at half of WATCHDOG_USEC is what sd_watchdog_enabled(3) recommends. A WATCHDOG_PID
    naming another process means the variables were inherited and are not addressed to us.
    """
    raw_usec = environ.get("WATCHDOG_USEC")
    if raw_usec is None:
        return None
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    raw_pid = environ.get("WATCHDOG_PID")
    if raw_pid is not None:
        try:
            if int(raw_pid) != pid:
                return None
        except ValueError:
            return None
    return usec / 2 / 1e6


def _one_line(text: str) -> str:
    """Make text safe as the value of one ``KEY=value`` line of the datagram."""
    # A newline would start a new assignment (status text could otherwise inject READY=1 etc.);
    # a NUL would end the string early on the systemd side.
    for bad in ("\r\n", "\n", "\r", "\0"):
        text = text.replace(bad, " ")
    return text


class Notifier:
    """Sends sd_notify messages; every method is a no-op when systemd did not ask for them."""

    def __init__(self, address: bytes | None, watchdog_interval: float | None) -> None:
        self._address = address
        self.enabled: bool = address is not None
        # Without a notification socket no ping can arrive, so the watchdog is off as well.
        self.watchdog_interval: float | None = watchdog_interval if self.enabled else None
        # The service's main pid, captured here: a process forked later (the "fork" start method)
        # inherits this object but is not the main process and must stay silent.
        self._pid = os.getpid()
        self._sock: socket.socket | None = None
        self._closed = False
        # The daemon notifies from several threads (scheduler, HTTP reload, signal handling).
        self._lock = threading.Lock()

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Notifier:
        """Build a notifier from NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID.

        The mapping is only read; NOTIFY_SOCKET is not removed from it, so callers that start
        other programs should decide themselves whether to pass it on.
        """
        raw = environ.get("NOTIFY_SOCKET", "")
        address = _socket_address(raw) if raw else None
        return cls(address, _watchdog_interval(environ, os.getpid()))

    def ready(self, status: str | None = None) -> None:
        """Tell systemd start-up (or a reload) finished; optionally set the status line with it."""
        lines = ["READY=1"]
        if status is not None:
            lines.append("STATUS=" + _one_line(status))
        self._send(lines)

    def status(self, text: str) -> None:
        """Set the free-form status shown by ``systemctl status``."""
        self._send(["STATUS=" + _one_line(text)])

    def watchdog(self) -> None:
        """Ping the watchdog; does nothing unless the watchdog is armed for this process."""
        if self.watchdog_interval is None:
            return
        self._send(["WATCHDOG=1"])

    def reloading(self) -> None:
        """Tell systemd a reload started; READY=1 must follow once it is done."""
        # systemd >= 253 ignores RELOADING=1 for Type=notify-reload without MONOTONIC_USEC,
        # which must be CLOCK_MONOTONIC in microseconds (time.monotonic's clock is not promised).
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(["RELOADING=1", f"MONOTONIC_USEC={usec}"])

    def stopping(self) -> None:
        """Tell systemd the service is shutting down."""
        self._send(["STOPPING=1"])

    def close(self) -> None:
        """Release the socket; later calls do nothing. Safe to call more than once."""
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _send(self, lines: list[str]) -> bool:
        """Send one datagram; True if it was handed to the kernel, False otherwise. Never raises."""
        if self._address is None or os.getpid() != self._pid:
            return False
        # Status text may carry lone surrogates (e.g. an undecodable file name); replacing them
        # beats raising or dropping the whole message.
        payload = "\n".join(lines).encode("utf-8", "replace")
        with self._lock:
            if self._closed:
                return False
            try:
                if self._sock is None:
                    # Opened lazily so a notifier that is never used costs no descriptor.
                    # CLOEXEC keeps the descriptor out of anything the daemon execs.
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    sock.settimeout(_SEND_TIMEOUT_SECONDS)
                    self._sock = sock
                self._sock.sendto(payload, self._address)
            except OSError:
                # Socket gone, permission denied, EAGAIN...: drop this message and open a fresh
                # socket next time, in case systemd was restarted (daemon-reexec) meanwhile.
                if self._sock is not None:
                    self._sock.close()
                    self._sock = None
                return False
            return True
