"""``pqd run``: the only module that owns threads, signals and the scheduler.

Lifecycle, as APScheduler's own: STOPPED -> start() -> RUNNING <-> RELOADING -> shutdown() ->
STOPPED. Each probe is one scheduler job with ``max_instances=1``: a run that comes due while the
previous cycle of that probe still runs is skipped (and counted), never queued or overlapped.
"""

from __future__ import annotations

import ctypes
import enum
import logging
import math
import os
import platform
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
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
from prometheus_client import CollectorRegistry

from pqd import __version__, logs, stacks
from pqd.config import MAX_PROBES, Config, ConfigError, ProbeConfig, format_duration
from pqd.containment import ContainmentError, become_child_subreaper
from pqd.containment import choose as choose_containment
from pqd.history import CycleHistory
from pqd.metrics import PqdMetrics, ProbeSpec
from pqd.notify import Notifier
from pqd.results import CycleResult, LiveSample
from pqd.server import HttpServer
from pqd.supervisor import REAP_SECONDS, Runners
from pqd.trace import render_trace
from pqd.web import ProbeView, WebState, make_app

log = logging.getLogger("pqd")

#: Under a systemd watchdog the scheduler runs a heartbeat job this often (a third of the ping
#: interval, within these bounds), and pings are sent only while it does. No watchdog, no job:
#: an idle pqd then wakes for nothing but its probes.
HEARTBEAT_MIN_SECONDS = 0.2
HEARTBEAT_MAX_SECONDS = 5.0
#: How long stopping may take before pqd gives up waiting for cycles (systemd's default
#: TimeoutStopSec is 90 s; the issue asks for 10 s).
STOP_SECONDS = 8.0
_JOB_PREFIX = "probe:"
EXIT_CONFIG = 78


class State(enum.Enum):
    STOPPED = "stopped"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"


@dataclass
class _ProbeRuntime:
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
        due = _trigger(probe).get_next_fire_time(
            None, datetime.fromtimestamp(self.dispatched_wall, UTC)
        )
        if due is not None and wall > due.timestamp() + 60.0:
            return f"probe {probe.name}: due at {due:%H:%M:%S} UTC and not dispatched"
        return None


class _LiveGauges:
    """The supervisor's observer that feeds pqd_queue_depth / pqd_workers_live during a cycle."""

    def __init__(self, metrics: PqdMetrics) -> None:
        self._metrics = metrics

    def job_finished(self, sample: LiveSample) -> None:
        self._metrics.observe_live(sample)


def _give_back_memory() -> None:
    """Return the heap a cycle freed to the OS (glibc keeps it otherwise): a daemon that idles
    between cycles should not sit on a cycle's peak. A no-op where there is no malloc_trim."""
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _trigger(probe: ProbeConfig) -> Any:
    if probe.cron is not None:
        return CronTrigger.from_crontab(probe.cron, timezone=UTC)
    assert probe.interval is not None
    return IntervalTrigger(seconds=probe.interval, timezone=UTC)


def _schedule_text(probe: ProbeConfig) -> str:
    if probe.cron is not None:
        return f"cron {probe.cron} (UTC)"
    assert probe.interval is not None
    return f"every {format_duration(probe.interval)}"


def _probe_spec(probe: ProbeConfig, containment: str) -> ProbeSpec:
    return ProbeSpec(
        probe.name, probe.start_method, probe.workers, probe.queue_maxsize, containment
    )


def _probe_view(probe: ProbeConfig, containment: str) -> ProbeView:
    return ProbeView(
        name=probe.name,
        settings=(
            ("schedule", _schedule_text(probe)),
            ("containment", containment),
            ("start_method", probe.start_method),
            ("workers", str(probe.workers)),
            ("queue_maxsize", str(probe.queue_maxsize)),
            ("rounds", str(probe.rounds)),
            ("items_per_producer", str(probe.items_per_producer)),
            ("job_pause", format_duration(probe.job_pause)),
            ("timeout", format_duration(probe.timeout)),
        ),
    )


def _status_line(runtimes: dict[str, _ProbeRuntime]) -> str:
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


