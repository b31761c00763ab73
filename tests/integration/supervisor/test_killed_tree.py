"""What pqd's kill of a failed cycle's tree leaves on the host (docs/design.md §1a): none of
the cycle's named semaphores in /dev/shm. Real runners whose producer
sleeps past the deadline (tests.helpers.fault_runner), so pqd, not the runner, kills the tree."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pqd.probe import ProbeConfig
from pqd.runner.headroom import MP_SHM_PREFIXES
from pqd.supervisor.runners import Runners
from tests.helpers.fault_runner import PRODUCER_ENV
from tests.helpers.interpreters import probe_fields
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.per_python
TIMEOUT = 3.0
SHM = Path("/dev/shm")


def mp_names() -> set[str]:
    return {name for name in os.listdir(SHM) if name.startswith(MP_SHM_PREFIXES)}


def probe(start_method: str) -> ProbeConfig:
    return ProbeConfig(
        name=f"killed-{start_method}",
        start_method=start_method,
        workers=2,
        rounds=1,
        timeout=TIMEOUT,
        **probe_fields(),
    )


# Not "fork": a fork pool's semaphores are unlinked as they are made (CPython's
# multiprocessing.synchronize, unlink_now), so there is nothing to leave.
@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_a_killed_cycle_leaves_none_of_its_semaphores_in_dev_shm(
    fault_runners: Runners,
    announce: Path,
    monkeypatch: pytest.MonkeyPatch,
    start_method: str,
) -> None:
    monkeypatch.setenv(PRODUCER_ENV, "sleeping_producer")
    before = mp_names()
    seen: list[set[str]] = []

    def watch() -> None:
        # The condition: the cycle's pool has named semaphores while its job sleeps.
        seen.append(wait_until(lambda: mp_names() - before, "the cycle's semaphores", 30.0))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    result = fault_runners.run_cycle(probe(start_method))
    watcher.join(30)

    assert result.reason == "timeout", result.detail
    assert result.detail.endswith("pqd killed the tree"), result.detail
    assert seen and seen[0], "the cycle made no named semaphore: nothing was tested"
    left = sorted(mp_names() - before)
    assert left == [], f"{len(left)} of the killed cycle's objects left in /dev/shm: {left}"
    # The resource tracker's report of what it cleaned is the kill's doing, not the cycle's.
    assert "leaked_objects" not in result.warnings, result.warnings
    assert result.duration_seconds <= TIMEOUT + 1.0, result.duration_seconds
