"""The soak of docs/reliability.md, short: a real pqd cycling back to back while scraped every
100 ms; every cycle accounted for, no leak, no failed scrape, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def test_short_soak() -> None:
    done = subprocess.run(
        [sys.executable, str(SOAK), "--cycles", "150"],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert "| every cycle accounted for | yes |" in done.stdout
    assert "| leaked processes (leak failures) | 0 |" in done.stdout
    assert "| tracebacks in the log | 0 |" in done.stdout
    assert "result: PASS" in done.stdout
