"""The daemon's APScheduler: one job per probe, and the heartbeat job a systemd watchdog needs.

Each probe is one job with ``max_instances=1``: a run that comes due while the previous cycle of
that probe still runs is skipped (and reported to ``on_skip``), never queued or overlapped.
Schedules are in UTC.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apscheduler.events import (
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
    JobSubmissionEvent,
)
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from pqd.config.load import MAX_PROBES
from pqd.probe import ProbeConfig

#: Under a systemd watchdog the scheduler runs a heartbeat job this often (a third of the ping
#: interval, within these bounds), and pings are sent only while it does. No watchdog, no job:
#: an idle pqd then wakes for nothing but its probes.
HEARTBEAT_MIN_SECONDS = 0.2
HEARTBEAT_MAX_SECONDS = 5.0
_JOB_PREFIX = "probe:"


def heartbeat_seconds(watchdog_interval: float | None) -> float | None:
    """How often the heartbeat job runs under a watchdog pinged this often; None without one."""
    if watchdog_interval is None:
        return None
    return min(max(watchdog_interval / 3, HEARTBEAT_MIN_SECONDS), HEARTBEAT_MAX_SECONDS)


def trigger(probe: ProbeConfig) -> Any:
    """The APScheduler trigger of the probe's schedule (cron or interval, in UTC)."""
    if probe.cron is not None:
        return CronTrigger.from_crontab(probe.cron, timezone=UTC)
    assert probe.interval is not None
    return IntervalTrigger(seconds=probe.interval, timezone=UTC)


class ProbeScheduler:
    """Runs ``run_probe(name)`` on each probe's schedule, in threads of its own."""

    def __init__(
        self,
        run_probe: Callable[[str], None],
        *,
        on_skip: Callable[[str, str], None],  # (probe, "overlap" or "missed")
        heartbeat: tuple[Callable[[], None], float] | None,  # (the job, its interval)
    ) -> None:
        self._run_probe = run_probe
        self._on_skip = on_skip
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            # A thread for every probe a config may have, plus the heartbeat, so no number of
            # long cycles, however many probes a reload adds, can delay it. The pool starts a
            # thread only when none is idle: unused capacity costs nothing.
            executors={"default": ThreadPoolExecutor(max_workers=MAX_PROBES + 2)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        self._scheduler.add_listener(self._skipped, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        if heartbeat is not None:
            beat, seconds = heartbeat
            self._scheduler.add_job(beat, IntervalTrigger(seconds=seconds), id="pqd:heartbeat")

    def start(self) -> None:
        self._scheduler.start()

    def shutdown(self) -> None:
        """Stop scheduling; running cycles are not waited for."""
        self._scheduler.shutdown(wait=False)

    def add(self, probe: ProbeConfig) -> None:
        """Schedule a probe; one on an interval runs at once, one on cron when it is due."""
        first = datetime.now(UTC) if probe.cron is None else None
        self._scheduler.add_job(
            self._run_probe,
            trigger(probe),
            args=[probe.name],
            id=_JOB_PREFIX + probe.name,
            name=probe.name,
            next_run_time=first,
            # A run more than one period late was missed, not merely delayed.
            misfire_grace_time=max(1, int(probe.interval or 60)),
        )

    def reschedule(self, probe: ProbeConfig) -> None:
        self._scheduler.reschedule_job(_JOB_PREFIX + probe.name, trigger=trigger(probe))

    def remove(self, name: str) -> None:
        self._scheduler.remove_job(_JOB_PREFIX + name)

    def _skipped(self, event: JobSubmissionEvent | JobExecutionEvent) -> None:
        if not event.job_id.startswith(_JOB_PREFIX):
            return
        reason = "overlap" if event.code == EVENT_JOB_MAX_INSTANCES else "missed"
        self._on_skip(event.job_id.removeprefix(_JOB_PREFIX), reason)
