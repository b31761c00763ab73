"""How a condition reaches a command: a ``Wrap`` is a command prefix (and environment) that makes
whatever runs after it run inside the condition. Wraps compose by rank, outermost first:

1. joining a cgroup (a shell that writes its pid to cgroup.procs, then execs);
2. a private mount namespace (``unshare -m``, a shell that mounts, then execs);
3. resource limits (``prlimit``);
4. identity and capabilities (``setpriv``), innermost, because a shell whose real and effective
   uids differ drops privileges (dash and bash both do): nothing but C programs and the command
   itself may run after it. The interpreter must be given by its real path, not a pyenv shim
   (a bash script).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

RANK_CGROUP = 0
RANK_NAMESPACE = 1
RANK_LIMIT = 2
RANK_IDENTITY = 3


class ConditionError(AssertionError):
    """A condition could not be created (or undone); the test that asked for it fails with this
    reason. An AssertionError, so pytest reports it as a failure, never a skip."""


@dataclass(frozen=True)
class Wrap:
    """A command prefix of one rank (above) and the environment it needs."""

    rank: int
    prefix: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


def command(cmd: Sequence[str], *wraps: Wrap) -> list[str]:
    """``cmd`` inside every wrap, ordered by rank (stable within a rank)."""
    argv: list[str] = []
    for wrap in sorted(wraps, key=lambda w: w.rank):
        argv.extend(wrap.prefix)
    return [*argv, *cmd]


def environment(*wraps: Wrap, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (os.environ) with every wrap's variables; PYTHONPATH entries are prepended."""
    env = dict(os.environ if base is None else base)
    for wrap in wraps:
        for key, value in wrap.env:
            if key == "PYTHONPATH" and env.get(key):
                value = f"{value}{os.pathsep}{env[key]}"
            env[key] = value
    return env


def run(
    cmd: Sequence[str],
    *wraps: Wrap,
    timeout: float = 120.0,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` inside ``wraps`` to the end (text output captured, no check)."""
    return subprocess.run(
        command(cmd, *wraps),
        env=environment(*wraps, base=env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


def proc_state(pid: int) -> str:
    """The state letter of /proc/PID/stat (R, S, D, T, t, Z, ...); "" when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[0]
