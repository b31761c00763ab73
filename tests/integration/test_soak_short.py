"""The soak of docs/reliability.md, short: a real pqd cycling back to back while scraped every
100 ms; every cycle accounted for, no leak, no failed scrape, no traceback, and RSS growth under
5 MiB for pqd and for each runner that ran past its warm-up (the script's PASS includes it)."""

from __future__ import annotations

import re
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
    assert "| pqd RSS growth after warm-up | " in done.stdout
    assert "| runners seen | " in done.stdout
    assert re.search(r"\| runner \d+: RSS growth after warm-up \| [+-]\d", done.stdout), done.stdout
    assert "NOT met" not in done.stdout
    assert "result: PASS" in done.stdout
