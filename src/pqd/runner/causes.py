"""What on the host made a cycle fail: pure functions from the evidence gathered at failure time
to one cause of results.FAILURE_CAUSES and one sentence naming the resource and the number
(docs/design.md §1, "Causes").

Nothing here reads the host; pqd.runner.host_evidence gathers an ``Evidence`` and this module
only decides, so every rule is covered by a table of fixtures. The order is the "first error
wins" rule: host counters that moved during the cycle (a pids cgroup refused a fork, the OOM
killer took a process of the tree) explain everything else the tree said; then the first
classified error the tree wrote (its stderr, then what the runner caught); then how a process
ended (a signal); then the state of the tree at the deadline. Standard library only.
"""

from __future__ import annotations

import ast
import contextlib
import re
import signal
from dataclasses import dataclass

#: A signal a process dies of by itself (a fault), not one that something sent it.
CRASH_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE)
#: multiprocessing's AF_UNIX paths add this much to the temp dir (``/pymp-XXXXXXXX`` and
#: ``/listener-XXXXXXXX``); ``sun_path`` holds 107 bytes and a NUL (cpython gh-93852).
SOCKET_SUFFIX = 32
SUN_PATH_MAX = 107
#: Every failure of the shared-memory phase starts its detail with this (pqd.runner.shm_phase).
SHM_PHASE = "shared-memory phase"


@dataclass(frozen=True)
class ShmFacts:
    """/dev/shm as the tree saw it, at failure time."""

    path: str
    exists: bool
    writable: bool  # os.access(W_OK | X_OK): glibc turns EACCES into ENOENT in sem_open
    read_only: bool  # ST_RDONLY
    size_bytes: int
    free_bytes: int
    # statvfs f_files and f_favail: a tmpfs's nr_inodes, which its entries can use up with
    # space to spare; 0 of 0 where nothing limits them (nr_inodes=0) or they were not read.
    inodes: int = 0
    free_inodes: int = 0

    @property
    def out_of_inodes(self) -> bool:
        return self.inodes > 0 and self.free_inodes == 0


@dataclass(frozen=True)
class PidsLimit:
    """A pids cgroup of the tree (itself or an ancestor) that refused forks during the cycle."""

    cgroup: str
    limit: str  # pids.max: a number or "max"
    current: int
    refused: int  # growth of pids.events' "max" over the cycle


@dataclass(frozen=True)
class OomKills:
    """A memory cgroup of the tree in which the OOM killer killed during the cycle."""

    cgroup: str
    limit_bytes: int | None
    kills: int  # growth of oom_kill over the cycle
    peak_bytes: int | None  # memory.peak / memory.max_usage_in_bytes


@dataclass(frozen=True)
class Exit:
    """A process of the tree that ended during the cycle: by a signal or with a status."""

    role: str  # "pool worker", "Manager", "runner", ...
    pid: int
    signal: int | None = None
    status: int | None = None


@dataclass(frozen=True)
class Evidence:
    """Everything the classifier looks at; plain data, gathered cheaply at failure time."""

    reason: str
    detail: str
    texts: tuple[str, ...] = ()  # error texts, first written first: the tree's stderr, the runner's
    exits: tuple[Exit, ...] = ()
    states: tuple[tuple[str, int, str, str], ...] = ()  # (role, pid, state letter, wchan)
    pids_limits: tuple[PidsLimit, ...] = ()
    oom_kills: tuple[OomKills, ...] = ()
    oom_victims: tuple[tuple[int, int], ...] = ()  # (pid, rss bytes) from the kernel's report
    shm: ShmFacts | None = None
    nofile: tuple[int, int] | None = None  # RLIMIT_NOFILE (soft, hard)
    nproc: tuple[int, int, int] | None = None  # RLIMIT_NPROC soft, processes of the uid, uid
    tmpdir: str = ""
    # tempfile's candidates, in its order, and what is wrong with each ("" when usable), where
    # the tree said "No usable temporary directory found in [...]" (see no_usable_tmpdirs).
    tmp_candidates: tuple[tuple[str, str], ...] = ()
    workers: int = 0
    shm_phase: bool = False  # the failure came in the shared-memory phase
    shm_block: int = 0  # that phase's block, bytes


def size(n: int | None) -> str:
    """1.0 MiB-style, for sentences."""
    if n is None:
        return "an unknown amount"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" or value >= 10 else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # not reached


