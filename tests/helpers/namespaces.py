"""Private mount namespaces for tests: a /dev/shm that is small, full, read-only, absent or
mode 000, and temp dirs that are read-only, all seen only by the wrapped command and its
descendants (``unshare -m --propagation private``), so the host's /dev/shm and /tmp, which other
processes share, are never touched.

The mounts die with the namespace's last process. The teardown makes sure that happens: every
namespace a wrapped command created records its id in the condition's state directory, and on
exit every process still in one of them is SIGKILLed. From outside, a namespace's files are
reached through /proc/PID/root of a process in it (``shm_dir``). Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.helpers.wraps import RANK_NAMESPACE, ConditionError, Wrap

TEARDOWN_SECONDS = 10.0
#: setpriv arguments that leave uid 0 but take away what lets root ignore file modes.
NO_DAC_OVERRIDE = (
    "setpriv",
    "--bounding-set=-dac_override,-dac_read_search,-fowner",
    "--inh-caps=-dac_override,-dac_read_search,-fowner",
    "--",
)
#: Device nodes a Python process needs in a /dev of its own (name, major, minor).
DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9))


def pids_in_namespaces(namespaces: set[str]) -> list[int]:
    """Every process whose mount namespace ("mnt:[N]") is one of ``namespaces``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "ns/mnt") in namespaces:
                    found.append(int(entry.name))
    return found


class MountNamespace:
    """What a private mount namespace condition gives a test: ``wrap`` for the command,
    ``pids()`` of the processes in the namespaces it created, ``shm_dir(pid)``."""

    def __init__(self, state: Path, steps: Sequence[str], exec_prefix: Sequence[str]) -> None:
        self.state = state
        record = f"readlink /proc/self/ns/mnt >> {shlex.quote(str(state / 'ns'))}"
        tail = " ".join(shlex.quote(arg) for arg in exec_prefix)
        # The id is recorded once the mounts are in place: a process listed by pids() sees
        # the condition, never the host's files it hides.
        script = " && ".join([*steps, record, f'exec {tail} "$@"'.replace("  ", " ")])
        self.script = script
        self.wrap = Wrap(
            RANK_NAMESPACE,
            ("unshare", "-m", "--propagation", "private", "sh", "-c", script, "pqd-cond-ns"),
        )

    def namespaces(self) -> set[str]:
        path = self.state / "ns"
        return set(path.read_text().split()) if path.exists() else set()

    def pids(self) -> list[int]:
        """Every process in one of the namespaces this condition's commands created."""
        return pids_in_namespaces(self.namespaces())

    def shm_dir(self, pid: int) -> Path:
        """/dev/shm as the process ``pid`` of this condition sees it, from outside its
        namespace; refuses the host's own (a process not yet, or not, in the condition)."""
        path = Path(f"/proc/{pid}/root/dev/shm")
        if pid not in self.pids() or os.stat(path).st_dev == os.stat("/dev/shm").st_dev:
            raise ConditionError(f"pid {pid} does not see this condition's /dev/shm")
        return path

    def kill_all(self, seconds: float = TEARDOWN_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while pids := self.pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise ConditionError(f"processes {pids} outlived the mount namespace condition")
            time.sleep(0.02)


@contextlib.contextmanager
def mount_namespace(
    steps: Sequence[str], exec_prefix: Sequence[str] = (), prefix: str = "pqd-cond-ns-"
) -> Iterator[MountNamespace]:
    """A private mount namespace per wrapped command, set up by the shell ``steps`` (joined
    with &&: a failing step fails the command, with the shell's message on its stderr)."""
    # Not below /tmp: a condition may make /tmp read-only before the id is recorded.
    run = "/run" if os.access("/run", os.W_OK) else None
    state = Path(tempfile.mkdtemp(prefix=prefix, dir=run))
    namespace = MountNamespace(state, steps, exec_prefix)
    try:
        yield namespace
    finally:
        try:
            namespace.kill_all()
        finally:
            shutil.rmtree(state, ignore_errors=True)


def _dev_steps() -> list[str]:
    """A /dev of its own with no shm in it: devtmpfs is shared with the host, so /dev/shm is
    never removed, only hidden under a fresh tmpfs."""
    steps = ["mount -t tmpfs -o size=64k,mode=755 pqd-cond-dev /dev"]
    for name, major, minor in DEVICES:
        steps.append(f"mknod -m 666 /dev/{name} c {major} {minor}")
    steps.append("ln -s /proc/self/fd /dev/fd")
    return steps


def shm_steps(
    size: str = "64k",
    *,
    fill: bool = False,
    read_only: bool = False,
    absent: bool = False,
    mode: int | None = None,
) -> list[str]:
    """Shell steps that give /dev/shm its condition inside a private mount namespace."""
    if absent:
        return _dev_steps()
    steps = [f"mount -t tmpfs -o size={shlex.quote(size)},mode=1777 pqd-cond-shm /dev/shm"]
    if fill:  # cat stops at ENOSPC; the tmpfs is then full to the last page
        steps.append("{ cat /dev/zero > /dev/shm/pqd-cond-fill 2>/dev/null || true; }")
    if mode is not None:
        steps.append(f"chmod {mode:o} /dev/shm")
    if read_only:
        steps.append("mount -o remount,ro /dev/shm")
    return steps


@contextlib.contextmanager
def private_shm(
    size: str = "64k",
    *,
    fill: bool = False,
    read_only: bool = False,
    absent: bool = False,
    mode: int | None = None,
) -> Iterator[MountNamespace]:
    """A /dev/shm of the command's own: a tmpfs of ``size`` ("64k", "1m"), optionally
    ``fill``ed to the last byte, remounted ``read_only``, ``absent`` (a /dev without shm) or of
    ``mode`` (0 for no access). With ``mode``, the command runs as uid 0 without
    CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_FOWNER, so the mode binds it (root ignores
    modes otherwise); it still owns the files root owns, so the interpreter under /root (0700)
    stays reachable, which an unprivileged uid's would not."""
    steps = shm_steps(size, fill=fill, read_only=read_only, absent=absent, mode=mode)
    with mount_namespace(steps, NO_DAC_OVERRIDE if mode is not None else ()) as namespace:
        yield namespace


def read_only_steps(paths: Sequence[Path | str]) -> list[str]:
    """Shell steps that make each of ``paths`` a read-only bind mount of itself (EROFS even
    for root)."""
    steps = []
    for path in paths:
        quoted = shlex.quote(str(path))
        steps.append(f"mount --bind {quoted} {quoted}")
        steps.append(f"mount -o remount,bind,ro {quoted}")
    return steps
