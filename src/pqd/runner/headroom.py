"""The probe's headroom in every resource multiprocessing needs, read in its runner as a cycle
begins: so a probe placed like the application (same cgroup, rlimits, mount namespace,
interpreter, environment) sees the application's limits (docs/design.md §2, "Headroom").

Standard library only, and it must run under CPython 3.9 too (a probe may name its interpreter).
Every read is a few small files; none of it may fail a cycle: what cannot be read falls back to
the documented "no limit" value of that resource.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import tempfile
import time

from pqd.results import Headroom

SHM_DIR = "/dev/shm"
#: Names multiprocessing gives what it puts in /dev/shm: a named semaphore "/mp-XXXX" is the
#: file "sem.mp-XXXX" (glibc), a SharedMemory block "psm_XXXX".
MP_SHM_PREFIXES = ("sem.mp-", "psm_")
#: v1 "unlimited" for memory is PAGE_COUNTER_MAX pages: anything this large is no limit.
_HUGE = 1 << 62
#: multiprocessing's socket path below the temp dir: "/pymp-XXXXXXXX/listener-XXXXXXXX".
_LISTENER_TAIL = "listener-XXXXXXXX"


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read(4096).strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_all(path: str) -> str:
    """A file that may be longer than _read's 4 KiB (mountinfo of a busy host)."""
    try:
        with open(path) as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return ""


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text.split()[0])
    except (ValueError, IndexError):
        return None


def _mounts(mountinfo: str) -> list[tuple[str, str, str, list[str]]]:
    """(fstype, root, mount point, super options) of each cgroup mount in ``mountinfo``."""
    found = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            found.append((tail[0], fields[3], fields[4], tail[2].split(",")))
    return found


def _walk(mount_root: str, mount_point: str, path: str) -> list[str]:
    """The directories of cgroup ``path`` and its ancestors under one mount, own first."""
    if mount_root != "/":
        if path != mount_root and not path.startswith(mount_root + "/"):
            return []  # our cgroup is not below this mount (another namespace's view)
        path = path[len(mount_root) :] or "/"
    dirs = []
    parts = [p for p in path.split("/") if p and p != ".."]
    while True:
        dirs.append(os.path.join(mount_point, *parts))
        if not parts:
            return dirs
        parts.pop()


def ancestry(
    controller: str, proc_cgroup: str | None = None, mountinfo: str | None = None
) -> list[tuple[str, str]]:
    """("v1"|"v2", directory) of this process's cgroup and every ancestor, for ``controller``,
    in every hierarchy that may carry it (v1 mounted with it, and v2). The two texts default to
    /proc/self/cgroup and /proc/self/mountinfo."""
    if proc_cgroup is None:
        proc_cgroup = _read("/proc/self/cgroup") or ""
    if mountinfo is None:
        mountinfo = _read_all("/proc/self/mountinfo")
    v1: dict[str, str] = {}
    v2 = None
    for line in proc_cgroup.splitlines():
        hier, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hier == "0" and controllers == "":
            v2 = path
        for name in controllers.split(","):
            v1[name] = path
    dirs: list[tuple[str, str]] = []
    for fstype, root, point, options in _mounts(mountinfo):
        if fstype == "cgroup" and controller in options and controller in v1:
            dirs += [("v1", d) for d in _walk(root, point, v1[controller])]
        elif fstype == "cgroup2" and v2 is not None:
            dirs += [("v2", d) for d in _walk(root, point, v2)]
    return dirs


def _tightest(
    dirs: list[tuple[str, str]], limit_of: dict[str, str], usage_of: dict[str, str]
) -> tuple[int, int, str] | None:
    """(limit, usage, "cgroup VERSION DIR") of the lowest limit over ``dirs``, or None."""
    best = None
    for version, directory in dirs:
        limit = _int(_read(os.path.join(directory, limit_of[version])))
        if limit is None or limit >= _HUGE or (best is not None and limit >= best[0]):
            continue  # "max" (v2) does not parse: no limit there
        usage = _int(_read(os.path.join(directory, usage_of[version])))
        best = (limit, -1 if usage is None else usage, f"cgroup {version} {directory}")
    return best


