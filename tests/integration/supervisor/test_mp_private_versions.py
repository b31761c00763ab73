"""pqd.runner.mp_private (every reach into multiprocessing's private attributes) on each other
CPython found, as a bare venv: each attribute it lists resolves on real objects (a forkserver
Pool, a SyncManager, the forkserver and resource tracker they start) and the teardown it allows
still works. tests/unit/runner/test_mp_private.py does the same, in more detail, under the
tests' own CPython."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from pqd.supervisor.runner_files import RunnerFiles
from pqd.supervisor.runner_process import runner_command, runner_environment
from tests.helpers.interpreters import REPO, Found, bare_venv, other_cpythons

FOUND = other_cpythons()


@pytest.mark.parametrize(
    "found", FOUND or [None], ids=[f.interpreter.version for f in FOUND] or ["none-found"]
)
def test_every_private_attribute_resolves_and_works(found: Found | None, tmp_path: Path) -> None:
    if found is None:
        pytest.fail("no CPython >= 3.9 other than the tests' own found (pyenv, PATH)")
    python = bare_venv(found.interpreter.path, tmp_path / "venv")
    files = RunnerFiles()
    try:
        where = files.path()
        command = runner_command(python, "tests.helpers.mp_private_check", where, [])
        env = runner_environment({"PYTHONPATH": str(REPO)}, where, os.environ)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    finally:
        files.remove()
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["version"] == found.interpreter.version
    assert report["pqd"].startswith(where), report
    assert report["missing"] == [], f"CPython {report['version']} lacks {report['missing']}"
    assert report["helper_roles"] == ["forkserver", "resource_tracker"], report
    assert report["helpers_are_children"], report
    assert report["worker_runs_jobs"] and report["manager_process_alive"], report
    assert report["teardown_after_a_dead_worker"], report
