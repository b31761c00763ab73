"""Headroom gauges (docs/design.md §2): set from the headroom a result carries, kept when a
result has none (a cycle pqd ended itself) or a value could not be read (-1)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from prometheus_client import CollectorRegistry

from pqd.metrics.series import ProbeFacts
from pqd.metrics.writer import PqdMetrics
from tests.helpers.factories import seed_shaped_result, tight_headroom

ROOM = tight_headroom()
EXPECTED = {
    "pqd_shm_size_bytes": 64 << 20,
    "pqd_shm_available_bytes": 3 << 20,
    "pqd_shm_objects": 12,
    "pqd_pids_limit": 2048,
    "pqd_pids_current": 1950,
    "pqd_memory_limit_bytes": 1 << 30,
    "pqd_memory_usage_bytes": 900 << 20,
    "pqd_open_files_limit": 1024,
    "pqd_cpu_quota_cores": 0.5,
    "pqd_cpu_count": 20,
    "pqd_tmpdir_usable": 0,
    "pqd_last_cycle_leaked_shm_objects": 6,
    "pqd_last_cycle_max_open_files": 40,
    "pqd_shared_memory_bytes": 16 << 20,
}


def make() -> tuple[PqdMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    probe = ProbeFacts("default", "forkserver", 4, 3, shared_memory_bytes=16 << 20)
    return PqdMetrics(registry, version="1", probes=[probe], process_collectors=False), registry


def values(registry: CollectorRegistry) -> dict[str, float | None]:
    return {name: registry.get_sample_value(name, {"probe": "default"}) for name in EXPECTED}


def test_every_headroom_gauge_is_set_from_the_result() -> None:
    metrics, registry = make()
    # From start-up, at zero; the block's size from the probe's configuration.
    assert values(registry) == {**dict.fromkeys(EXPECTED, 0.0), "pqd_shared_memory_bytes": 16 << 20}
    metrics.observe_cycle(
        seed_shaped_result(
            headroom=ROOM, leaked_shm_objects=6, max_open_files=40, shared_memory_bytes=16 << 20
        )
    )
    assert values(registry) == EXPECTED


def test_a_result_without_headroom_or_an_unread_value_keeps_the_previous_value() -> None:
    metrics, registry = make()
    metrics.observe_cycle(
        seed_shaped_result(
            headroom=ROOM, leaked_shm_objects=6, max_open_files=40, shared_memory_bytes=16 << 20
        )
    )
    failed = seed_shaped_result(
        success=False, reason="timeout", detail="x", shared_memory_bytes=16 << 20
    )
    metrics.observe_cycle(failed)
    assert values(registry) == EXPECTED
    unread = dataclasses.replace(ROOM, pids_current=-1, memory_usage_bytes=-1, pids_limit=4096)
    metrics.observe_cycle(seed_shaped_result(headroom=unread, shared_memory_bytes=16 << 20))
    assert values(registry) == {**EXPECTED, "pqd_pids_limit": 4096}


def test_a_headroom_that_is_not_finite_is_refused_before_anything_is_written() -> None:
    metrics, registry = make()
    bad = dataclasses.replace(ROOM, cpu_quota_cores=math.nan)
    with pytest.raises(ValueError, match="cpu_quota_cores"):
        metrics.observe_cycle(seed_shaped_result(headroom=bad))
    assert registry.get_sample_value("pqd_cycles_total", {"probe": "default"}) == 0