#: /proc/self/cgroup and /proc/self/mountinfo, read once per reading.
Views = tuple[str, str]


def _views() -> Views:
    return _read("/proc/self/cgroup") or "", _read_all("/proc/self/mountinfo")


def _pids(views: Views) -> tuple[int, int, str]:
    found = _tightest(
        ancestry("pids", *views),
        {"v1": "pids.max", "v2": "pids.max"},
        {"v1": "pids.current", "v2": "pids.current"},
    )
    if found is not None:
        return found
    # The kernel's: each task needs a pid and a task struct. /proc/loadavg's 4th field counts
    # every task (threads included) on the host, as pids.current does in a cgroup.
    kernel = min(
        _int(_read("/proc/sys/kernel/pid_max")) or 32768,
        _int(_read("/proc/sys/kernel/threads-max")) or 1 << 22,
    )
    loadavg = (_read("/proc/loadavg") or "").split()
    tasks = _int(loadavg[3].partition("/")[2]) if len(loadavg) > 3 else None
    return kernel, -1 if tasks is None else tasks, "kernel"


def _meminfo() -> dict[str, int]:
    info = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        key, _, value = line.partition(":")
        number = _int(value)
        if number is not None:
            info[key] = number * 1024
    return info


def _memory(views: Views) -> tuple[int, int, str]:
    info = _meminfo()
    total = info.get("MemTotal", 0)
    found = _tightest(
        ancestry("memory", *views),
        {"v1": "memory.limit_in_bytes", "v2": "memory.max"},
        {"v1": "memory.usage_in_bytes", "v2": "memory.current"},
    )
    if found is not None and (total == 0 or found[0] < total):
        return found
    return total, total - info.get("MemAvailable", total), "host"


def _cpu_quota(version: str, directory: str) -> float | None:
    if version == "v2":
        fields = (_read(os.path.join(directory, "cpu.max")) or "").split()
        quota, period = (_int(fields[0]), _int(fields[1])) if len(fields) == 2 else (None, None)
    else:
        quota = _int(_read(os.path.join(directory, "cpu.cfs_quota_us")))
        period = _int(_read(os.path.join(directory, "cpu.cfs_period_us")))
    if quota is None or period is None or quota <= 0 or period <= 0:
        return None  # "max" or -1: no quota here
    return quota / period


def _cpu(views: Views) -> tuple[float, str]:
    try:
        cores: float = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cores = float(os.cpu_count() or 1)
    source = "affinity"
    for version, directory in ancestry("cpu", *views):
        quota = _cpu_quota(version, directory)
        if quota is not None and quota < cores:
            cores, source = quota, f"cgroup {version} {directory}"
    return cores, source


def pool_size() -> int:
    """What ``Pool()`` without a size starts in this interpreter: os.process_cpu_count() from
    3.13 (affinity and PYTHON_CPU_COUNT honoured, the cgroup quota not: CPython gh-149452),
    os.cpu_count() before."""
    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return int(count or 1)


def open_files_limit() -> int:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return _int(_read("/proc/sys/fs/nr_open")) or 1 << 20
    return int(soft)


def shm_names() -> frozenset[str]:
    """Every entry of /dev/shm now (none if it cannot be listed)."""
    try:
        return frozenset(os.listdir(SHM_DIR))
    except OSError:
        return frozenset()


