"""Faults inside a running process tree, and the host's evidence of them: pool workers that
crash, run out of memory, stop or return what cannot be pickled (through the worker_hook
directory's sitecustomize), named semaphores removed under a running cycle (as systemd-logind's
RemoveIPC=yes does), a filesystem filled from outside, and the kernel log since a point in time.
Standard library only; nothing of pqd is imported.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.wraps import RANK_LIMIT, ConditionError, Wrap

HOOK_PATH = Path(__file__).resolve().parent / "worker_hook"
FAULTS = frozenset(
    {
        "segv",
        "bus",
        "abrt",
        "oom",
        "sleep",
        "stop",
        "exit",
        "unpicklable_result",
        "unpicklable_error",
        "leave_semaphores",
    }
)


class WorkerHook:
    """Pool workers of any command run with ``wrap`` announce themselves and take the faults
    queued with ``add``. Needs an interpreter started without -I/-E/-S (pqd's runner and every
    multiprocessing child of it are)."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.wrap = Wrap(
            RANK_LIMIT, (), (("PYTHONPATH", str(HOOK_PATH)), ("PQDCOND_HOOK_DIR", str(directory)))
        )
        self._queued = 0

    def add(self, fault: str) -> None:
        """Queue one fault ("segv", "oom 300000000", "sleep 20", ...): the next job to start
        in any pool worker takes it."""
        self._check(fault)
        token = self.dir / f"fault-{self._queued:04d}"
        self._queued += 1
        partial = token.with_suffix(".tmp")
        partial.write_text(fault)
        partial.rename(token)  # whole, or not there

    def every_job(self, fault: str | None) -> None:
        """Every job from now on does ``fault`` too (``"leave_semaphores 1"``), until it is
        replaced, or removed with None."""
        token = self.dir / "every-job"
        if fault is None:
            token.unlink(missing_ok=True)
            return
        self._check(fault)
        partial = token.with_suffix(".tmp")
        partial.write_text(fault)
        partial.rename(token)  # whole, or not there

    def _check(self, fault: str) -> None:
        if fault.partition(" ")[0] not in FAULTS:
            raise ConditionError(f"unknown fault {fault!r}; one of {sorted(FAULTS)}")

    def _pids(self, prefix: str) -> list[int]:
        return sorted(
            int(p.name.rsplit("-", 1)[1]) for p in self.dir.iterdir() if p.name.startswith(prefix)
        )

    def workers(self) -> list[int]:
        """Every pool worker that started, in pid order."""
        return self._pids("worker-")

    def busy(self) -> list[int]:
        """The workers running a job now."""
        return self._pids("busy-")

    def claimed(self) -> list[int]:
        """The workers that took a fault."""
        return self._pids("claimed-")


@contextlib.contextmanager
def worker_hook() -> Iterator[WorkerHook]:
    directory = Path(tempfile.mkdtemp(prefix="pqd-cond-hook-"))
    directory.chmod(0o777)  # a worker under another uid announces itself too
    try:
        yield WorkerHook(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class SemaphoreReaper:
    """Removes every entry of ``directory`` matching ``pattern`` (multiprocessing's named
    semaphores are ``sem.mp-*``) as soon as it appears, from a thread, until stopped: what
    RemoveIPC=yes does at logout, made to land inside a running cycle. Point it only at a
    private /dev/shm (namespaces.MountNamespace.shm_dir): the host's is shared."""

    def __init__(self, directory: Path, pattern: str = "sem.mp-*", interval: float = 0.002):
        self.directory = directory
        self.pattern = pattern
        self.interval = interval
        self.removed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="semaphore-reaper", daemon=True)

    def sweep(self) -> list[str]:
        """One pass: remove what matches now; return the names removed."""
        gone = []
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            for name in os.listdir(self.directory):
                if fnmatch.fnmatch(name, self.pattern):
                    with contextlib.suppress(FileNotFoundError):
                        (self.directory / name).unlink()
                        gone.append(name)
        self.removed.extend(gone)
        return gone

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sweep()

    def __enter__(self) -> SemaphoreReaper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def fill(directory: Path, leave: int = 0, name: str = "") -> Path:
    """Fill the filesystem of ``directory`` with one file until ENOSPC, then give back
    ``leave`` bytes (rounded to the filesystem's blocks). Returns the file. A ``name`` of its
    own leaves the earlier fill files alone (this one takes only what is free now)."""
    path = directory / f"pqd-cond-fill-{os.getpid()}{name}"
    chunk = b"\0" * 4096
    with path.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
        if leave:
            f.truncate(max(0, f.tell() - leave))
    return path


@dataclass(frozen=True)
class Space:
    size: int
    available: int


def space(path: Path) -> Space:
    """statvfs of the filesystem ``path`` is on, in bytes."""
    st = os.statvfs(path)
    return Space(st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize)


class KernelLog:
    """The kernel log (/dev/kmsg) from the moment it was opened: OOM kills ("Memory cgroup out
    of memory: Killed process N (…)"), user-space faults ("segfault at …", "traps: …")."""

    def __init__(self) -> None:
        try:
            self._fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise ConditionError(f"cannot read the kernel log /dev/kmsg: {exc}") from exc
        os.lseek(self._fd, 0, os.SEEK_END)
        self.messages: list[str] = []

    def read(self) -> list[str]:
        """Every record logged since opening (each record's text, without its header)."""
        while True:
            try:
                record = os.read(self._fd, 8192).decode(errors="replace")
            except BlockingIOError:
                return self.messages
            except BrokenPipeError:  # records overwritten before we read them: go on
                continue
            self.messages.append(record.partition(";")[2].rstrip("\n"))

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> KernelLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
