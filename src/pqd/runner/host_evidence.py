"""The host's side of a failed cycle, read cheaply for pqd.runner.causes (docs/design.md §1,
"Causes"): the pids and memory cgroups of the tree (v1 or v2, the process's own and every
ancestor) with their counters, the kernel's OOM reports, /dev/shm, the resource limits and the
temp dir. Every read is of a few small files; what cannot be read is left out, never guessed.

On the success path only ``Counters.read`` runs, at the start of each cycle (a few files), so that
a failure can tell what moved during its cycle. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import tempfile
import time
from dataclasses import dataclass

from pqd.runner.causes import OomKills, PidsLimit, ShmFacts

SHM_DIR = "/dev/shm"
_CONTROLLERS = ("pids", "memory")


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _keyed(path: str) -> dict[str, int]:
    text = _read(path) or ""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            found[parts[0]] = int(parts[1])
    return found


def _number(path: str) -> int | None:
    text = (_read(path) or "").strip()
    return int(text) if text.isdigit() else None


def _mounts() -> dict[str, tuple[str, str]]:
    """Controller ("pids", "memory", or "" for the v2 hierarchy) -> (mount point, its root)."""
    found: dict[str, tuple[str, str]] = {}
    for line in (_read("/proc/self/mountinfo") or "").splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        fstype, options = fields[dash + 1], fields[dash + 3].split(",")
        if fstype == "cgroup2":
            found.setdefault("", (fields[4], fields[3]))
        elif fstype == "cgroup":
            for controller in _CONTROLLERS:
                if controller in options:
                    found.setdefault(controller, (fields[4], fields[3]))
    return found


def cgroup_dirs(pid: int) -> dict[str, list[str]]:
    """Per controller, the directories of ``pid``'s cgroup and of every ancestor, innermost
    first, where that controller's files are (v1, else v2)."""
    mounts = _mounts()
    own: dict[str, str] = {}
    for line in (_read(f"/proc/{pid}/cgroup") or "").splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    dirs: dict[str, list[str]] = {}
    for controller in _CONTROLLERS:
        key = controller if controller in mounts and controller in own else ""
        if key not in mounts or key not in own:
            continue
        mount, root = mounts[key]
        path = own[key]
        if root != "/" and path.startswith(root):
            path = path[len(root) :]
        probe_file = "pids.max" if controller == "pids" else "memory.oom_control"
        chain = []
        current = os.path.normpath(mount + "/" + path)
        while current.startswith(mount):
            has = os.path.exists(os.path.join(current, probe_file)) or os.path.exists(
                os.path.join(current, "memory.events" if controller == "memory" else "pids.max")
            )
            if has:
                chain.append(current)
            if current == mount:
                break
            current = os.path.dirname(current)
        dirs[controller] = chain
    return dirs


def _pids_refused(directory: str) -> int:
    return _keyed(os.path.join(directory, "pids.events")).get("max", 0)


def _oom_kills(directory: str) -> int:
    v1 = _keyed(os.path.join(directory, "memory.oom_control"))
    if "oom_kill" in v1:
        return v1["oom_kill"]
    local = _keyed(os.path.join(directory, "memory.events.local"))
    if "oom_kill" in local:
        return local["oom_kill"]
    return _keyed(os.path.join(directory, "memory.events")).get("oom_kill", 0)


@dataclass(frozen=True)
class Counters:
    """The cumulative counters of a process's cgroups, at one moment (and when it was)."""

    dirs: dict[str, list[str]]
    refused: dict[str, int]  # pids cgroup dir -> pids.events max
    kills: dict[str, int]  # memory cgroup dir -> oom_kill
    monotonic: float

    @classmethod
    def read(cls, pid: int, dirs: dict[str, list[str]] | None = None) -> Counters:
        dirs = cgroup_dirs(pid) if dirs is None else dirs
        return cls(
            dirs,
            {d: _pids_refused(d) for d in dirs.get("pids", [])},
            {d: _oom_kills(d) for d in dirs.get("memory", [])},
            time.monotonic(),
        )

    def pids_limits(self, later: Counters) -> tuple[PidsLimit, ...]:
        found = []
        for d, before in self.refused.items():
            refused = later.refused.get(d, before) - before
            if refused > 0:
                limit = (_read(os.path.join(d, "pids.max")) or "?").strip()
                current = _number(os.path.join(d, "pids.current")) or 0
                found.append(PidsLimit(_short(d), limit, current, refused))
        return tuple(found)

    def oom_kills(self, later: Counters) -> tuple[OomKills, ...]:
        found = []
        for d, before in self.kills.items():
            kills = later.kills.get(d, before) - before
            if kills > 0:
                limit = _number(os.path.join(d, "memory.limit_in_bytes"))
                if limit is None:
                    limit = _number(os.path.join(d, "memory.max"))
                peak = _number(os.path.join(d, "memory.max_usage_in_bytes"))
                if peak is None:
                    peak = _number(os.path.join(d, "memory.peak"))
                found.append(OomKills(_short(d), limit, kills, peak))
        return tuple(found)


