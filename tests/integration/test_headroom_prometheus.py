"""The pids alert in a real Prometheus, for real (docs/design.md §2, "Headroom"): `pqd run` in
a pids cgroup whose limit sits just above what its cycles need, scraped by Prometheus with
deploy/prometheus's rules. PqdPidsNearLimit fires while every cycle still succeeds and no fork
has been refused; then, with the limit below the need, cycles fail with the process_limit cause.

The rules are loaded unchanged except PqdPidsNearLimit's `for:`, cut from 5m to 5s so that the
test need not wait five minutes (its edges are pinned by the promtool tests)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import conditions as c
from tests.helpers.pqd_process import running_pqd, sample
from tests.helpers.prometheus_process import PROMETHEUS_DIR, running_prometheus
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

PQD = [sys.executable, "-m", "pqd"]
PROBE = '[probes.p]\ninterval = "1s"\ntimeout = "20s"\njob_pause = "0s"\n'
#: Threads of a ballast process in the cgroup: the application's tasks, so that what pqd's own
#: cycles add is a small share of the limit.
BALLAST_THREADS = 600
BALLAST = (
    "import threading, time\n"
    f"for _ in range({BALLAST_THREADS}):\n"
    "    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
    "time.sleep(3600)\n"
)
#: Above the highest pids.current seen during cycles: room for what a 2 ms sampler misses.
MARGIN = 20


def rules_with_short_pids_window(tmp: Path) -> Path:
    for name in ("pqd-rules.yml", "pqd-alerts.yml"):
        shutil.copy(PROMETHEUS_DIR / name, tmp / name)
    alerts = tmp / "pqd-alerts.yml"
    text = alerts.read_text()
    start = text.index("- alert: PqdPidsNearLimit")
    head, tail = text[:start], text[start:]
    tail, count = re.subn(r"for: 5m", "for: 5s", tail, count=1)
    assert count == 1, "PqdPidsNearLimit has no for: 5m"
    alerts.write_text(head + tail)
    return tmp


def pids_samples(group: c.Cgroup, seconds: float) -> list[int]:
    """pids.current every 2 ms for ``seconds`` (cycles run every second)."""
    found = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found.append(int(group.read("pids.current")))
        time.sleep(0.002)
    return found


def firing(prometheus_query: object, expr: str) -> list[dict[str, object]]:
    answer = prometheus_query(expr)  # type: ignore[operator]
    return list(answer["data"]["result"])


def test_pids_alert_fires_before_any_cycle_fails_then_the_cause_is_process_limit(
    tmp_path: Path,
) -> None:
    for part in ("pqd", "rules", "prometheus"):
        (tmp_path / part).mkdir()
    with c.pids_cgroup("max") as group:
        ballast = subprocess.Popen(c.command([sys.executable, "-c", BALLAST], group.wrap))
        try:
            wait_until(
                lambda: int(group.read("pids.current")) > BALLAST_THREADS, "the ballast's threads"
            )
            with running_pqd(
                tmp_path / "pqd",
                PROBE,
                command=c.command(PQD, group.wrap),
                env=c.environment(group.wrap),
            ) as pqd:
                pqd.scrape_until(
                    lambda t: (sample(t, "pqd_cycles_total", probe="p") or 0) >= 2,
                    "two cycles",
                )
                seen = pids_samples(group, 3.0)
                limit = max(seen) + MARGIN
                group.write("pids.max", str(limit))
                refused = group.keyed("pids.events").get("max", 0)
                rules = rules_with_short_pids_window(tmp_path / "rules")
                with running_prometheus(
                    tmp_path / "prometheus", f"127.0.0.1:{pqd.port}", rules_dir=rules
                ) as prometheus:
                    alert = wait_until(
                        lambda: firing(
                            prometheus.query,
                            'ALERTS{alertname="PqdPidsNearLimit", alertstate="firing", probe="p"}',
                        ),
                        "PqdPidsNearLimit firing",
                        90,
                    )
                    text = pqd.scrape()
                    # Before any cycle failed, and before the kernel refused a single task.
                    assert sample(text, "pqd_cycles_total", probe="p") >= 3  # type: ignore[operator]
                    failures = [
                        sample(text, "pqd_cycle_failures_total", probe="p", reason=r) or 0
                        for r in ("timeout", "worker_died", "manager_died", "spawn_failed")
                    ]
                    assert failures == [0, 0, 0, 0], text
                    assert group.keyed("pids.events").get("max", 0) == refused
                    assert sample(text, "pqd_pids_limit", probe="p") == limit
                    current = sample(text, "pqd_pids_current", probe="p")
                    assert current is not None and 0.9 * limit < current < limit
                    assert alert[0]["metric"]["instance"] == f"127.0.0.1:{pqd.port}"
                # Below the need: the cycles that follow fail, and say why.
                group.write("pids.max", str(min(seen) + 4))
                pqd.scrape_until(
                    lambda t: (
                        (
                            sample(
                                t,
                                "pqd_cycle_failure_causes_total",
                                probe="p",
                                cause="process_limit",
                            )
                            or 0
                        )
                        >= 1
                    ),
                    "a cycle failed with cause process_limit",
                    60,
                )
                assert group.keyed("pids.events").get("max", 0) > refused
                group.write("pids.max", "max")  # let pqd stop cleanly
        finally:
            ballast.kill()
            ballast.wait(10)
