"""Shared test set-up: the directory fault jobs announce themselves in."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.fault_jobs import ANNOUNCE_ENV


@pytest.fixture(scope="session", autouse=True)
def announce_dir() -> Iterator[Path]:
    # Set before any cycle starts, so the forkserver (started once per process) inherits it.
    with tempfile.TemporaryDirectory(prefix="pqd-announce-") as path:
        os.environ[ANNOUNCE_ENV] = path
        yield Path(path)
