"""Each benchmark script still runs: a --quick run (tiny sizes) exits 0 and prints its table.

No figure is checked here: timings belong in docs/benchmarks.md, not in assertions.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"

SCRIPTS = {
    "overhead.py": "## Instrumentation overhead",
    "cycle_cost.py": "## Steady-state cycle cost",
    "idle.py": "## Idle footprint",
    "scrape.py": "## Scrape /metrics",
    "scaling.py": "## Scaling with pool size",
    "wakeups.py": "## Wake-ups of an idle pqd",
    "headroom.py": "## Headroom reading, per call",
    "hostile_config.py": "## Reading a hostile config file",
    "helper_floor.py": "## The floor of a warm probe's interpreters",
}
#: More that a script must print.
ALSO = {
    # pqd -> runner -> forkserver, resource tracker (docs/design.md §1a): each process's memory.
    "idle.py": ("## Idle footprint per process", "| runner ", "| forkserver ", "target runner USS"),
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_benchmark_runs_quick(script: str) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr}"
    assert SCRIPTS[script] in done.stdout, done.stdout
    assert "| " in done.stdout  # a table row
    for text in ALSO.get(script, ()):
        assert text in done.stdout, done.stdout


def test_every_benchmark_script_is_run_by_a_smoke_test() -> None:
    """A new script in benchmarks/ is listed here (or, for the soak, run by its own short test:
    tests/integration/test_soak_short.py), so none can rot unnoticed."""
    scripts = {p.name for p in BENCHMARKS.glob("*.py") if not p.name.startswith("_")}
    assert scripts == {*SCRIPTS, "soak.py"}
