"""Unit tests for pqd.web.history.CycleHistory: plain data, no processes."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pqd.results import CycleResult
from pqd.web.history import CycleHistory
from tests.helpers.factories import seed_shaped_result
from tests.helpers.waiting import run_threads

START = 1_700_000_000.0


def result(
    n: int, *, probe: str = "default", success: bool = True, **overrides: Any
) -> CycleResult:
    """Cycle number ``n`` of ``probe``; it ends at START + n, so a higher n is newer."""
    fields: dict[str, Any] = dict(
        probe=probe,
        cycle_id=f"{probe}-{n:04d}",
        started_at=START + n - 0.5,
        ended_at=START + n,
        duration_seconds=0.5,
        success=success,
        reason=None if success else "timeout",
        detail="ok" if success else "job 3 did not finish within 30s",
        jobs_completed=10 if success else 3,
        jobs_failed=0 if success else 1,
        phase_seconds={"pool_start": 0.1, "jobs": 0.3, "teardown": 0.1},
    )
    return seed_shaped_result(**{**fields, **overrides})


def ids(results: list[CycleResult]) -> list[str]:
    return [r.cycle_id for r in results]


def test_empty_history() -> None:
    h = CycleHistory(5)
    assert h.recent() == []
    assert h.recent("default") == []
    assert h.get("nope") is None


def test_keeps_the_newest_limit_successes() -> None:
    h = CycleHistory(3)
    for n in range(1, 8):
        h.add(result(n))
    assert ids(h.recent("default")) == ["default-0007", "default-0006", "default-0005"]
    assert h.get("default-0004") is None
    assert h.get("default-0005") == result(5)


def test_failures_outlive_a_stream_of_successes() -> None:
    h = CycleHistory(2)
    h.add(result(1, success=False))
    h.add(result(2, success=False))
    h.add(result(3, success=False))  # pushes out failure 1: `limit` failures are kept
    for n in range(4, 104):
        h.add(result(n))
    assert ids(h.recent()) == [
        "default-0103",
        "default-0102",
        "default-0003",
        "default-0002",
    ]
    failed = h.get("default-0002")
    assert failed is not None and not failed.success
    assert h.get("default-0001") is None


def test_recent_is_newest_first_by_ended_at_not_insertion_order() -> None:
    h = CycleHistory(10)
    # Added out of order: a slow failure can be reported after a later success.
    h.add(result(5))
    h.add(result(2, success=False))
    h.add(result(7, success=False))
    h.add(result(3))
    assert ids(h.recent()) == ["default-0007", "default-0005", "default-0003", "default-0002"]


def test_equal_end_times_have_a_stable_order() -> None:
    h = CycleHistory(10)
    h.add(result(1, cycle_id="a"))
    h.add(result(1, cycle_id="b", success=False))
    assert ids(h.recent()) == ["b", "a"]
    assert ids(h.recent()) == ids(h.recent())


def test_recent_filters_by_probe_and_merges_all_probes() -> None:
    h = CycleHistory(5)
    h.add(result(1, probe="a"))
    h.add(result(2, probe="b"))
    h.add(result(3, probe="a", success=False))
    assert ids(h.recent("a")) == ["a-0003", "a-0001"]
    assert ids(h.recent("b")) == ["b-0002"]
    assert ids(h.recent("c")) == []
    assert ids(h.recent()) == ["a-0003", "b-0002", "a-0001"]


def test_limits_are_per_probe() -> None:
    h = CycleHistory(2)
    for n in range(1, 5):
        h.add(result(n, probe="a"))
        h.add(result(n, probe="b"))
    assert ids(h.recent("a")) == ["a-0004", "a-0003"]
    assert ids(h.recent("b")) == ["b-0004", "b-0003"]


def test_recent_returns_a_copy() -> None:
    h = CycleHistory(5)
    h.add(result(1))
    got = h.recent()
    got.clear()
    assert ids(h.recent()) == ["default-0001"]


def test_set_limit_trims_to_the_newest_and_applies_to_new_adds() -> None:
    h = CycleHistory(5)
    for n in range(1, 6):
        h.add(result(n))
        h.add(result(n + 100, success=False))
    h.set_limit(2)
    assert h.limit == 2
    assert ids(h.recent()) == ["default-0105", "default-0104", "default-0005", "default-0004"]
    h.add(result(6))
    assert ids(h.recent("default"))[2:] == ["default-0006", "default-0005"]
    # Growing keeps what is there and lets more in.
    h.set_limit(4)
    for n in range(7, 10):
        h.add(result(n))
    successes = [r for r in h.recent() if r.success]
    assert ids(successes) == ["default-0009", "default-0008", "default-0007", "default-0006"]


def test_set_limit_also_applies_to_probes_seen_later() -> None:
    h = CycleHistory(5)
    h.set_limit(1)
    h.add(result(1, probe="late"))
    h.add(result(2, probe="late"))
    assert ids(h.recent("late")) == ["late-0002"]


def test_forget_probe() -> None:
    h = CycleHistory(5)
    h.add(result(1, probe="a"))
    h.add(result(2, probe="b", success=False))
    h.forget_probe("b")
    h.forget_probe("never-seen")  # no error
    assert ids(h.recent()) == ["a-0001"]
    assert h.get("b-0002") is None


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "3"])
def test_bad_limits_are_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="history limit"):
        CycleHistory(bad)
    h = CycleHistory(3)
    with pytest.raises(ValueError, match="history limit"):
        h.set_limit(bad)
    assert h.limit == 3


def test_concurrent_adds_and_reads_add_up() -> None:
    threads_n, per_thread = 8, 200
    limit = threads_n * per_thread  # large enough that nothing is evicted
    h = CycleHistory(limit)
    barrier = threading.Barrier(threads_n + 1)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                n = t * per_thread + i
                # Two probes and both outcomes, so every deque is contended.
                h.add(result(n, probe=f"p{t % 2}", success=i % 3 != 0))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    def reader() -> None:
        try:
            barrier.wait()
            for _ in range(200):
                listed = h.recent()
                ended = [r.ended_at for r in listed]
                assert ended == sorted(ended, reverse=True)
                h.get("p0-0000")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    threads.append(threading.Thread(target=reader))
    run_threads(threads)
    assert errors == []

    everything = h.recent()
    assert len(everything) == threads_n * per_thread
    assert len({r.cycle_id for r in everything}) == threads_n * per_thread
    per_probe = threads_n // 2 * per_thread
    assert len(h.recent("p0")) == len(h.recent("p1")) == per_probe


def test_concurrent_adds_respect_the_limit() -> None:
    limit, threads_n, per_thread = 7, 6, 300
    h = CycleHistory(limit)
    barrier = threading.Barrier(threads_n)

    def writer(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            h.add(result(t * per_thread + i, success=i % 2 == 0))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(threads_n)]
    run_threads(threads)
    kept = h.recent("default")
    assert sum(r.success for r in kept) == limit
    assert sum(not r.success for r in kept) == limit