def _shm() -> tuple[int, int]:
    """(size, available) of /dev/shm; what a writer cannot use is not available, nor is space
    once a limited nr_inodes is used up (no new entry fits; f_files 0 is no limit)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return 0, 0
    size = st.f_blocks * st.f_frsize
    writable = not st.f_flag & os.ST_RDONLY and os.access(SHM_DIR, os.W_OK | os.X_OK)
    out_of_inodes = st.f_files > 0 and st.f_favail == 0
    return size, st.f_bavail * st.f_frsize if writable and not out_of_inodes else 0


def tmpdir_check() -> tuple[str, str]:
    """(temp dir, problem) for multiprocessing's sockets: a "pymp-" dir in the temp dir with a
    listener socket of the length multiprocessing binds (CPython gh-93852); "" if it works."""
    try:
        base = tempfile.gettempdir()
    except (OSError, RuntimeError) as exc:
        return "", f"{type(exc).__name__}: {exc}"
    try:
        directory = tempfile.mkdtemp(prefix="pymp-", dir=base)
    except OSError as exc:
        return base, f"creating a directory: {exc.strerror or exc}"
    path = os.path.join(directory, _LISTENER_TAIL)
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(path)
    except OSError as exc:
        return base, f"binding {len(path)}-character socket path: {exc.strerror or exc}"
    finally:
        sock.close()
        for remove, what in ((os.unlink, path), (os.rmdir, directory)):
            with contextlib.suppress(OSError):
                remove(what)
    return base, ""


def read() -> Headroom:
    return begin()[0]


def begin() -> tuple[Headroom, frozenset[str]]:
    """Everything at once, with what reading it cost, and /dev/shm's entries for the cycle's
    leaked_shm at its end (one listing serves both)."""
    t0 = time.perf_counter()
    names = shm_names()
    shm_size, shm_available = _shm()
    views = _views()
    pids_limit, pids_current, pids_source = _pids(views)
    memory_limit, memory_usage, memory_source = _memory(views)
    cores, cpu_source = _cpu(views)
    tmpdir, problem = tmpdir_check()
    room = Headroom(
        shm_size_bytes=shm_size,
        shm_available_bytes=shm_available,
        shm_objects=len(names),
        pids_limit=pids_limit,
        pids_current=pids_current,
        pids_source=pids_source,
        memory_limit_bytes=memory_limit,
        memory_usage_bytes=memory_usage,
        memory_source=memory_source,
        open_files_limit=open_files_limit(),
        cpu_quota_cores=cores,
        cpu_source=cpu_source,
        cpu_count=pool_size(),
        tmpdir_usable=not problem,
        tmpdir=tmpdir,
        tmpdir_problem=problem,
        read_seconds=time.perf_counter() - t0,
    )
    return room, names


def _new_mp_names(before: frozenset[str]) -> list[str]:
    """multiprocessing's semaphores and shared-memory blocks in /dev/shm not in ``before``."""
    return [n for n in shm_names() - before if n.startswith(MP_SHM_PREFIXES)]


def leaked_shm(before: frozenset[str]) -> int:
    """multiprocessing objects in /dev/shm that appeared since ``before`` and that no process
    maps any more: what a cycle created and left behind. One still mapped belongs to a live
    process (another probe's cycle running beside this one), so the costly part, a look at
    every process's maps, happens only when something new is still there."""
    new = _new_mp_names(before)
    if new:
        gc.collect()  # a pool dropped in a reference cycle unlinks its semaphores when collected
        new = _new_mp_names(before)
    if not new:
        return 0
    # By inode: glibc maps a semaphore under the temporary name it created it with, so maps
    # show "/dev/shm/sem.XXXXXX (deleted)", never the name.
    files = {}
    for name in new:
        path = os.path.join(SHM_DIR, name)
        try:
            st = os.stat(path)
        except OSError:
            continue  # gone meanwhile: not left behind
        files[f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x} {st.st_ino}".encode()] = path
    unmapped = set(files) - _mapped(set(files))
    # One that went while the maps were read was another cycle's, ending meanwhile.
    return sum(1 for key in unmapped if os.path.exists(files[key]))


def _mapped(keys: set[bytes]) -> set[bytes]:
    """Which of ``keys`` ("dev inode", as /proc/PID/maps writes them) some process maps."""
    found: set[bytes] = set()
    wanted = {b" " + key + b" ": key for key in keys}
    for pid in (e.name for e in os.scandir("/proc") if e.name.isdigit()):
        try:
            with open(f"/proc/{pid}/maps", "rb") as f:
                maps = f.read()
        except OSError:
            continue  # gone, or not ours to read
        found.update(key for text, key in wanted.items() if text in maps)
    return found
