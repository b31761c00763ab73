"""``pqd run``: the owner of pqd's threads, signals and scheduler.

Lifecycle, as APScheduler's own: STOPPED -> start() -> RUNNING <-> RELOADING -> shutdown() ->
STOPPED. Each probe is one scheduler job (pqd.schedule): a run that comes due while the previous
cycle of that probe still runs is skipped (and counted), never queued or overlapped. What is kept
per probe between cycles is in pqd.bookkeeping, what the pages show is built by
pqd.web.state.
"""

from __future__ import annotations

import ctypes
import enum
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

from prometheus_client import CollectorRegistry

from pqd import __version__, logs
from pqd.bookkeeping import ProbeRuntime, log_cycle, status_line
from pqd.config.load import Config
from pqd.errors import ConfigError, cut, one_line
from pqd.http.server import HttpServer
from pqd.metrics.series import ProbeFacts, probe_facts
from pqd.metrics.writer import PqdMetrics
from pqd.notify import Notifier
from pqd.probe import ProbeConfig
from pqd.results import LiveSample
from pqd.runner.containment import ContainmentError, become_child_subreaper, cgroup_parent
from pqd.schedule import ProbeScheduler, heartbeat_seconds
from pqd.supervisor.interpreter import Interpreters
from pqd.supervisor.runners import Runners
from pqd.trace import render_trace
from pqd.web.app import WebState, make_app
from pqd.web.history import CycleHistory
from pqd.web.state import web_state

log = logging.getLogger("pqd")

#: How long stopping may take before pqd gives up waiting for cycles (systemd's default
#: TimeoutStopSec is 90 s; pqd exits within 10 s of SIGTERM, docs/reliability.md).
STOP_SECONDS = 8.0
EXIT_CONFIG = 78


class DaemonState(enum.Enum):
    STOPPED = "stopped"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"


class _LiveGauges:
    """The supervisor's observer that feeds pqd_queue_depth / pqd_workers_live during a cycle."""

    def __init__(self, metrics: PqdMetrics) -> None:
        self._metrics = metrics

    def sampled(self, sample: LiveSample) -> None:
        self._metrics.observe_live(sample)