class Daemon:
    """Scheduler + metrics + HTTP + systemd notify for one Config."""

    def __init__(
        self,
        config: Config,
        *,
        reload_config: Callable[[], Config],
        runners: Runners,
        registry: CollectorRegistry | None = None,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.runners = runners
        self._reload_config = reload_config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.notifier = notifier if notifier is not None else Notifier.from_environ({})
        self.metrics = PqdMetrics(
            self.registry,
            version=__version__,
            probes=[_probe_spec(p, runners.containment) for p in config.probes],
        )
        self.history = CycleHistory(config.history_limit)
        self.state = State.STOPPED
        self.started_at = time.time()
        self._runtimes = {p.name: _ProbeRuntime(p) for p in config.probes}
        self._lock = threading.RLock()  # guards _runtimes and config swaps
        self._reload_lock = threading.Lock()
        self._cancel = threading.Event()
        self._stopped = threading.Event()
        self._heartbeat = time.monotonic()
        ping = self.notifier.watchdog_interval
        self._heartbeat_seconds = (
            None
            if ping is None
            else min(max(ping / 3, HEARTBEAT_MIN_SECONDS), HEARTBEAT_MAX_SECONDS)
        )
        self._scheduler: Any = None
        self._server: HttpServer | None = None
        self._watchdog: threading.Thread | None = None

    # -- lifecycle -----

    def start(self) -> None:
        """Bind the port, start the scheduler, then tell systemd READY=1."""
        if self.state is not State.STOPPED:
            raise RuntimeError(f"cannot start a daemon that is {self.state.value}")
        become_child_subreaper()
        app = make_app(
            registry=self.registry,
            state=self.web_state,
            recent_cycles=self.history.recent,
            find_cycle=self.history.get,
            render_trace=render_trace,
            reload=self.reload,
        )
        self._server = HttpServer(
            self.config.listen_address, app, web_config_file=self.config.web_config_file
        )
        self._scheduler = BackgroundScheduler(
            timezone=UTC,
            # A thread for every probe a config may have, plus the heartbeat, so no number of
            # long cycles, however many probes a reload adds, can delay it. The pool starts a
            # thread only when none is idle: unused capacity costs nothing.
            executors={"default": ThreadPoolExecutor(max_workers=MAX_PROBES + 2)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        self._scheduler.add_listener(self._on_skip, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        if self._heartbeat_seconds is not None:
            self._scheduler.add_job(
                self._beat, IntervalTrigger(seconds=self._heartbeat_seconds), id="pqd:heartbeat"
            )
        for probe in self.config.probes:
            self._add_probe_job(probe)
        self._scheduler.start()
        self._server.start()
        self.state = State.RUNNING
        self._heartbeat = time.monotonic()
        if self.notifier.watchdog_interval is not None:
            self._watchdog = threading.Thread(
                target=self._feed_watchdog, name="pqd-watchdog", daemon=True
            )
            self._watchdog.start()
        self.notifier.ready(self._status())
        log.info(
            "pqd started",
            extra={
                "version": __version__,
                "listen_address": self.config.listen_address,
                "port": self._server.port,
                "probes": ",".join(self._runtimes),
            },
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.port

    def shutdown(self) -> None:
        """Stop scheduling, cut running cycles short (they kill their own processes), stop
        serving. Returns within about STOP_SECONDS."""
        if self.state in (State.STOPPED, State.STOPPING):
            return
        self.state = State.STOPPING
        self.notifier.stopping()
        log.info("pqd stopping")
        self._cancel.set()
        self._stopped.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        deadline = time.monotonic() + STOP_SECONDS
        while self._running_probes() and time.monotonic() < deadline:
            time.sleep(0.02)
        left = self._running_probes()
        if left:
            log.error("cycles did not stop in time", extra={"probes": ",".join(left)})
        # Idle runners, and the trees of any cycle that did not stop in time.
        self.runners.close()
        if self._server is not None:
            self._server.stop()
        self.state = State.STOPPED
        log.info("pqd stopped")

    def _status(self) -> str:
        # Under the lock: a reload may be adding or removing probes from another thread.
        with self._lock:
            return _status_line(self._runtimes)

    def _running_probes(self) -> list[str]:
        with self._lock:
            return [n for n, rt in self._runtimes.items() if rt.running_since is not None]

    # -- jobs -----

    def _add_probe_job(self, probe: ProbeConfig) -> None:
        first = datetime.now(UTC) if probe.cron is None else None
        self._scheduler.add_job(
            self._run_probe,
            _trigger(probe),
            args=[probe.name],
            id=_JOB_PREFIX + probe.name,
            name=probe.name,
            next_run_time=first,
            # A run more than one period late was missed, not merely delayed.
            misfire_grace_time=max(1, int(probe.interval or 60)),
        )

    def _beat(self) -> None:
        self._heartbeat = time.monotonic()

    def _run_probe(self, name: str) -> None:
        with self._lock:
            rt = self._runtimes.get(name)
            if rt is None or self._cancel.is_set():
                return
            if rt.running_since is not None:
                # max_instances=1 already prevents this; should it ever slip through, it is
                # still a skip, and counted as one.
                self.metrics.observe_skip(name, "overlap")
                return
            rt.running_since = time.monotonic()
            rt.dispatched()
            probe = rt.config
        try:
            result = self.runners.run_cycle(
                probe, observer=_LiveGauges(self.metrics), cancel=self._cancel
            )
            if self._cancel.is_set():
                return  # cut short by shutdown: not a finding about the host
            with self._lock:
                removed = name not in self._runtimes
            if removed:
                self.runners.retire(name)  # removed by a reload while its cycle ran
                return
            self.metrics.observe_cycle(result)
            self.history.add(result)
            with self._lock:
                rt.last = result
            self._log_cycle(result)
            self.notifier.status(self._status())
            _give_back_memory()
        except Exception:
            # A bug must not kill the scheduler's thread or the daemon; it is logged in one line.
            log.exception("cycle crashed", extra={"probe": name})
        finally:
            with self._lock:
                rt.running_since = None

    def _log_cycle(self, result: CycleResult) -> None:
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
            "pid_delta": result.pid_count_delta,
            "leaked": result.leaked_processes,
        }
        if result.success:
            log.info("cycle finished", extra=fields)
        else:
            failed = {"reason": result.reason, "detail": result.detail}
            if result.stuck:
                failed["stuck"] = stacks.summary(result.stuck)
            log.warning("cycle failed", extra={**fields, **failed})

    def _on_skip(self, event: JobSubmissionEvent | JobExecutionEvent) -> None:
        if not event.job_id.startswith(_JOB_PREFIX):
            return
        probe = event.job_id.removeprefix(_JOB_PREFIX)
        reason = "overlap" if event.code == EVENT_JOB_MAX_INSTANCES else "missed"
        self.metrics.observe_skip(probe, reason)  # every skip is counted
        with self._lock:
            rt = self._runtimes.get(probe)
            if rt is None:
                return
            rt.dispatched()  # the scheduler is alive: it considered the run
            count = rt.skip_to_log(time.monotonic())
        if count:
            log.warning("cycle skipped", extra={"probe": probe, "reason": reason, "count": count})

    # -- watchdog -----

    def progressing(self) -> tuple[bool, str]:
        """(True, "") while the scheduler dispatches probes and no cycle has outlived its
        deadline; else (False, why). The one check behind the watchdog ping and /-/healthy."""
        now, wall = time.monotonic(), time.time()
        if self._heartbeat_seconds is not None:
            silent = now - self._heartbeat
            if silent > max(5 * self._heartbeat_seconds, 5.0):
                return False, f"the scheduler has not run its heartbeat for {silent:.0f}s"
        if self.state is not State.RUNNING:
            return True, ""
        with self._lock:
            for rt in self._runtimes.values():
                problem = rt.stalled(now, wall)
                if problem is not None:
                    return False, problem
        return True, ""

    def _feed_watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        assert interval is not None
        while not self._stopped.wait(interval):
            ok, why = self.progressing()
            if ok:
                self.notifier.watchdog()
            else:
                log.error(
                    "not progressing: withholding the systemd watchdog ping", extra={"err": why}
                )

    # -- reload -----

    def reload(self) -> tuple[bool, str]:
        """Read the config again and apply it; a bad one is refused and the old one keeps
        running. Safe from any thread (SIGHUP and POST /-/reload)."""
        with self._reload_lock:
            if self.state is not State.RUNNING:
                return False, f"not reloading: pqd is {self.state.value}"
            self.state = State.RELOADING
            self.notifier.reloading()
            try:
                try:
                    new = self._reload_config()
                except ConfigError as exc:
                    self.metrics.observe_reload(False, time.time())
                    log.error(
                        "config reload refused; keeping the running config", extra={"err": str(exc)}
                    )
                    return False, f"config reload refused: {exc}"
                self._apply(new)
                self.metrics.observe_reload(True, time.time())
                log.info("config reloaded", extra={"probes": ",".join(self._runtimes)})
                return True, "config reloaded"
            finally:
                if self.state is State.RELOADING:
                    self.state = State.RUNNING
                self.notifier.ready(self._status())

    def _apply(self, new: Config) -> None:
        old = self.config
        if new.listen_address != old.listen_address:
            log.warning(
                "listen_address changes take effect on restart",
                extra={"running": old.listen_address, "configured": new.listen_address},
            )
        if new.containment != old.containment:
            log.warning(
                "containment changes take effect on restart",
                extra={"running": self.runners.containment, "configured": new.containment},
            )
        if (new.log_format, new.log_level) != (old.log_format, old.log_level):
            logs.configure(new.log_format, new.log_level)
        self.history.set_limit(new.history_limit)
        self.metrics.set_probes([_probe_spec(p, self.runners.containment) for p in new.probes])
        wanted = {p.name: p for p in new.probes}
        with self._lock:
            for name in list(self._runtimes):
                if name not in wanted:
                    self._scheduler.remove_job(_JOB_PREFIX + name)
                    del self._runtimes[name]
                    self.history.forget_probe(name)
                    self.runners.retire(name)
            for name, probe in wanted.items():
                rt = self._runtimes.get(name)
                if rt is None:
                    self._runtimes[name] = _ProbeRuntime(probe)
                    self._add_probe_job(probe)
                    continue
                schedule_changed = (rt.config.interval, rt.config.cron) != (
                    probe.interval,
                    probe.cron,
                )
                rt.config = probe  # the next cycle runs with it; a running one finishes as it was
                if schedule_changed:
                    self._scheduler.reschedule_job(_JOB_PREFIX + name, trigger=_trigger(probe))
                    rt.dispatched()  # overdue is measured against the new schedule
            # Keep the file's order for the pages.
            self._runtimes = {name: self._runtimes[name] for name in wanted}
            self.config = new

    # -- pages -----

    def web_state(self) -> WebState:
        with self._lock:
            probes = tuple(
                _probe_view(rt.config, self.runners.containment) for rt in self._runtimes.values()
            )
            config = self.config
        return WebState(
            version=__version__,
            python_version=platform.python_version(),
            started_at=self.started_at,
            probes=probes,
            reload_enabled=config.enable_reload_endpoint,
            ready=self.state in (State.RUNNING, State.RELOADING),
            unhealthy_reason=self.progressing()[1],
            # Every top-level setting; none holds a secret (web_config_file is only a path).
            global_settings=(
                ("listen_address", config.listen_address),
                ("log_format", config.log_format),
                ("log_level", config.log_level),
                ("history_limit", str(config.history_limit)),
                ("enable_reload_endpoint", str(config.enable_reload_endpoint).lower()),
                ("web_config_file", config.web_config_file or "none"),
                ("containment", f"{config.containment} (in use: {self.runners.containment})"),
            ),
        )


def run_daemon(config: Config, *, reload_config: Callable[[], Config]) -> int:
    """Run until SIGTERM or SIGINT; SIGHUP reloads. Returns the exit code."""
    logs.configure(config.log_format, config.log_level)
    try:
        runners = Runners(choose_containment(config.containment))
    except ContainmentError as exc:
        log.error("cannot contain probes", extra={"err": str(exc)})
        return EXIT_CONFIG
    daemon = Daemon(
        config,
        reload_config=reload_config,
        runners=runners,
        notifier=Notifier.from_environ(os.environ),
    )
    stop = threading.Event()
    reload_wanted = threading.Event()
    wake = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()
        wake.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        reload_wanted.set()
        wake.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    try:
        daemon.start()
    except OSError as exc:
        log.error(
            "cannot serve HTTP",
            extra={"listen_address": config.listen_address, "err": exc.strerror or str(exc)},
        )
        daemon.shutdown()
        return 1
    # Signal handlers only set flags; the work happens here, on the main thread.
    while not stop.is_set():
        # Signals interrupt the wait (their handlers set ``wake``); the timeout is a backstop.
        wake.wait(60.0)
        wake.clear()
        if reload_wanted.is_set() and not stop.is_set():
            reload_wanted.clear()
            daemon.reload()
    daemon.shutdown()
    return 0
