"""Conditions that break Python multiprocessing, created for real on this host and always undone,
for tests of `pqd once` and `pqd run` (which compose with them as command prefixes: see
tests.helpers.wraps). Standard library only; pqd is reached through its command line alone.

    with pids_cgroup(12) as group:
        done = run([".venv/bin/pqd", "once", "--json"], group.wrap)
        assert group.events()["max"] > 0

What there is:

* /dev/shm in a private mount namespace: ``private_shm(size, fill=, read_only=, absent=,
  mode=)`` (namespaces.py);
* cgroups below the caller's own, v2 where it offers the controller, else v1:
  ``pids_cgroup(limit)``, ``memory_cgroup(limit)``, ``freezer_cgroup()`` (D state),
  ``cpu_cgroup(cores)`` (cgroups.py);
* resource limits: ``rlimits(nofile=, as_bytes=)``, ``nproc_limit(n)`` (a real uid of its own,
  since root is exempt from RLIMIT_NPROC), ``cpu_affinity(cpus)``, and this process's own
  ``open_files_left(n)``;
* temp dirs: ``hostile_tmpdir("long" | "missing" | "file" | "unwritable" | "none")``;
* faults in pool workers and their evidence: ``worker_hook()``, ``SemaphoreReaper``, ``fill``,
  ``space``, ``KernelLog`` (faults.py).

Every context manager kills what is left inside its condition and removes what it made, on
success and on exceptions; one that cannot create its condition raises ConditionError (a test
failure with the reason, never a skip).
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.cgroups import Cgroup, child_cgroup, find_hierarchy, hierarchy_v1
from tests.helpers.faults import KernelLog, SemaphoreReaper, WorkerHook, fill, space, worker_hook
from tests.helpers.namespaces import (
    NO_DAC_OVERRIDE,
    MountNamespace,
    mount_namespace,
    pids_in_namespaces,
    private_shm,
    read_only_steps,
)
from tests.helpers.waiting import wait_until
from tests.helpers.wraps import (
    RANK_IDENTITY,
    RANK_LIMIT,
    ConditionError,
    Wrap,
    command,
    environment,
    proc_state,
    run,
)

__all__ = [
    "NO_DAC_OVERRIDE",
    "Cgroup",
    "ConditionError",
    "KernelLog",
    "MountNamespace",
    "SemaphoreReaper",
    "Tmpdir",
    "WorkerHook",
    "Wrap",
    "command",
    "cpu_affinity",
    "cpu_cgroup",
    "environment",
    "fill",
    "find_hierarchy",
    "freeze",
    "freezer_cgroup",
    "hostile_tmpdir",
    "memory_cgroup",
    "memory_usage",
    "nproc_limit",
    "oom_kills",
    "pids_cgroup",
    "pids_in_namespaces",
    "private_shm",
    "proc_state",
    "rlimits",
    "run",
    "space",
    "uids_in_use",
    "wait_until",
    "worker_hook",
]

TEARDOWN_SECONDS = 10.0
#: A 107-byte AF_UNIX path is the longest Linux takes (sun_path is 108 with its NUL);
#: multiprocessing adds "/pymp-XXXXXXXX/listener-XXXXXXXX" (32) to the temp dir.
AF_UNIX_PATH_MAX = 107


# -- cgroups -----------------------------------------------------------------------------------


@contextlib.contextmanager
def pids_cgroup(limit: int | str) -> Iterator[Cgroup]:
    """A pids cgroup whose pids.max is ``limit`` (threads count: one task each). Read
    ``read("pids.current")``, ``read("pids.max")``, ``keyed("pids.events")["max"]`` (forks
    refused)."""
    with child_cgroup("pids", {"pids.max": str(limit)}) as group:
        yield group


@contextlib.contextmanager
def memory_cgroup(limit_bytes: int) -> Iterator[Cgroup]:
    """A memory cgroup limited to ``limit_bytes`` with no swap beyond it. v2: memory.max,
    memory.swap.max 0, OOM kills in memory.events "oom_kill". v1: memory.limit_in_bytes (and
    memory.memsw.limit_in_bytes where swap accounting exists), OOM kills in memory.oom_control
    "oom_kill". ``oom_kills(group)`` and ``memory_usage(group)`` read either."""
    where = find_hierarchy("memory")
    if where.version == 2:
        settings = {"memory.max": str(limit_bytes), "memory.swap.max": "0"}
    else:
        settings = {"memory.limit_in_bytes": str(limit_bytes)}
        if (where.own / "memory.memsw.limit_in_bytes").exists():
            settings["memory.memsw.limit_in_bytes"] = str(limit_bytes)
    with child_cgroup("memory", settings, where) as group:
        yield group


def oom_kills(group: Cgroup) -> int:
    name = "memory.events" if group.version == 2 else "memory.oom_control"
    return group.keyed(name).get("oom_kill", 0)


def memory_usage(group: Cgroup) -> int:
    return int(group.read("memory.current" if group.version == 2 else "memory.usage_in_bytes"))


@contextlib.contextmanager
def freezer_cgroup(version: int = 1) -> Iterator[Cgroup]:
    """A freezer: move a process in (``move(pid)``), then ``freeze(group)``. Measured on this
    kernel (6.18): a v1 freezer's frozen tasks read state D in /proc; v2's cgroup.freeze leaves
    them in S (wchan do_freezer_trap/get_signal). So version 1 is the one that makes D."""
    where = hierarchy_v1("freezer") if version == 1 else find_hierarchy("")
    with child_cgroup("freezer" if version == 1 else "", {}, where) as group:
        yield group


def freeze(group: Cgroup, frozen: bool = True, seconds: float = 10.0) -> None:
    """Freeze (or thaw) ``group`` and wait until the kernel says it is done."""
    if group.version == 1:
        group.write("freezer.state", "FROZEN" if frozen else "THAWED")
        want = "FROZEN" if frozen else "THAWED"
        wait_until(lambda: group.read("freezer.state") == want, f"{group.path} {want}", seconds)
    else:
        group.write("cgroup.freeze", "1" if frozen else "0")
        want_v2 = f"frozen {int(frozen)}"
        wait_until(
            lambda: want_v2 in group.read("cgroup.events"), f"{group.path} {want_v2}", seconds
        )


@contextlib.contextmanager
def cpu_cgroup(cores: float, period_us: int = 100_000) -> Iterator[Cgroup]:
    """A CPU quota of ``cores`` (v2 cpu.max "QUOTA PERIOD"; v1 cpu.cfs_quota_us and
    cpu.cfs_period_us)."""
    where = find_hierarchy("cpu")
    quota = str(int(cores * period_us))
    if where.version == 2:
        settings = {"cpu.max": f"{quota} {period_us}"}
    else:
        settings = {"cpu.cfs_period_us": str(period_us), "cpu.cfs_quota_us": quota}
    with child_cgroup("cpu", settings, where) as group:
        yield group


# -- limits and identity -----------------------------------------------------------------------


def rlimits(*, nofile: int | None = None, as_bytes: int | None = None) -> Wrap:
    """``prlimit`` soft and hard limits for the command (RLIMIT_NOFILE, RLIMIT_AS)."""
    args = ["prlimit"]
    if nofile is not None:
        args.append(f"--nofile={nofile}:{nofile}")
    if as_bytes is not None:
        args.append(f"--as={as_bytes}:{as_bytes}")
    return Wrap(RANK_LIMIT, (*args, "--"))


@contextlib.contextmanager
def open_files_left(free: int) -> Iterator[int]:
    """This process's soft RLIMIT_NOFILE set so that exactly ``free`` more descriptors can be
    opened (new descriptors fill the lowest free numbers, so holes below the limit count),
    restored after; the limit set."""
    in_use = {fd for fd in map(int, os.listdir("/proc/self/fd")) if _is_open(fd)}
    limit = 0
    while free > 0 or limit in in_use:
        if limit not in in_use:
            free -= 1
        limit += 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield limit
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _is_open(fd: int) -> bool:
    """False for the descriptor that listing /proc/self/fd used, closed since."""
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def cpu_affinity(cpus: str) -> Wrap:
    """``taskset -c CPUS``: what os.sched_getaffinity (and 3.13's os.process_cpu_count) see."""
    return Wrap(RANK_LIMIT, ("taskset", "-c", cpus))


def uids_in_use() -> set[int]:
    uids = set()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            status = (entry / "status").read_text()
            uids.add(int(status.split("\nUid:")[1].split()[0]))
    return uids


def _kill_real_uid(uid: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        # A zombie runs nothing: what is left of it is its parent's to reap (this process
        # reaps its own below), and the next condition takes a uid that no entry uses.
        left = [
            int(entry.name)
            for entry in Path("/proc").iterdir()
            if entry.name.isdigit()
            and _real_uid(entry) == uid
            and proc_state(int(entry.name)) not in ("Z", "")
        ]
        if not left:
            return
        if time.monotonic() > deadline:
            described = [_described(pid) for pid in left]
            raise ConditionError(f"processes of uid {uid} outlived the condition: {described}")
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            # An orphan of the condition's tree comes to this process when a test made it a
            # child subreaper (the runner-side tests do, for the whole session): its zombie is
            # this process's to reap.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.02)


def _described(pid: int) -> str:
    """pid, state, parent and command line of a process, for an error message."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return f"{pid} (gone)"
    state, ppid = stat.rpartition(")")[2].split()[:2]
    return f"{pid} state {state} parent {ppid} {cmdline[:120]!r}"


def _real_uid(entry: Path) -> int | None:
    try:
        return int((entry / "status").read_text().split("\nUid:")[1].split()[0])
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def nproc_limit(limit: int, first_uid: int = 61000) -> Iterator[Wrap]:
    """RLIMIT_NPROC ``limit`` that bites: the kernel exempts real uid 0 and CAP_SYS_RESOURCE /
    CAP_SYS_ADMIN holders, and counts every process of the real uid. So the command runs with
    a real uid no process uses (from ``first_uid``), effective uid 0 (it still reaches the
    interpreter under /root and root's files) and neither capability. Every process of that
    uid is killed on exit."""
    used = uids_in_use()
    uid = next(u for u in range(first_uid, first_uid + 1000) if u not in used)
    drop = "-sys_resource,-sys_admin"
    yield Wrap(
        RANK_IDENTITY,
        (
            "setpriv",
            f"--ruid={uid}",
            f"--bounding-set={drop}",
            f"--inh-caps={drop}",
            "prlimit",
            f"--nproc={limit}:{limit}",
            "--",
        ),
    )
    _kill_real_uid(uid, TEARDOWN_SECONDS)


# -- temp dirs ---------------------------------------------------------------------------------


class Tmpdir:
    """A hostile TMPDIR: ``path`` (what TMPDIR names) and ``wrap`` (the variable, and for the
    read-only kinds the mount namespace that makes them so). Without fallbacks also ``cwd``, a
    read-only working directory to run the command in, and ``usable``, a writable directory
    outside every read-only one (for a parent whose own TMPDIR must work while its child's
    does not)."""

    def __init__(
        self,
        path: Path,
        wrap: Wrap,
        namespace: MountNamespace | None,
        cwd: Path | None = None,
        usable: Path | None = None,
    ) -> None:
        self.path = path
        self.wrap = wrap
        self.namespace = namespace
        self.cwd = cwd
        self.usable = usable


def _exact_path(base: Path, length: int) -> Path:
    """A directory below ``base`` whose path is exactly ``length`` characters."""
    need = length - len(str(base)) - 1
    if need < 1:
        raise ConditionError(f"{base} is already {len(str(base))} characters, over {length}")
    path = base / ("d" * need)
    path.mkdir()
    return path


@contextlib.contextmanager
def hostile_tmpdir(kind: str, length: int = 106, *, fallbacks: bool = True) -> Iterator[Tmpdir]:
    """TMPDIR made hostile. ``long``: an existing, writable directory of ``length`` characters
    (multiprocessing's socket paths then pass AF_UNIX_PATH_MAX from 76 on). ``missing``: names
    nothing. ``file``: names a regular file. ``unwritable``: a read-only bind mount (EROFS, for
    root too). ``none``: TMPDIR, /tmp, /var/tmp, /usr/tmp and the working directory all read-only,
    so tempfile finds no usable directory (the others only make it fall back to /tmp); run the
    command with ``cwd=str(tmpdir.path)``. ``fallbacks=False`` does that to ``missing``,
    ``file`` and ``unwritable`` too: /tmp, /var/tmp, /usr/tmp and ``tmpdir.cwd`` read-only
    (run the command there), so tempfile raises "No usable temporary directory found"."""
    base = Path(tempfile.mkdtemp(prefix="pqd-cond-tmp-"))
    usable: Path | None = None
    try:
        namespace_cm: contextlib.AbstractContextManager[MountNamespace | None]
        if kind == "long":
            path = _exact_path(base, length)
        elif kind in ("missing", "file", "unwritable", "none"):
            path = base / kind
            if kind == "file":
                path.write_text("not a directory\n")
            elif kind != "missing":
                path.mkdir()
        else:
            raise ConditionError(f"unknown temp dir kind {kind!r}")
        ro: list[Path | str] = []
        if kind in ("unwritable", "none"):
            ro.append(path)
        cwd = None
        if kind == "none" or not fallbacks:
            if kind == "long":
                raise ConditionError("a long TMPDIR is usable: it has no fallbacks to take away")
            cwd = path if kind == "none" else base / "cwd"
            cwd.mkdir(exist_ok=True)
            ro += [p for p in (*_system_tmps(), cwd) if p not in ro]
            usable = _usable_dir()
        namespace_cm = mount_namespace(read_only_steps(ro)) if ro else contextlib.nullcontext()
        with namespace_cm as namespace:
            prefix = namespace.wrap.prefix if namespace else ()
            wrap = Wrap(1, prefix, (("TMPDIR", str(path)),))
            yield Tmpdir(path, wrap, namespace, cwd, usable)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        if usable is not None:
            shutil.rmtree(usable, ignore_errors=True)


def _usable_dir() -> Path:
    """A writable directory that no temp dir condition makes read-only (not below /tmp)."""
    for parent in ("/run", "/var/lib", "/root"):
        if os.access(parent, os.W_OK):
            return Path(tempfile.mkdtemp(prefix="pqd-cond-usable-", dir=parent))
    raise ConditionError("no writable directory outside /tmp, /var/tmp and /usr/tmp")


def _system_tmps() -> list[str]:
    return [p for p in ("/tmp", "/var/tmp", "/usr/tmp") if os.path.isdir(p)]