def classify(e: Evidence) -> tuple[str, str]:
    """(cause, sentence) for a failed cycle."""
    for rule in (_memory, _pids, _texts, _nproc, _exits, _states):
        found = rule(e)
        if found is not None:
            return found
    return "unknown", f"no host cause found ({e.reason}: {e.detail})"


# -- host counters ---------------------------------------------------------------------------


def _memory(e: Evidence) -> tuple[str, str] | None:
    """An OOM kill counted in a cgroup of the tree, and a process of the tree that died of
    SIGKILL (or a victim the kernel named): never a SIGKILL alone."""
    hits = [k for k in e.oom_kills if k.kills > 0]
    killed = [x for x in e.exits if x.signal == signal.SIGKILL]
    victims = {pid: rss for pid, rss in e.oom_victims}
    named = [x for x in e.exits if x.pid in victims] or killed
    if not hits and not [x for x in e.exits if x.pid in victims]:
        return None
    if not named:
        return None
    who = named[0]
    where = ""
    if hits:
        group = hits[0]
        where = f": memory limit {size(group.limit_bytes)} of cgroup {group.cgroup}"
    held = victims.get(who.pid)
    held_text = f"; it held {size(held)}" if held is not None else ""
    return (
        "memory_limit",
        f"{who.role} pid {who.pid} was killed by the OOM killer{where}{held_text}",
    )


def _pids(e: Evidence) -> tuple[str, str] | None:
    hits = [p for p in e.pids_limits if p.refused > 0]
    if not hits:
        return None
    p = hits[0]
    return (
        "process_limit",
        f"pids limit of the cgroup {p.cgroup} reached: {p.limit} of {p.limit} "
        f"({p.refused} fork(s) refused during the cycle)",
    )


# -- errors the tree wrote -------------------------------------------------------------------

_ERRNO = re.compile(r"\[Errno (\d+)\]")
_PICKLE = re.compile(
    r"MaybeEncodingError|Can't pickle|cannot pickle|PicklingError|UnpicklingError|"
    r"Error sending result|_handle_results[\s\S]{0,2000}?TypeError"
)
_THREAD = re.compile(r"can't start new thread|Resource temporarily unavailable")
_REBUILD = re.compile(r"_rebuild|__setstate__|sem_unlink|in _cleanup")


def _texts(e: Evidence) -> tuple[str, str] | None:
    for text in e.texts:
        for block in _error_blocks(text):
            found = _one_error(e, block)
            if found is not None:
                return found
    return None


def _error_blocks(text: str) -> list[str]:
    """The text cut into tracebacks (each with its frames), in the order they were written."""
    blocks = re.split(
        r"(?=^Traceback \(most recent call last\):|^Process \S+:$|^\S+:\d+: \w*Warning: )",
        text,
        flags=re.M,
    )
    return [b for b in blocks if b.strip()]


def _one_error(e: Evidence, block: str) -> tuple[str, str] | None:
    if "AF_UNIX path too long" in block:
        return "tmpdir_unusable", _tmpdir_sentence(e.tmpdir)
    if "No usable temporary directory" in block:
        return "tmpdir_unusable", _no_tmpdir_sentence(e.tmp_candidates)
    if _PICKLE.search(block):
        return (
            "unpicklable",
            f"a job's result or exception could not be pickled: {_last_line(block)}",
        )
    numbers = [int(n) for n in _ERRNO.findall(block)]
    for number in numbers:
        found = _errno(e, number, block)
        if found is not None:
            return found
    if "BlockingIOError" in block or _THREAD.search(block):
        return "process_limit", _nproc_sentence(e)
    return None


def _errno(e: Evidence, number: int, block: str) -> tuple[str, str] | None:
    shm = e.shm
    near = block.lower()
    short = shm is None or shm.free_bytes < 1 << 20 or shm.out_of_inodes
    if number == 28 and (short or "sem" in near or e.shm_phase):
        return "shm_full", _shm_full_sentence(shm)
    if number == 30 and shm is not None and shm.read_only:
        return (
            "shm_unavailable",
            f"{shm.path} is mounted read-only: multiprocessing creates its "
            "named semaphores there (remount it read-write)",
        )
    if number == 2 and _REBUILD.search(block):
        return (
            "semaphore_removed",
            "a named semaphore of the pool (/dev/shm/sem.mp-*) was removed "
            "while the cycle ran: something unlinks POSIX IPC objects (systemd-logind "
            "RemoveIPC=yes for a non-system user, or a cleaner of /dev/shm)",
        )
    if number in (2, 13) and shm is not None and not (shm.exists and shm.writable):
        if not shm.exists:
            return (
                "shm_unavailable",
                f"{shm.path} does not exist: multiprocessing needs a tmpfs "
                "there for its named semaphores (mount one, e.g. a container's --shm-size)",
            )
        return (
            "shm_unavailable",
            f"{shm.path} is not writable by pqd's user (permissions): "
            "multiprocessing creates its named semaphores there",
        )
    if number in (24, 23):
        return "open_files_limit", _nofile_sentence(e, number)
    if number == 11:
        return "process_limit", _nproc_sentence(e)
    return None


