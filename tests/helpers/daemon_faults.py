"""A `pqd run` under faults injected from outside (tests/integration/test_daemon_faults.py and
test_daemon_isolation.py): a faulty config, a scraper that remembers every failed scrape, the
victim probe's processes, and the check that a fault is counted and the next cycle succeeds."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from tests.helpers.pqd_process import PqdProcess, sample
from tests.helpers.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
#: `pqd` with its runners' producer job replaced (tests/helpers/fault_runner.py).
HARNESS = Path(__file__).with_name("fault_harness.py")

# Jobs pause so that a cycle takes about 3 s: long enough to be hit in the middle.
FAULTY = """
[probes.victim]
start_method = "forkserver"
interval = "1s"
job_pause = "300ms"
timeout = "8s"

[probes.bystander]
start_method = "spawn"
interval = "2s"
workers = 2
"""


class Scraper:
    """Scrapes /metrics every 100 ms on its own thread and remembers every failure."""

    def __init__(self, pqd: PqdProcess) -> None:
        self.pqd = pqd
        self.failures: list[str] = []
        self.count = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            status, _ = self.pqd.get("/metrics")
            self.count += 1
            if status != 200:
                self.failures.append(f"status {status} at {time.monotonic():.1f}")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


@contextlib.contextmanager
def faulty_pqd(
    tmp_path: Path, config: str = FAULTY, **kwargs: object
) -> Iterator[tuple[PqdProcess, Scraper]]:
    pqd = PqdProcess(tmp_path, config, **kwargs).wait_ready()  # type: ignore[arg-type]
    scraper = Scraper(pqd)
    try:
        yield pqd, scraper
    finally:
        scraper.stop()
        pqd.stop()


def counter(pqd: PqdProcess, name: str, **labels: str) -> float:
    return sample(pqd.scrape(), name, **labels) or 0.0


def cycle_processes(pqd: PqdProcess) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """The victim probe's (Manager, workers) right now: its forkserver's children (the only
    forkserver probe's, below its runner). The Manager is the one with a listening socket."""
    managers, workers = [], []
    for child in pqd.descendants():
        with contextlib.suppress(psutil.Error):
            if "multiprocessing.forkserver" not in " ".join(child.cmdline()):
                continue
            for proc in child.children():
                sockets = proc.net_connections(kind="unix")
                if any("listener-" in str(s.laddr) for s in sockets):
                    managers.append(proc)
                else:
                    workers.append(proc)
    return managers, workers


def idle_runner_tree(pqd: PqdProcess, probe: str) -> list[psutil.Process]:
    """The helpers (forkserver, resource tracker) and, last, the runner of pqd's only probe,
    under forkserver, right after a cycle ended: the runner then has just those two children
    and the forkserver none (a cycle's Manager and workers are its children). A runner is
    started with its first cycle, so one seen before any cycle ended may be in a cycle."""
    done = counter(pqd, "pqd_cycles_total", probe=probe)
    pqd.scrape_until(
        lambda t: (sample(t, "pqd_cycles_total", probe=probe) or 0) > done, "a cycle to end"
    )

    def found() -> list[psutil.Process] | None:
        with contextlib.suppress(psutil.Error, ValueError):  # ValueError: not one child
            (runner,) = psutil.Process(pqd.pid).children()
            helpers = runner.children()
            if len(helpers) == 2 and not any(h.children() for h in helpers):
                return [*helpers, runner]
        return None

    return wait_until(found, "the probe's runner between cycles")


def in_a_cycle(pqd: PqdProcess) -> tuple[psutil.Process, list[psutil.Process]]:
    def found() -> tuple[psutil.Process, list[psutil.Process]] | None:
        managers, workers = cycle_processes(pqd)
        return (managers[0], workers) if len(managers) == 1 and len(workers) == 4 else None

    return wait_until(found, "a victim cycle in progress")


def assert_failure_then_success(
    pqd: PqdProcess,
    scraper: Scraper,
    reason: str,
    inject: Callable[[], None],
    cause: str | None = None,
) -> None:
    """``inject`` fails a victim cycle with ``reason`` (and, given, ``cause``: the same write
    counts both, docs/design.md §1 "Causes"); the next victim cycle and the bystander succeed."""
    failures_before = counter(pqd, "pqd_cycle_failures_total", probe="victim", reason=reason)
    causes_before = {
        c: counter(pqd, "pqd_cycle_failure_causes_total", probe="victim", cause=c)
        for c in ([cause] if cause else [])
    }
    bystander_before = counter(pqd, "pqd_cycles_total", probe="bystander")
    # A fault that lands after the last job, while the pool is being closed anyway, does not
    # fail the cycle (its measurements are complete): then the next cycle is hit again.
    text = ""
    for _attempt in range(5):
        inject()
        try:
            text = pqd.scrape_until(
                lambda t: (
                    (sample(t, "pqd_cycle_failures_total", probe="victim", reason=reason) or 0)
                    > failures_before
                ),
                f"a {reason} failure to be counted",
                seconds=15,
            )
            break
        except AssertionError:
            continue
    assert text, f"no {reason} failure counted after 5 injections"
    for name, before in causes_before.items():
        counted = sample(text, "pqd_cycle_failure_causes_total", probe="victim", cause=name) or 0
        lines = [line for line in pqd.log_events("cycle failed") if line.get("reason") == reason]
        assert counted > before, (name, lines[-1:])
    successes = sample(text, "pqd_last_cycle_success_timestamp_seconds", probe="victim") or 0
    pqd.scrape_until(
        lambda t: (
            (sample(t, "pqd_last_cycle_success_timestamp_seconds", probe="victim") or 0) > successes
            and sample(t, "pqd_last_cycle_success", probe="victim") == 1
        ),
        "the next victim cycle to succeed",
    )
    if "[probes.bystander]" not in pqd.config_path.read_text():
        assert scraper.failures == []
        return
    pqd.scrape_until(
        lambda t: (
            (sample(t, "pqd_cycles_total", probe="bystander") or 0) > bystander_before
            and sample(t, "pqd_last_cycle_success", probe="bystander") == 1
        ),
        "the bystander probe to keep cycling successfully",
    )
    assert scraper.failures == []
    assert scraper.count > 0
