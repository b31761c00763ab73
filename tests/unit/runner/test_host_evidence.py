"""pqd.runner.host_evidence on real paths and processes: dir_problem (a read-only directory is
made for real in tests/integration/test_causes_once.py, which needs a mount namespace) and the
limits of a process, alive or gone."""

from __future__ import annotations

import resource
import subprocess
from pathlib import Path

from pqd.runner.host_evidence import dir_problem, limits
from tests.helpers.waiting import wait_until


def test_what_keeps_a_directory_from_being_a_temp_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert [dir_problem(str(tmp_path / name)) for name in ("gone", "file", "dangling", "")] == [
        "missing",
        "not a directory",
        "missing",
        "",
    ]


def test_the_limits_of_a_live_process_are_its_own() -> None:
    with subprocess.Popen(["prlimit", "--nofile=40:50", "sleep", "30"]) as child:
        try:
            # prlimit sets the limit, then execs sleep: the soft limit seen is the child's.
            wait_until(lambda: limits(child.pid, 16)[0] == (40, 50), "the child's limits")
            assert limits(child.pid, 16)[0] == (40, 50)
        finally:
            child.kill()


def test_a_gone_process_reads_as_the_soft_limit_it_last_saw_with_ours() -> None:
    child = subprocess.Popen(["true"])
    child.wait()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert limits(child.pid, 16)[0] == (16, hard)
    assert limits(child.pid)[0] == (soft, hard)
