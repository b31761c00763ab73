"""A cycle pqd had to end itself still reports the headroom its runner read as it began
(docs/design.md §2), so a probe whose cycles time out near a limit still shows the limit."""

from __future__ import annotations

import time

from pqd.probe import ProbeConfig
from pqd.runner import events
from pqd.supervisor.progress import Progress, killed_result
from tests.helpers.factories import tight_headroom


def test_the_begun_event_s_headroom_reaches_a_killed_cycle_s_result() -> None:
    progress = Progress(ProbeConfig(), "c-1", time.time(), time.monotonic())
    line = events.encode(
        events.Begun(helpers={41: "forkserver"}, host_pid_count=120, headroom=tight_headroom())
    )
    progress.apply(events.decode(line), None)
    result = killed_result(progress, "timeout", "pqd killed the tree")
    assert result.headroom == tight_headroom()


def test_a_begun_event_without_headroom_is_still_read() -> None:
    progress = Progress(ProbeConfig(), "c-1", time.time(), time.monotonic())
    progress.apply(events.decode(b'{"event":"begun","host_pid_count":5,"helpers":{}}\n'), None)
    assert progress.pid_count_before == 5
    assert killed_result(progress, "timeout", "x").headroom is None