_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_][\w.]*(?:Error|Exception)\b.*|.*<MaybeEncodingError.*)$"
)


def _last_line(block: str) -> str:
    """The exception line of a traceback (or the block's last line), cut to 300 characters."""
    lines = [line.strip() for line in block.strip().splitlines() if line.strip()]
    errors = [line for line in lines if _EXCEPTION_LINE.match(line)]
    return (errors or lines or [""])[-1][:300]


def _tmpdir_sentence(tmpdir: str) -> str:
    return (
        f"TMPDIR is {len(tmpdir)} characters; AF_UNIX socket paths allow {SUN_PATH_MAX} bytes and "
        f"multiprocessing adds {SOCKET_SUFFIX}: use a TMPDIR of at most "
        f"{SUN_PATH_MAX - SOCKET_SUFFIX} characters"
    )


#: The directories tempfile tries after TMPDIR, TEMP and TMP, before the working directory.
SYSTEM_TMPDIRS = ("/tmp", "/var/tmp", "/usr/tmp")
_NO_USABLE = "No usable temporary directory found in "


def no_usable_tmpdirs(texts: tuple[str, ...]) -> tuple[str, ...]:
    """The candidates of the first "No usable temporary directory found in [...]" in ``texts``:
    CPython's tempfile lists every directory it tried, in its order (TMPDIR, TEMP and TMP where
    set, SYSTEM_TMPDIRS, then the working directory), as the repr of a list."""
    for text in texts:
        start = text.find(_NO_USABLE)
        if start < 0:
            continue
        rest = text[start + len(_NO_USABLE) :]
        end = rest.find("]")
        while rest.startswith("[") and end >= 0:  # a path may hold "]": try each one
            with contextlib.suppress(ValueError, SyntaxError):
                found = ast.literal_eval(rest[: end + 1])
                if isinstance(found, list) and all(isinstance(p, str) for p in found):
                    return tuple(found)
            end = rest.find("]", end + 1)
    return ()


def _no_tmpdir_sentence(candidates: tuple[tuple[str, str], ...]) -> str:
    paths = [path for path, _ in candidates]
    cut = next(
        (i for i in range(len(paths) - 3, -1, -1) if tuple(paths[i : i + 3]) == SYSTEM_TMPDIRS),
        None,
    )
    fix = (
        f"set TMPDIR to a writable directory of at most {SUN_PATH_MAX - SOCKET_SUFFIX} "
        "characters (multiprocessing makes its sockets there)"
    )
    if cut is None:
        return (
            "no usable temporary directory: TMPDIR, /tmp, /var/tmp, /usr/tmp and the working "
            f"directory are all missing or not writable: {fix}"
        )
    variables, rest = candidates[:cut], candidates[cut:]
    # tempfile reads TMPDIR, then TEMP, then TMP: the first one set comes first.
    named = [
        f"{'TMPDIR' if i == 0 else 'TEMP/TMP'} {path} is {problem or 'not usable'}"
        for i, (path, problem) in enumerate(variables)
    ] or ["TMPDIR is not set"]
    others = [
        f"{'the working directory ' if i >= 3 else ''}{path} {problem or 'not usable'}"
        for i, (path, problem) in enumerate(rest)
    ]
    return (
        f"no usable temporary directory: {', '.join(named)}, and no fallback is usable either "
        f"({', '.join(others)}): {fix}"
    )


