"""Real cgroups for tests: a child of the caller's own cgroup of the hierarchy that has the
controller (v2 where the v2 hierarchy offers it, else the v1 mount of that controller), with
limits set, a command prefix that runs a command inside it, and a teardown that kills whatever is
left in it and removes it, exceptions or not.

Hosts differ (docs/design.md §5: cgroup v2 may be mounted beside v1 controllers): the v2 mount
is found in /proc/self/mountinfo, never assumed, and the caller's place in each hierarchy is read
from /proc/self/cgroup. Standard library only; nothing of pqd is imported.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.wraps import RANK_CGROUP, ConditionError, Wrap

TEARDOWN_SECONDS = 10.0
_names = itertools.count()


@dataclass(frozen=True)
class Hierarchy:
    """Where a controller lives: cgroup ``version`` 1 or 2, its mount point and the caller's own
    cgroup directory in it."""

    version: int
    mount: Path
    own: Path


def _mounts() -> list[tuple[str, str, list[str]]]:
    """(mount point, fs type, super options) of every cgroup mount in our mount namespace."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fstype, _, rest = right.partition(" ")
        if fstype in ("cgroup", "cgroup2"):
            options = rest.split(" ")[-1].split(",")
            found.append((left.split()[4].replace("\\040", " "), fstype, options))
    return found


def _own_paths() -> dict[str, str]:
    """/proc/self/cgroup as {controller or "" for v2: path}."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            paths[name] = path
    return paths


def find_hierarchy(controller: str) -> Hierarchy:
    """The hierarchy to put a ``controller`` child cgroup in: v2 when the caller's own v2 cgroup
    offers the controller (its cgroup.controllers), else the v1 mount of that controller.
    ``controller`` "" means the bare v2 hierarchy (cgroup.freeze, cgroup.kill)."""
    own = _own_paths()
    mounts = _mounts()
    for point, fstype, _ in mounts:
        if fstype == "cgroup2" and "" in own:
            directory = Path(point) / own[""].lstrip("/")
            offered = (directory / "cgroup.controllers").read_text().split()
            if controller == "" or controller in offered:
                return Hierarchy(2, Path(point), directory)
    for point, fstype, options in mounts:
        if fstype == "cgroup" and controller and controller in options and controller in own:
            return Hierarchy(1, Path(point), Path(point) / own[controller].lstrip("/"))
    raise ConditionError(
        f"no cgroup hierarchy offers {controller or 'v2'!r}: mounts "
        f"{[(p, t, o) for p, t, o in mounts]}, /proc/self/cgroup {own}"
    )


def hierarchy_v1(controller: str) -> Hierarchy:
    """The v1 mount of ``controller`` (the freezer's D state exists only there)."""
    own = _own_paths()
    for point, fstype, options in _mounts():
        if fstype == "cgroup" and controller in options and controller in own:
            return Hierarchy(1, Path(point), Path(point) / own[controller].lstrip("/"))
    raise ConditionError(f"no cgroup v1 mount of {controller!r} in /proc/self/mountinfo")


class Cgroup:
    """One child cgroup. ``wrap`` runs a command inside it: a shell that writes its own pid to
    cgroup.procs and execs the command, so everything the command starts is born inside."""

    def __init__(self, hierarchy: Hierarchy, controller: str, path: Path) -> None:
        self.hierarchy = hierarchy
        self.version = hierarchy.version
        self.controller = controller
        self.path = path
        join = f'echo $$ > "{path}/cgroup.procs" && exec "$@"'
        self.wrap = Wrap(RANK_CGROUP, ("sh", "-c", join, "pqd-cond-cgroup"))

    def read(self, name: str) -> str:
        return (self.path / name).read_text().strip()

    def write(self, name: str, value: str) -> None:
        try:
            (self.path / name).write_text(value)
        except OSError as exc:
            raise ConditionError(f"cannot write {value!r} to {self.path / name}: {exc}") from exc

    def keyed(self, name: str) -> dict[str, int]:
        """A flat-keyed file ("oom_kill 1" lines) as a dict; non-numeric lines are left out."""
        values = {}
        for line in self.read(name).splitlines():
            key, _, value = line.partition(" ")
            with contextlib.suppress(ValueError):
                values[key] = int(value)
        return values

    def procs(self) -> list[int]:
        return [int(pid) for pid in self.read("cgroup.procs").split()]

    def move(self, pid: int) -> None:
        self.write("cgroup.procs", str(pid))

    def kill_all(self) -> None:
        """SIGKILL every process in the group: cgroup.kill on v2, else one by one, thawing a v1
        freezer first (a frozen task does not act on SIGKILL until thawed)."""
        if (self.path / "freezer.state").exists():
            self.write("freezer.state", "THAWED")
        if (self.path / "cgroup.kill").exists():
            self.write("cgroup.kill", "1")
            return
        for pid in self.procs():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, seconds: float = TEARDOWN_SECONDS) -> None:
        """Kill what is left, wait until the group is empty, rmdir it (within ``seconds``)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                if self.procs():
                    self.kill_all()
                else:
                    self.path.rmdir()
                    return
            except FileNotFoundError:
                return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise ConditionError(f"could not remove {self.path}: {exc}") from exc
            if time.monotonic() > deadline:
                raise ConditionError(f"{self.path} still holds {self.procs()} after {seconds}s")
            time.sleep(0.02)


def _enable_v2(hierarchy: Hierarchy, controller: str) -> None:
    control = hierarchy.own / "cgroup.subtree_control"
    if controller in control.read_text().split():
        return
    try:
        control.write_text(f"+{controller}")
    except OSError as exc:  # EBUSY: our cgroup has processes and is not the root
        raise ConditionError(
            f"cannot enable {controller} in {control}: {exc} (the caller's cgroup has processes;"
            " run it in a delegated subtree)"
        ) from exc


@contextlib.contextmanager
def child_cgroup(
    controller: str, settings: dict[str, str], hierarchy: Hierarchy | None = None
) -> Iterator[Cgroup]:
    """A fresh child cgroup of the caller's own, with ``settings`` ({file: value}) written in
    order; always killed empty and removed on exit."""
    where = hierarchy or find_hierarchy(controller)
    if where.version == 2 and controller:
        _enable_v2(where, controller)
    path = where.own / f"pqd-cond-{os.getpid()}-{next(_names)}"
    try:
        path.mkdir()
    except OSError as exc:
        raise ConditionError(f"cannot create cgroup {path}: {exc}") from exc
    group = Cgroup(where, controller, path)
    try:
        for name, value in settings.items():
            group.write(name, value)
        yield group
    finally:
        group.remove()
