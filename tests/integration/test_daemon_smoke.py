"""One real `pqd run` under whatever Python runs the tests: it serves a successful cycle of each
start method with pqd_build_info naming that Python, and stops on SIGTERM with status 0.
`make test-daemon-pythons` runs it (with the unit tests) under CPython 3.12 and 3.13 too."""

from __future__ import annotations

import platform
from pathlib import Path

from pqd.probe import START_METHODS
from tests.helpers.configs import quick_probe
from tests.helpers.pqd_process import PqdProcess, sample


def test_pqd_run_serves_successful_cycles_and_stops(tmp_path: Path) -> None:
    config = "".join(quick_probe(method, method) for method in START_METHODS)
    pqd = PqdProcess(tmp_path, config).wait_ready()
    try:
        text = pqd.scrape_until(
            lambda t: all(sample(t, "pqd_last_cycle_success", probe=m) == 1 for m in START_METHODS),
            "a successful cycle of each probe",
            seconds=120,
        )
        version = platform.python_version()
        assert sample(text, "pqd_build_info", python_version=version) == 1, text[:2000]
        for method in START_METHODS:  # pqd's own interpreter, as no probe sets python
            assert sample(text, "pqd_probe_info", probe=method, python_version=version) == 1
    finally:
        code = pqd.stop()
    assert code == 0, pqd.log_text()[-2000:]
