"""Fixtures of the supervisor's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pqd.runner.containment import become_child_subreaper
from pqd.supervisor.runners import Runners


@pytest.fixture
def runners() -> Iterator[Runners]:
    """pqd's supervisor in this test process (a child subreaper, as pqd is), closed after."""
    assert become_child_subreaper()
    supervisor = Runners(None)
    yield supervisor
    supervisor.close()
