"""A probe's ``python`` (docs/design.md §1a) set to each other CPython on the machine, as a fresh
bare venv with nothing installed: the seed's cycle under every start method, `pqd once` and
`pqd run` with pqd_probe_info's interpreter labels, nothing of pqd's installation importable,
and a runner that cannot start is a failed cycle, not a crash."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from pqd.probe import START_METHODS, ProbeConfig
from pqd.supervisor.runner_files import RunnerFiles
from pqd.supervisor.runner_process import runner_command, runner_environment
from pqd.supervisor.runners import Runners
from tests.helpers.interpreters import REPO, Found, bare_venv, other_cpythons
from tests.helpers.pqd_process import running_pqd, sample

FOUND = other_cpythons()
VERSIONS = pytest.mark.parametrize(
    "found", FOUND or [None], ids=[f.interpreter.version for f in FOUND] or ["none-found"]
)


@pytest.fixture(scope="module")
def venv_of(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Found | None], str]:
    """A fresh bare venv of a CPython found, made once per module."""
    made: dict[str, str] = {}

    def get(found: Found | None) -> str:
        if found is None:
            pytest.fail("no CPython >= 3.9 other than the tests' own found (pyenv, PATH)")
        version = found.interpreter.version
        if version not in made:
            where = tmp_path_factory.mktemp(f"bare-{version}") / "venv"
            made[version] = bare_venv(found.interpreter.path, where)
        return made[version]

    return get


def quick(name: str, start_method: str, python: str) -> str:
    return (
        f'[probes.{name}]\nstart_method = "{start_method}"\npython = "{python}"\n'
        'workers = 2\nrounds = 2\ninterval = "1s"\ntimeout = "30s"\n'
    )


@VERSIONS
def test_the_seed_cycle_under_each_start_method(
    found: Found | None, venv_of: Callable[[Found | None], str], runners: Runners
) -> None:
    python = venv_of(found)
    assert found is not None
    for method in START_METHODS:
        result = runners.run_cycle(ProbeConfig(name=method, start_method=method, python=python))
        assert result.success, (method, result.reason, result.detail)
        assert (result.jobs_completed, result.queue_full_events) == (10, 10)
        assert result.leaked_processes == 0
        assert (result.python_implementation, result.python_version) == (
            "cpython",
            found.interpreter.version,
        )
        assert psutil.Process(result.main_pid).cmdline()[0] == python
        for helper in result.helpers_started:  # forkserver and resource tracker: under it too
            assert psutil.Process(helper.pid).cmdline()[0] == python, helper


@VERSIONS
def test_nothing_of_pqds_installation_is_importable(
    found: Found | None, venv_of: Callable[[Found | None], str]
) -> None:
    python = venv_of(found)
    files = RunnerFiles()
    try:
        where = files.path()
        # As a runner is started, this module in place of pqd.runner.main; the repo (which
        # holds tests/, not pqd/) on PYTHONPATH as the per_python runs put it.
        command = runner_command(python, "tests.helpers.import_report", where, [])
        env = runner_environment({"PYTHONPATH": str(REPO)}, where, os.environ)
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    finally:
        files.remove()
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["pqd"].startswith(where + "/pqd/"), report
    assert report["importable"] == [], report
    assert report["main_spec"] == "tests.helpers.import_report", report
    assert found is not None and report["version"] == found.interpreter.version


@VERSIONS
def test_pqd_once_and_pqd_run_show_the_interpreter(
    found: Found | None, venv_of: Callable[[Found | None], str], tmp_path: Path
) -> None:
    python = venv_of(found)
    assert found is not None
    version = found.interpreter.version
    config = "".join(quick(method, method, python) for method in START_METHODS)
    path = tmp_path / "once.toml"
    path.write_text(config)
    once = subprocess.run(
        [sys.executable, "-m", "pqd", "once", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert once.returncode == 0, once.stdout[-3000:] + once.stderr[-2000:]
    assert once.stdout.count(f"python_version: {version}\n") == 3, once.stdout
    assert once.stdout.count("python_implementation: cpython\n") == 3

    with running_pqd(tmp_path, config) as pqd:
        labels = {"python_version": version, "python_implementation": "cpython"}
        pqd.scrape_until(
            lambda text: all(
                sample(text, "pqd_probe_info", probe=m, start_method=m, **labels) == 1
                and sample(text, "pqd_last_cycle_success", probe=m) == 1
                for m in START_METHODS
            ),
            f"a successful cycle of each probe under CPython {version}",
            seconds=120,
        )
        status, page = pqd.get("/probes/spawn")
        assert status == 200 and f"CPython {version} ({python})" in page, page
        status, page = pqd.get("/")
        assert status == 200 and page.count(f"CPython {version}") == 3, page


def test_a_runner_that_cannot_start_is_a_failed_cycle(tmp_path: Path, runners: Runners) -> None:
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'cannot import encodings' >&2\nexit 1\n")
    broken.chmod(0o755)
    result = runners.run_cycle(ProbeConfig(name="broken", python=str(broken), timeout=10.0))
    assert (result.success, result.reason) == (False, "spawn_failed"), result.detail
    assert re.fullmatch(
        rf"starting the runner: runner pid \d+ exited with status 1 under {re.escape(str(broken))}"
        " before it was ready",
        result.detail,
    ), result.detail
    broken.unlink()  # gone after start-up, say uninstalled: still a failed cycle
    again = runners.run_cycle(ProbeConfig(name="broken", python=str(broken), timeout=10.0))
    assert (again.success, again.reason) == (False, "spawn_failed")
    assert "No such file or directory" in again.detail, again.detail


def test_pqd_run_refuses_an_old_python_at_start_up(tmp_path: Path) -> None:
    old = tmp_path / "python3.8"
    old.write_text('#!/bin/sh\necho \'["cpython", [3, 8, 18], "3.8.18"]\'\n')
    old.chmod(0o755)
    config = tmp_path / "pqd.toml"
    config.write_text(f'[probes.app]\npython = "{old}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "pqd", "run", "--config", str(config), "--listen-address", ":0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr
    assert done.stderr == (
        f"pqd: config error: probes.app.python='{old}': is CPython 3.8.18; "
        "a runner needs CPython >= 3.9\n"
    )


@VERSIONS
def test_fork_with_threads_is_counted_and_never_fails_a_cycle(
    found: Found | None, venv_of: Callable[[Found | None], str], runners: Runners
) -> None:
    """3.12+ warns when the runner (which has threads) forks a worker (gh-100228); the warning is
    shown and counted, never hidden, and PYTHONWARNINGS=error does not fail the cycle on it.
    Before 3.12 there is nothing to count."""
    python = venv_of(found)
    assert found is not None
    warns = tuple(map(int, found.minor.split("."))) >= (3, 12)
    for environment in (None, (("PYTHONWARNINGS", "error"),)):
        probe = ProbeConfig(
            name=f"fork-{environment is None}",
            start_method="fork",
            python=python,
            environment=environment,
        )
        result = runners.run_cycle(probe)
        assert result.success, (environment, result.reason, result.detail, result.stderr)
        counted = result.warnings.get("fork_with_threads", 0)
        # The Manager and each worker started: one warning each.
        assert (counted >= probe.workers + 1) if warns else counted == 0, (counted, result.stderr)
        if warns:
            assert "is multi-threaded, use of fork() may lead to deadlocks" in result.stderr
