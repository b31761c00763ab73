"""Where a probe's processes live, and how all of them are found and killed
(docs/design.md §1a).

Two kinds of containment:

* ``cgroup``: where pqd's own cgroup v2 is writable (systemd ``Delegate=yes``), each probe's runner
  moves itself into a child cgroup of it. Membership is that group's ``cgroup.procs``; the kill is
  ``cgroup.kill``, which nothing in the group can escape, however it forked.
* ``subreaper``: elsewhere the runner is a child subreaper in its own process group, so orphans
  (double-forked, ``setsid()`` ones included) re-parent to it and are found by walking
  ``/proc/*/stat`` parent links down from the runner.

Standard library only: the runner imports this, and so does every spawn child of the runner.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from dataclasses import dataclass
from typing import Final

#: Values of the ``containment`` config field; "auto" picks cgroup where it can.
CONTAINMENT_MODES: Final = ("auto", "cgroup", "subreaper")

_PR_SET_CHILD_SUBREAPER: Final = 36
_CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ContainmentError(Exception):
    """containment = "cgroup" was asked for where no writable cgroup v2 subtree exists."""


def become_child_subreaper() -> bool:
    """Make orphans of our descendants re-parent to us instead of init. Linux only."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


# -- finding the cgroup v2 hierarchy ---------------------------------------------------------


def cgroup2_mount(mountinfo: str) -> str | None:
    """The mount point of the cgroup v2 hierarchy in /proc/self/mountinfo text, or None.

    It is not always /sys/fs/cgroup: hybrid hosts mount it at /sys/fs/cgroup/unified beside the
    v1 controllers."""
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if sep and right.split(" ", 1)[0] == "cgroup2":
            fields = left.split()
            if len(fields) >= 5:
                return fields[4].replace("\\040", " ")
    return None


def cgroup2_path(proc_cgroup: str) -> str | None:
    """Our path inside the v2 hierarchy from /proc/self/cgroup text ("0::/path"), or None."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:] or "/"
    return None


def own_cgroup_dir() -> str | None:
    """pqd's own cgroup v2 directory, or None where there is no v2 hierarchy."""
    try:
        with open("/proc/self/mountinfo") as f:
            mount = cgroup2_mount(f.read())
        with open("/proc/self/cgroup") as f:
            path = cgroup2_path(f.read())
    except OSError:
        return None
    if mount is None or path is None:
        return None
    return os.path.normpath(mount + "/" + path.lstrip("/"))


def _delegated(directory: str) -> bool:
    """True if we may create child groups in ``directory`` and move processes into them.

    The hierarchy's root is never taken as delegated, even for root: pqd would be creating
    groups beside the host's own slices. systemd gives a service a subtree with Delegate=yes."""
    if os.path.ismount(directory):
        return False
    return os.access(directory, os.W_OK) and os.access(
        os.path.join(directory, "cgroup.procs"), os.W_OK
    )


def choose(mode: str) -> str | None:
    """The parent cgroup directory for probe groups, or None for subreaper containment.

    ``mode`` is one of CONTAINMENT_MODES. Raises ContainmentError when "cgroup" cannot be had."""
    if mode == "subreaper":
        return None
    directory = own_cgroup_dir()
    if directory is not None and _delegated(directory):
        return directory
    if mode == "cgroup":
        where = directory or "no cgroup v2 hierarchy"
        raise ContainmentError(
            f'containment = "cgroup": pqd\'s cgroup ({where}) is not a writable delegated '
            "subtree (systemd Delegate=yes gives one)"
        )
    return None


# -- one probe's cgroup ----------------------------------------------------------------------


def _safe_group_name(probe: str) -> str:
    if probe.replace("-", "").replace("_", "").isalnum() and probe.isascii():
        return "probe-" + probe
    return "probe-x" + probe.encode().hex()[:64]


@dataclass(frozen=True)
class ProbeCgroup:
    """The child cgroup that holds one probe's runner and everything it starts."""

    path: str

    @classmethod
    def for_probe(cls, parent: str, probe: str) -> ProbeCgroup:
        return cls(os.path.join(parent, _safe_group_name(probe)))

    def create(self) -> None:
        os.makedirs(self.path, exist_ok=True)

    def join(self) -> None:
        """Move the calling process in (writing 0 to cgroup.procs moves the writer)."""
        _write(os.path.join(self.path, "cgroup.procs"), "0")

    def pids(self) -> list[int]:
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                return [int(line) for line in f if line.strip()]
        except OSError:
            return []

    def kill(self) -> None:
        """SIGKILL every process in the group; cgroup.kill (Linux 5.14+), else one by one."""
        try:
            _write(os.path.join(self.path, "cgroup.kill"), "1")
        except OSError:
            kill_pids(self.pids())

    def cpu_seconds(self) -> float | None:
        """usage_usec of cpu.stat: present in every v2 group, controller enabled or not."""
        try:
            with open(os.path.join(self.path, "cpu.stat")) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "usage_usec":
                        return int(value) / 1e6
        except (OSError, ValueError):
            pass
        return None

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            os.rmdir(self.path)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


# -- process trees from /proc ----------------------------------------------------------------


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after "(comm)": comm may hold spaces and parentheses."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        try:
            data = os.read(fd, 1024)
        finally:
            os.close(fd)
    except OSError:
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


def state(pid: int) -> str | None:
    """The one-letter /proc state (R, S, D, T, t, Z, ...), or None if the process is gone."""
    fields = _stat_fields(pid)
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


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(4096)
    except OSError:
        return "?"
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    return text or f"[{state(pid) or 'gone'}]"


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def kill_tree(root: int, group: ProbeCgroup | None, *, include_root: bool) -> None:
    """SIGKILL everything of a probe: its cgroup, or the runner's process group and every
    descendant of the runner. The root is killed last, so orphans of the first round still
    re-parent to it (a subreaper) and are found by the next scan, not lost under init."""
    if group is not None:
        if include_root:
            group.kill()
            return
        kill_pids([pid for pid in group.pids() if pid != root])
        return
    for _ in range(3):
        below = descendants(root)
        if not below:
            break
        kill_pids(below)
    if include_root:
        with contextlib.suppress(OSError):
            os.killpg(root, signal.SIGKILL)
        kill_pids([root])


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
