"""Fixtures of the supervisor's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pqd.runner.containment import become_child_subreaper
from pqd.supervisor.runners import Runners
from tests.helpers import fault_jobs


@pytest.fixture
def runners() -> Iterator[Runners]:
    """pqd's supervisor in this test process (a child subreaper, as pqd is), closed after."""
    assert become_child_subreaper()
    supervisor = Runners(None)
    yield supervisor
    supervisor.close()


@pytest.fixture
def fault_runners() -> Iterator[Runners]:
    """The supervisor with runners whose producer job is the fault_jobs job named by
    tests.helpers.fault_runner.PRODUCER_ENV (set by the test), closed after."""
    assert become_child_subreaper()
    supervisor = Runners(None, runner_module="tests.helpers.fault_runner")
    yield supervisor
    supervisor.close()


@pytest.fixture
def announce(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the fault jobs write ``<pid>.busy`` while they run."""
    directory = tmp_path / "announce"
    directory.mkdir()
    monkeypatch.setenv(fault_jobs.ANNOUNCE_ENV, str(directory))
    return directory
