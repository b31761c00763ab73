"""CycleTree's helper check: a helper is dead only when /proc says it is gone."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from pqd.runner.tree import CycleTree
from tests.helpers import conditions as c


def gone_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize(
    ("alive", "found"),
    [(True, None), (False, "forkserver pid {pid} died")],
    ids=["alive", "gone"],
)
def test_a_helper_is_dead_when_proc_says_so(alive: bool, found: str | None) -> None:
    pid = os.getpid() if alive else gone_pid()
    tree = CycleTree(None)
    tree.helpers = {pid: "forkserver"}
    assert tree.helper_problem() == (found and found.format(pid=pid))


def test_no_descriptor_left_is_the_error_not_a_dead_helper() -> None:
    """Out of descriptors (an open-files limit hit mid-cycle), /proc/PID/stat cannot be opened:
    the live helper is not reported dead; the EMFILE is raised for the cycle to fail with."""
    tree = CycleTree(None)
    tree.helpers = {os.getpid(): "resource_tracker"}
    with c.open_files_left(0), pytest.raises(OSError) as raised:
        tree.helper_problem()
    assert raised.value.errno == errno.EMFILE
    assert tree.helper_problem() is None
