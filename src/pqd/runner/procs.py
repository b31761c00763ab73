"""The processes of a host as /proc shows them: parent links, states, CPU, peak RSS, command
lines, and the means to kill and reap them (docs/design.md §1a).

Standard library only: the runner imports this, and so does every child the forkserver forks
(it is in the forkserver's preload).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from typing import Final

_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


#: What reading /proc/PID/stat raises for a process that is gone.
_GONE_ERRNOS = (errno.ENOENT, errno.ESRCH)


def _stat_fields(pid: int, *, strict: bool = False) -> list[bytes] | None:
    """The fields of /proc/PID/stat after "(comm)": comm may hold spaces and parentheses.
    None if the process is gone, or the file could not be read at all; ``strict`` raises the
    second (EMFILE under an open-files limit is no evidence of a death)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        try:
            data = os.read(fd, 1024)
        finally:
            os.close(fd)
    except OSError as exc:
        if strict and exc.errno not in _GONE_ERRNOS:
            raise
        return None
    return data[data.rfind(b")") + 2 :].split()


def parent_pids() -> dict[int, int]:
    """pid -> parent pid of every process on the host, from one pass over /proc/*/stat."""
    parents: dict[int, int] = {}
    try:
        entries = [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:  # e.g. out of file descriptors
        return parents
    for pid in entries:
        fields = _stat_fields(pid)
        if fields is not None and len(fields) > 1:
            parents[pid] = int(fields[1])
    return parents


def descendants(root: int) -> list[int]:
    """Every process below ``root``, found by parent links (one /proc scan)."""
    by_parent: dict[int, list[int]] = {}
    for pid, ppid in parent_pids().items():
        by_parent.setdefault(ppid, []).append(pid)
    found: list[int] = []
    stack = [root]
    while stack:
        for child in by_parent.get(stack.pop(), ()):
            found.append(child)
            stack.append(child)
    return found


@dataclass(frozen=True)
class ProcessRef:
    """One process, told apart from a later one that reuses its pid by its start time."""

    pid: int
    started: int  # /proc/PID/stat starttime, in clock ticks since boot

    @classmethod
    def of(cls, pid: int) -> ProcessRef | None:
        fields = _stat_fields(pid)
        if fields is None or len(fields) < 20:
            return None
        return cls(pid, int(fields[19]))

    def _fields(self) -> list[bytes] | None:
        fields = _stat_fields(self.pid)
        if fields is None or len(fields) < 20 or int(fields[19]) != self.started:
            return None  # gone, or the pid now names another process
        return fields

    def state(self) -> str | None:
        fields = self._fields()
        return fields[0].decode() if fields else None

    def ppid(self) -> int | None:
        fields = self._fields()
        return int(fields[1]) if fields else None

    def kill(self) -> None:
        if self._fields() is not None:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)


def host_pid_count() -> int:
    """Processes on the host, as len(psutil.pids()) counts them on Linux."""
    try:
        return sum(1 for entry in os.scandir("/proc") if entry.name.isdigit())
    except OSError:
        return -1


def state(pid: int, *, strict: bool = False) -> str | None:
    """The one-letter /proc state (R, S, D, T, t, Z, ...), or None if the process is gone;
    ``strict``: an error other than its absence is raised, not read as gone."""
    fields = _stat_fields(pid, strict=strict)
    return fields[0].decode() if fields else None


def is_gone(pid: int) -> bool:
    return state(pid) in (None, "Z", "X")


def cpu_seconds(pid: int) -> float | None:
    """utime + stime + cutime + cstime: the process and every child it has reaped."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 15:
        return None
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / _CLOCK_TICKS


def peak_rss_bytes(pid: int) -> int | None:
    """VmHWM, the peak resident set size of one process."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def open_files(pid: int) -> int | None:
    """File descriptors the process holds now."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(4096)
    except OSError:
        return "?"
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    return text or f"[{state(pid) or 'gone'}]"


def kill_pids(pids: list[int]) -> None:
    signal_pids(pids, signal.SIGKILL)


def signal_pids(pids: list[int], signum: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)


def wait_gone(pids: list[int], seconds: float) -> list[int]:
    """Wait until each pid is gone or a zombie; return those still there."""
    deadline = time.monotonic() + seconds
    left = [p for p in pids if not is_gone(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.005)
        left = [p for p in left if not is_gone(p)]
    return left


def reap_children(keep: set[int] | frozenset[int] = frozenset()) -> int:
    """Reap exited children other than ``keep`` (whose owners reap them: Popen objects,
    multiprocessing). A subreaper collects other people's orphans; nobody else will."""
    reaped = 0
    for _ in range(10_000):  # bounded: each pass reaps one zombie or stops
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped
        if info is None:
            return reaped
        if info.si_pid in keep:
            # waitid reports one child at a time: look for other zombies by scanning.
            return reaped + _reap_scanned(keep)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(info.si_pid, os.WNOHANG)
            reaped += 1
    return reaped


def _reap_scanned(keep: set[int] | frozenset[int]) -> int:
    own = os.getpid()
    reaped = 0
    for pid, ppid in parent_pids().items():
        if ppid == own and pid not in keep and state(pid) == "Z":
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    reaped += 1
    return reaped
