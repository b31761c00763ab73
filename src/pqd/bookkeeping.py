"""What the daemon keeps about each configured probe between cycles, and what it says of it.

A :class:`ProbeRuntime` holds the probe's current config, whether a cycle runs, its last result
and when the scheduler last considered it; the daemon guards them all with one lock. From them
come the check that a probe is overdue (behind the systemd watchdog and ``/-/healthy``), the
one-line ``STATUS=`` summary, and the log line of a finished cycle.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pqd.probe import ProbeConfig
from pqd.results import CycleResult
from pqd.runner import stacks
from pqd.schedule import trigger
from pqd.supervisor.runners import REAP_SECONDS

log = logging.getLogger("pqd")


@dataclass
class ProbeRuntime:
    config: ProbeConfig
    running_since: float | None = None  # monotonic
    last: CycleResult | None = None
    # When the scheduler last dispatched (or skipped) this probe: monotonic, and Unix time for
    # cron schedules. A scheduler that stops dispatching shows here without any wake-up.
    dispatched_at: float = field(default_factory=time.monotonic)
    dispatched_wall: float = field(default_factory=time.time)
    # Skips are logged at most once per interval (and once a second), with how many there were.
    skips_unlogged: int = 0
    skip_logged_at: float = -math.inf

    def skip_to_log(self, now: float) -> int:
        """Count one skip; the number to log now, or 0 to stay quiet."""
        self.skips_unlogged += 1
        if now - self.skip_logged_at < max(self.config.interval or 0.0, 1.0):
            return 0
        count, self.skips_unlogged, self.skip_logged_at = self.skips_unlogged, 0, now
        return count

    def dispatched(self) -> None:
        self.dispatched_at, self.dispatched_wall = time.monotonic(), time.time()

    def stalled(self, now: float, wall: float) -> str | None:
        """Why this probe is overdue: not dispatched for two periods and 10 s, a cron run a
        minute late, or a cycle far past its own deadline."""
        probe = self.config
        if self.running_since is not None:
            limit = probe.timeout + REAP_SECONDS + 10.0
            if now - self.running_since > limit:
                return f"probe {probe.name}: a cycle has run for {now - self.running_since:.0f}s"
            return None
        if probe.interval is not None:
            late = now - self.dispatched_at
            if late > 2 * probe.interval + 10.0:
                return f"probe {probe.name}: not dispatched for {late:.0f}s"
            return None
        assert probe.cron is not None
        due = trigger(probe).get_next_fire_time(
            None, datetime.fromtimestamp(self.dispatched_wall, UTC)
        )
        if due is not None and wall > due.timestamp() + 60.0:
            return f"probe {probe.name}: due at {due:%H:%M:%S} UTC and not dispatched"
        return None


def status_line(runtimes: Mapping[str, ProbeRuntime]) -> str:
    """Each probe's last cycle in a few words, for systemd's ``STATUS=``."""
    parts = []
    for name, rt in runtimes.items():
        result = rt.last
        if result is None:
            parts.append(f"{name}: waiting for the first cycle")
        elif result.success:
            parts.append(
                f"{name}: ok in {result.duration_seconds:.2f}s, {result.jobs_completed} jobs, "
                f"{result.leaked_processes} leaked"
            )
        else:
            parts.append(f"{name}: FAILED ({result.reason})")
    return "; ".join(parts)


def log_cycle(result: CycleResult) -> None:
    """One log line per finished cycle; a failed one says why and, if known, where it was stuck."""
    fields = {
        "probe": result.probe,
        "cycle_id": result.cycle_id,
        "started_at": f"{result.started_at:.6f}",
        "ended_at": f"{result.ended_at:.6f}",
        "result": "success" if result.success else "failure",
        "duration_seconds": round(result.duration_seconds, 3),
        "jobs": result.jobs_completed,
        "full_events": result.queue_full_events,
        "depth_max": result.queue_depth_max,
        "leaked": result.leaked_processes,
    }
    delta = result.measured_pid_count_delta
    if delta is not None:  # not measured: no number rather than a false one (docs/design.md §2)
        fields["pid_delta"] = delta
    if result.success:
        log.info("cycle finished", extra=fields)
    else:
        failed = {
            "reason": result.reason,
            "detail": result.detail,
            "cause": result.cause or "unknown",
            "cause_detail": result.cause_detail,
        }
        if result.stuck:
            failed["stuck"] = stacks.summary(result.stuck)
        log.warning("cycle failed", extra={**fields, **failed})
