"""Headroom as people read it: ``pqd once``'s headroom_* lines after the summary and the
/probes/NAME section, from the latest cycle that carries one (docs/design.md §2)."""

from __future__ import annotations

import re

from pqd.trace import render_headroom
from pqd.web.app import ProbeView
from tests.helpers.factories import tight_headroom
from tests.helpers.web import Fake, get, make_cycle, make_state

TIGHT = tight_headroom()


def test_once_prints_one_line_per_resource_with_used_limit_and_source() -> None:
    result = make_cycle(headroom=TIGHT, leaked_shm_objects=6, max_open_files=40)
    assert render_headroom(result) == [
        "headroom_shm: 3145728 of 67108864 bytes free (4.7%), 12 entries, 6 left by this cycle",
        "headroom_pids: 1950 of 2048 (95.2%) (cgroup v2 /sys/fs/cgroup/app)",
        "headroom_memory: 943718400 of 1073741824 bytes (87.9%)"
        " (cgroup v1 /sys/fs/cgroup/memory/app)",
        "headroom_open_files: 40 of 1024 (most in one process of the cycle)",
        "headroom_cpu: Pool() starts 20 workers for 0.5 cores (cgroup v1 /sys/fs/cgroup/cpu/app)",
        "headroom_tmpdir: NOT usable: binding 117-character socket path: AF_UNIX path too long"
        f" ({TIGHT.tmpdir})",
    ]
    assert render_headroom(make_cycle()) == []  # a cycle pqd ended itself has none


def test_probe_page_shows_the_latest_cycle_s_headroom() -> None:
    older = make_cycle(
        probe="p", cycle_id="old", ended_at=1_700_000_001.0, headroom=tight_headroom(cpu_count=3)
    )
    newer = make_cycle(
        probe="p",
        cycle_id="new",
        started_at=1_700_000_010.0,
        ended_at=1_700_000_011.0,
        headroom=TIGHT,
        max_open_files=40,
    )
    killed = make_cycle(probe="p", cycle_id="killed", ended_at=1_700_000_020.0)
    state = make_state(probes=(ProbeView("p", (("schedule", "every 15s"),)),))
    page = get(Fake([older, newer, killed], state=state).app(), "/probes/p").text
    section = page[page.index('<h3 id="headroom">') : page.index("<h3>Settings</h3>")]
    assert '<a href="/cycles/new">' in section
    shown = dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", section))
    assert shown["pids"] == "1950 of 2048 (95.2%) (cgroup v2 /sys/fs/cgroup/app)"
    assert shown["cpu"].startswith("Pool() starts 20 workers")


def test_probe_page_without_any_headroom_has_no_section() -> None:
    state = make_state(probes=(ProbeView("p", (("schedule", "every 15s"),)),))
    page = get(Fake([make_cycle(probe="p")], state=state).app(), "/probes/p").text
    assert 'id="headroom"' not in page