def _shm_full_sentence(shm: ShmFacts | None) -> str:
    if shm is None:
        return "no space left for a named semaphore in /dev/shm"
    if shm.out_of_inodes:
        return (
            f"{shm.path} has no free inode: {shm.inodes - 1} entries use all {shm.inodes} of "
            f"its nr_inodes, {size(shm.free_bytes)} of {size(shm.size_bytes)} still free (look "
            "for leaked sem.mp-* and psm_* files, or mount it with a larger nr_inodes)"
        )
    return (
        f"{shm.path} is full: {size(shm.size_bytes)} tmpfs, {size(shm.free_bytes)} free "
        "(in a container, raise --shm-size; look for leaked sem.mp-* and psm_* files)"
    )


def _nofile_sentence(e: Evidence, number: int) -> str:
    if number == 23:
        return "the system-wide open file table is full (ENFILE): raise fs.file-max"
    if e.nofile is None:
        return "the open files limit (RLIMIT_NOFILE) was reached"
    soft, hard = e.nofile
    return (
        f"open files limit (RLIMIT_NOFILE) of {soft} reached (hard limit {hard}): a pool of "
        f"{e.workers} workers needs more (raise LimitNOFILE= or ulimit -n)"
    )


def cycle_tasks(workers: int) -> int:
    """About the fewest tasks (processes and threads, as RLIMIT_NPROC counts them) a cycle
    needs: each worker and its death-watch thread, and some ten for the runner's, the Manager's
    and the helpers' processes and threads."""
    return 2 * workers + 10


def _nproc(e: Evidence) -> tuple[str, str] | None:
    """RLIMIT_NPROC too small for the tree, even where nothing said EAGAIN (the Manager's refused
    thread can end as a lost connection)."""
    if e.nproc is None or e.nproc[0] < 0:
        return None
    limit, count, _ = e.nproc
    if count + cycle_tasks(e.workers) < limit:
        return None
    return "process_limit", _nproc_sentence(e)


def _nproc_sentence(e: Evidence) -> str:
    if e.nproc is not None and e.nproc[0] >= 0:
        limit, count, uid = e.nproc
        if count >= limit:
            return f"RLIMIT_NPROC of {limit} reached: {count} processes of uid {uid}"
        if count + cycle_tasks(e.workers) >= limit:
            return (
                f"RLIMIT_NPROC of {limit} for uid {uid} leaves no room: {count} processes and "
                f"threads of that uid now, and a cycle of {e.workers} workers needs about "
                f"{cycle_tasks(e.workers)}"
            )
    return (
        "a fork or a new thread was refused (EAGAIN) and no pids cgroup counted it: check "
        "RLIMIT_NPROC, kernel.threads-max and a container's seccomp profile (clone3)"
    )


# -- how processes ended, and the tree's states ------------------------------------------------


def _exits(e: Evidence) -> tuple[str, str] | None:
    for x in e.exits:
        if x.signal in CRASH_SIGNALS:
            name = signal.Signals(x.signal).name
            short = e.shm is None or e.shm.free_bytes < e.shm_block
            if x.signal == signal.SIGBUS and e.shm_phase and short:
                room = (
                    ""
                    if e.shm is None
                    else (
                        f": {e.shm.path} is a {size(e.shm.size_bytes)} tmpfs, "
                        f"{size(e.shm.free_bytes)} free once the block was gone"
                    )
                )
                return (
                    "shm_full",
                    f"{x.role} pid {x.pid} got SIGBUS writing a {size(e.shm_block)} "
                    f"shared-memory block{room} (in a container, raise --shm-size)",
                )
            return "crashed", f"{x.role} pid {x.pid} was killed by {name} (signal {x.signal})"
    for x in e.exits:
        if x.signal is not None:
            name = signal.Signals(x.signal).name if x.signal in signal.valid_signals() else "?"
            return (
                "killed",
                f"{x.role} pid {x.pid} was killed by {name} (signal {x.signal}) "
                "and no OOM kill was recorded: something outside pqd sent it",
            )
    return None


def _states(e: Evidence) -> tuple[str, str] | None:
    for role, pid, state, wchan in e.states:
        if state == "D":
            where = f", in {wchan}" if wchan else ""
            return (
                "uninterruptible",
                f"{role} pid {pid} was in uninterruptible sleep (state D"
                f"{where}) at the deadline: a frozen cgroup, a hung filesystem or device",
            )
    for role, pid, state, _ in e.states:
        if state in ("T", "t"):
            return (
                "stopped",
                f"{role} pid {pid} was stopped (state {state}) at the deadline: "
                "SIGSTOP, a debugger or a job-control signal",
            )
    return None
