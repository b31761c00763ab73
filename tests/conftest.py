"""Shared test set-up: the directory fault jobs announce themselves in, and the probe python of
a per_python run (tests/helpers/interpreters.py)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.fault_jobs import ANNOUNCE_ENV
from tests.helpers.interpreters import PROBE_PYTHON_ENV, PROBE_VENV_ENV, bare_venv, pqd_environ


@pytest.fixture(scope="session", autouse=True)
def announce_dir() -> Iterator[Path]:
    # Set before any cycle starts, so the forkserver (started once per process) inherits it.
    with tempfile.TemporaryDirectory(prefix="pqd-announce-") as path:
        os.environ[ANNOUNCE_ENV] = path
        yield Path(path)


@pytest.fixture(scope="session", autouse=True)
def probe_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """With PQDTEST_PROBE_PYTHON set (``python -m tests.helpers.interpreters``): a fresh bare
    venv of that CPython, which the per_python tests give their probes (in-process through
    interpreters.probe_fields, `pqd` processes through PQD_PYTHON and PQD_ENVIRONMENT)."""
    base = os.environ.get(PROBE_PYTHON_ENV)
    if not base:
        yield None
        return
    venv = bare_venv(base, tmp_path_factory.mktemp("probe-python") / "venv")
    os.environ[PROBE_VENV_ENV] = venv
    os.environ.update(pqd_environ())
    yield venv


def pytest_report_header(config: pytest.Config) -> str:
    base = os.environ.get(PROBE_PYTHON_ENV)
    return "probes' python: " + (f"a bare venv of {base}" if base else "pqd's own")
