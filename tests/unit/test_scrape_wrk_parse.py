"""benchmarks/_scrape_load.parse_wrk: what the scrape benchmark reads from wrk's output, errors
by kind included (the report explains a row's errors by them)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

WRK_WITH_ERRORS = """\
Running 5s test @ http://127.0.0.1:46143/metrics
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    31.10ms    4.20ms  60.00ms   90.00%
  Latency Distribution
     50%   31.10ms
     75%   33.00ms
     90%   36.00ms
     99%   40.80ms
  7566 requests in 5.00s, 116.00MB read
  Socket errors: connect 54622, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 2
Requests/sec:   1513.20
Transfer/sec:     23.20MB
"""


@pytest.fixture
def scrape_load() -> Iterator[ModuleType]:
    # The benchmark scripts import their helpers as top-level modules (they run as scripts).
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import _scrape_load

        yield _scrape_load
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_errors_are_read_by_kind(scrape_load: ModuleType) -> None:
    found = scrape_load.parse_wrk(WRK_WITH_ERRORS)
    assert (found["connect"], found["read"], found["write"], found["timeout"]) == (54622, 3, 0, 1)
    assert found["bad_status"] == 2
    assert found["errors"] == 54622 + 3 + 1 + 2
    assert (found["requests"], found["seconds"], found["rate"]) == (7566, 5.0, 1513.2)
    assert found["p50"] == pytest.approx(0.0311)
    assert found["p99"] == pytest.approx(0.0408)


def test_no_error_lines_means_no_errors(scrape_load: ModuleType) -> None:
    clean = "\n".join(
        line
        for line in WRK_WITH_ERRORS.splitlines()
        if "errors" not in line and "Non-2xx" not in line
    )
    found = scrape_load.parse_wrk(clean)
    assert found["errors"] == 0
    assert found["connect"] == 0
