"""Where a probe's processes live, and how all of them are killed (docs/design.md §1a); what
/proc says of each process is pqd.runner.procs.

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
from dataclasses import dataclass
from typing import Final

from pqd.runner.procs import descendants, kill_pids

_PR_SET_CHILD_SUBREAPER: Final = 36


class ContainmentError(Exception):
    """containment = "cgroup" was asked for where no writable cgroup v2 subtree exists."""


#: How much more than pqd a probe's tree offers itself to the OOM killer (proc(5),
#: oom_score_adj, -1000..1000): 500 is half the range, above a like-sized pqd by half the limit.
OOM_SCORE_ADJ_RAISE: Final = 500


def offer_to_the_oom_killer(raise_by: int = OOM_SCORE_ADJ_RAISE) -> int | None:
    """Raise this process's oom_score_adj, which its children inherit: where pqd shares a memory
    limit with its probes (a unit's MemoryMax, a container's), the kernel then takes a probe's
    process before pqd itself, so pqd lives to report the kill (docs/design.md §1a). Raising
    needs no privilege. The value set, or None where it could not be."""
    path = "/proc/self/oom_score_adj"
    try:
        with open(path) as f:
            value = min(1000, int(f.read()) + raise_by)
        with open(path, "w") as f:
            f.write(str(value))
    except (OSError, ValueError):
        return None
    return value


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


def cgroup_parent(mode: str) -> str | None:
    """The parent cgroup directory for probe groups, or None for subreaper containment.

    ``mode`` is the ``containment`` setting: "auto", "cgroup" or "subreaper". Raises
    ContainmentError when "cgroup" cannot be had."""
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


def kill_tree(
    root: int, group: ProbeCgroup | None, *, include_root: bool, spare: frozenset[int] = frozenset()
) -> None:
    """SIGKILL everything of a probe but ``spare``: its cgroup, or the runner's process group and
    every descendant of the runner. The root is killed last, so orphans of the first round still
    re-parent to it (a subreaper) and are found by the next scan, not lost under init. With
    ``spare``, the process group is not signalled as a whole (a spared process is in it)."""
    if group is not None:
        if include_root and not spare:
            group.kill()
            return
        for _ in range(3):
            targets = [p for p in group.pids() if p not in spare and (include_root or p != root)]
            if not targets:
                break
            kill_pids(targets)
        return
    for _ in range(3):
        below = [pid for pid in descendants(root) if pid not in spare]
        if not below:
            break
        kill_pids(below)
    if include_root:
        if not spare:
            with contextlib.suppress(OSError):
                os.killpg(root, signal.SIGKILL)
        kill_pids([root])