def _short(directory: str) -> str:
    """The cgroup's path below its hierarchy (what systemd and the kernel call it)."""
    parts = directory.split("/")
    return "/" + "/".join(parts[5:]) if directory.startswith("/sys/fs/cgroup/") else directory


_KILLED = re.compile(r"Killed process (\d+) \([^)]*\).*?anon-rss:(\d+)kB, file-rss:(\d+)kB")


def oom_victims(since_monotonic: float) -> tuple[tuple[int, int], ...]:
    """(pid, RSS bytes) of each process the kernel's OOM killer reported killing since then,
    from /dev/kmsg (readable by root outside containers; empty where it is not)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return ()
    since_us = int(since_monotonic * 1e6)
    found = []
    try:
        while True:
            try:
                record = os.read(fd, 8192).decode("utf-8", "replace")
            except BlockingIOError:
                break
            except OSError:  # EPIPE: a record was overwritten while we read; go on
                continue
            if not record:
                break
            header, _, message = record.partition(";")
            fields = header.split(",")
            if len(fields) < 3 or not fields[2].isdigit() or int(fields[2]) < since_us:
                continue
            match = _KILLED.search(message)
            if match:
                rss_kb = int(match.group(2)) + int(match.group(3))
                found.append((int(match.group(1)), rss_kb * 1024))
    finally:
        os.close(fd)
    return tuple(found)


def shm_facts(path: str = SHM_DIR) -> ShmFacts:
    exists = os.path.isdir(path)
    size = free = inodes = free_inodes = 0
    read_only = False
    if exists:
        with contextlib.suppress(OSError):
            st = os.statvfs(path)
            size, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
            inodes, free_inodes = st.f_files, st.f_favail
            read_only = bool(st.f_flag & os.ST_RDONLY)
    writable = exists and os.access(path, os.W_OK | os.X_OK)
    return ShmFacts(path, exists, writable, read_only, size, free, inodes, free_inodes)


def limits(pid: int, nofile_soft: int | None = None) -> tuple[tuple[int, int] | None, int | None]:
    """RLIMIT_NOFILE (soft, hard) and RLIMIT_NPROC soft of ``pid`` (-1 = unlimited). Once
    ``pid`` is gone (a runner killed with its failed cycle): this process's, with
    ``nofile_soft`` as the soft RLIMIT_NOFILE where given (what the runner read of its own
    when the cycle began: prlimit may have changed it since it was born)."""
    found: dict[str, tuple[int, int]] = {}
    for line in (_read(f"/proc/{pid}/limits") or "").splitlines():
        for name in ("Max open files", "Max processes"):
            if line.startswith(name):
                soft, hard = line[len(name) :].split()[:2]
                found[name] = (_limit(soft), _limit(hard))
    if not found:
        own_soft, own_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        soft_hard = (own_soft if nofile_soft is None else nofile_soft, own_hard)
        return soft_hard, resource.getrlimit(resource.RLIMIT_NPROC)[0]
    nproc = found.get("Max processes")
    return found.get("Max open files"), None if nproc is None else nproc[0]


def _limit(text: str) -> int:
    return -1 if text == "unlimited" else int(text)


def processes_of_uid(uid: int) -> int:
    """Processes (threads count too, as RLIMIT_NPROC counts them) of a real uid, host-wide."""
    count = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        status = _read(f"/proc/{entry}/status") or ""
        match = re.search(r"^Uid:\s+(\d+)", status, flags=re.M)
        threads = re.search(r"^Threads:\s+(\d+)", status, flags=re.M)
        if match and int(match.group(1)) == uid:
            count += int(threads.group(1)) if threads else 1
    return count


def real_uid(pid: int) -> int:
    match = re.search(r"^Uid:\s+(\d+)", _read(f"/proc/{pid}/status") or "", flags=re.M)
    return int(match.group(1)) if match else os.getuid()


def dir_problem(path: str) -> str:
    """What keeps tempfile from using ``path`` as a temp dir, in a word or two ("" if nothing
    readable does: tempfile's own test is to create a file, which this does not)."""
    if not os.path.exists(path):  # a dangling symlink too
        return "missing"
    if not os.path.isdir(path):
        return "not a directory"
    try:
        st = os.statvfs(path)
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else "not usable"
    if st.f_flag & os.ST_RDONLY:
        return "read-only"
    if not os.access(path, os.W_OK | os.X_OK):
        return "not writable"
    if st.f_blocks and st.f_bavail == 0:
        return "full"
    return ""


def tmpdir() -> str:
    try:
        return tempfile.gettempdir()
    except (OSError, FileNotFoundError):
        return os.environ.get("TMPDIR", "")
