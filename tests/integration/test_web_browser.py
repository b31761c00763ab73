"""The landing page and a trace page in a real browser (Debian's headless Chromium)."""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

from tests.integration.pqd_process import running_pqd, sample

HOSTILE = "<script>alert(1)</script>"
CONFIG = f"""
[probes.'{HOSTILE}']
interval = "1s"
workers = 2
"""


def chromium(tmp_path: Path, *args: str) -> str:
    binary = shutil.which("chromium")
    assert binary, "chromium is installed by `make test` (Debian package chromium)"
    done = subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_landing_and_trace_pages_render_and_escape(tmp_path: Path) -> None:
    with running_pqd(tmp_path, CONFIG) as pqd:
        pqd.scrape_until(
            lambda t: (sample(t, "pqd_cycles_total", probe=HOSTILE) or 0) >= 2, "two cycles"
        )
        landing = chromium(tmp_path, "--dump-dom", pqd.url("/"))
        links = re.findall(r'href="(/cycles/[^"]+)"', landing)
        assert links, landing
        trace = chromium(tmp_path, "--dump-dom", pqd.url(html.unescape(links[0])))
        chromium(
            tmp_path,
            f"--screenshot={tmp_path / 'landing.png'}",
            "--window-size=1280,900",
            pqd.url("/"),
        )

    # The hostile probe name is text in the rendered DOM, never an element.
    assert html.escape(HOSTILE, quote=False) in landing
    assert HOSTILE not in landing
    assert "<script" not in landing.lower()
    assert len(links) >= 2  # the recent cycles, each linking to its trace
    assert "Recent cycles" in landing
    assert "count(10)" in trace
    assert "Full q !!!" in trace
    assert "<script" not in trace.lower()
    assert (tmp_path / "landing.png").stat().st_size > 10_000