def _give_back_memory() -> None:
    """Return the heap a cycle freed to the OS (glibc keeps it otherwise): a daemon that idles
    between cycles should not sit on a cycle's peak. A no-op where there is no malloc_trim."""
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _probe_spec(probe: ProbeConfig, runners: Runners) -> ProbeFacts:
    return probe_facts(probe, runners.containment, runners.interpreter(probe))


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
            probes=[_probe_spec(p, runners) for p in config.probes],
        )
        self.history = CycleHistory(config.history_limit)
        self.state = DaemonState.STOPPED
        self.started_at = time.time()
        self._runtimes = {p.name: ProbeRuntime(p) for p in config.probes}
        self._lock = threading.RLock()  # guards _runtimes and config swaps
        self._reload_lock = threading.Lock()
        self._cancel = threading.Event()
        self._stopped = threading.Event()
        self._heartbeat = time.monotonic()
        self._heartbeat_seconds = heartbeat_seconds(self.notifier.watchdog_interval)
        self._scheduler: ProbeScheduler | None = None
        self._server: HttpServer | None = None
        self._watchdog: threading.Thread | None = None

    # -- lifecycle -----

    def start(self) -> None:
        """Bind the port, start the scheduler, then tell systemd READY=1."""
        if self.state is not DaemonState.STOPPED:
            raise RuntimeError(f"cannot start a daemon that is {self.state.value}")
        become_child_subreaper()
        app = make_app(
            registry=self.registry,
            state=self.web_state,
            recent_cycles=self.history.recent,
            find_cycle=self.history.get,
            render_trace=render_trace,
            reload=self.reload,
            exposition=self.metrics.exposition,
        )
        self._server = HttpServer(
            self.config.listen_address, app, web_config_file=self.config.web_config_file
        )
        beats = None if self._heartbeat_seconds is None else (self._beat, self._heartbeat_seconds)
        self._scheduler = ProbeScheduler(self._run_probe, on_skip=self._on_skip, heartbeat=beats)
        for probe in self.config.probes:
            self._scheduler.add(probe)
        self._scheduler.start()
        self._server.start()
        self.state = DaemonState.RUNNING
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
        if self.state in (DaemonState.STOPPED, DaemonState.STOPPING):
            return
        self.state = DaemonState.STOPPING
        self.notifier.stopping()
        log.info("pqd stopping")
        self._cancel.set()
        self._stopped.set()
        if self._scheduler is not None:
            self._scheduler.shutdown()
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
        self.state = DaemonState.STOPPED
        log.info("pqd stopped")

    def _status(self) -> str:
        # Under the lock: a reload may be adding or removing probes from another thread.
        with self._lock:
            return status_line(self._runtimes)

    def _running_probes(self) -> list[str]:
        with self._lock:
            return [n for n, rt in self._runtimes.items() if rt.running_since is not None]

    # -- jobs -----

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
            log_cycle(result)
            self.notifier.status(self._status())
            _give_back_memory()
        except Exception:
            # A bug must not kill the scheduler's thread or the daemon; it is logged in one line.
            log.exception("cycle crashed", extra={"probe": name})
        finally:
            with self._lock:
                rt.running_since = None

    def _on_skip(self, probe: str, reason: str) -> None:
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
        if self.state is not DaemonState.RUNNING:
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
            if self.state is not DaemonState.RUNNING:
                return False, f"not reloading: pqd is {self.state.value}"
            self.state = DaemonState.RELOADING
            self.notifier.reloading()
            try:
                try:
                    new = self._reload_config()
                except Exception as exc:  # whatever reading a file does, pqd keeps running
                    why = _refusal(exc)
                    self.metrics.observe_reload(False, time.time())
                    log.error(
                        "config reload refused; keeping the running config", extra={"err": why}
                    )
                    return False, f"config reload refused: {why}"
                self._apply(new)
                self.metrics.observe_reload(True, time.time())
                log.info("config reloaded", extra={"probes": ",".join(self._runtimes)})
                return True, "config reloaded"
            finally:
                if self.state is DaemonState.RELOADING:
                    self.state = DaemonState.RUNNING
                self.notifier.ready(self._status())

    def _apply(self, new: Config) -> None:
        old, scheduler = self.config, self._scheduler
        assert scheduler is not None  # reloads run only while RUNNING
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
        self.metrics.set_probes([_probe_spec(p, self.runners) for p in new.probes])
        wanted = {p.name: p for p in new.probes}
        with self._lock:
            for name in list(self._runtimes):
                if name not in wanted:
                    scheduler.remove(name)
                    del self._runtimes[name]
                    self.history.forget_probe(name)
                    self.runners.retire(name)
            for name, probe in wanted.items():
                rt = self._runtimes.get(name)
                if rt is None:
                    self._runtimes[name] = ProbeRuntime(probe)
                    scheduler.add(probe)
                    continue
                schedule_changed = (rt.config.interval, rt.config.cron) != (
                    probe.interval,
                    probe.cron,
                )
                rt.config = probe  # the next cycle runs with it; a running one finishes as it was
                if schedule_changed:
                    scheduler.reschedule(probe)
                    rt.dispatched()  # overdue is measured against the new schedule
            # Keep the file's order for the pages.
            self._runtimes = {name: self._runtimes[name] for name in wanted}
            self.config = new

    # -- pages -----

    def web_state(self) -> WebState:
        with self._lock:
            probes = [rt.config for rt in self._runtimes.values()]
            config = self.config
        return web_state(
            config,
            probes,
            containment=self.runners.containment,
            started_at=self.started_at,
            ready=self.state in (DaemonState.RUNNING, DaemonState.RELOADING),
            unhealthy_reason=self.progressing()[1],
            python=self._python_label,
        )

    def _python_label(self, probe: ProbeConfig) -> str:
        interpreter = self.runners.interpreter(probe)
        return "" if interpreter is None else interpreter.label


def run_daemon(
    config: Config,
    *,
    reload_config: Callable[[], Config],
    interpreters: Interpreters | None = None,
) -> int:
    """Run until SIGTERM or SIGINT; SIGHUP reloads. Returns the exit code. ``interpreters``:
    what the config's checks learnt of each probe's ``python``."""
    logs.configure(config.log_format, config.log_level)
    try:
        runners = Runners(cgroup_parent(config.containment), interpreters=interpreters)
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


def _refusal(exc: Exception) -> str:
    """One bounded line for a refused reload: a ConfigError as it says itself, anything else
    (MemoryError, RecursionError, an OSError of a file pqd could not read) by its type and text,
    never a traceback, and never an exception of its own."""
    if isinstance(exc, ConfigError):
        try:
            return str(exc)
        except Exception:  # a ConfigError's str() must not end a reload either
            return f"{exc.field}: {exc.problem}"
    try:
        text = cut(one_line(str(exc)))
    except Exception:
        text = ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
