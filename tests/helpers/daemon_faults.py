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


def failed_lines(pqd: PqdProcess, reason: str) -> list[dict[str, str]]:
    """The victim probe's failed cycles of ``reason``, from the log."""
    return [
        line
        for line in pqd.log_events("cycle failed")
        if line.get("probe") == "victim" and line.get("reason") == reason
    ]


def _inject_until_counted(
    pqd: PqdProcess, reason: str, inject: Callable[[], None], before: float
) -> str:
    """Inject until a victim failure of ``reason`` is counted; that scrape. A fault that lands
    after the last job, while the pool is being closed anyway, does not fail the cycle (its
    measurements are complete): then the next cycle is hit again."""
    for _attempt in range(5):
        inject()
        try:
            return pqd.scrape_until(
                lambda t: (
                    (sample(t, "pqd_cycle_failures_total", probe="victim", reason=reason) or 0)
                    > before
                ),
                f"a {reason} failure to be counted",
                seconds=15,
            )
        except AssertionError:
            continue
    raise AssertionError(f"no {reason} failure counted after 5 injections")


def _assert_cause(
    text: str, line: dict[str, str], cause: str, words: tuple[str, ...], before: float
) -> None:
    """The failed cycle's cause on the counter, the state set and its log line's sentence."""
    counted = sample(text, "pqd_cycle_failure_causes_total", probe="victim", cause=cause) or 0
    assert counted > before, (cause, line)
    last = sample(text, "pqd_last_cycle_cause", probe="victim", pqd_last_cycle_cause=cause)
    assert last == 1, (cause, line)
    assert line["cause"] == cause, line
    for word in words:
        assert word in line["cause_detail"], (word, line)


def assert_failure_then_success(
    pqd: PqdProcess,
    scraper: Scraper,
    reason: str,
    inject: Callable[[], None],
    cause: str | None = None,
    words: tuple[str, ...] = (),
) -> dict[str, str]:
    """``inject`` fails a victim cycle with ``reason`` (and, given, ``cause``, on its counter,
    ``pqd_last_cycle_cause`` and its log line with ``words`` in the sentence: the same write
    counts both, docs/design.md §1 "Causes"); the next victim cycle (its cause ``none``) and the
    bystander succeed. Returns the failed cycle's log line."""
    failures_before = counter(pqd, "pqd_cycle_failures_total", probe="victim", reason=reason)
    cause_before = counter(pqd, "pqd_cycle_failure_causes_total", probe="victim", cause=cause or "")
    lines_before = len(failed_lines(pqd, reason))
    bystander_before = counter(pqd, "pqd_cycles_total", probe="bystander")
    text = _inject_until_counted(pqd, reason, inject, failures_before)
    line = wait_until(
        lambda: failed_lines(pqd, reason)[lines_before:][:1], f"the {reason} cycle's log line"
    )[0]
    if cause is not None:
        _assert_cause(text, line, cause, words, cause_before)
    successes = sample(text, "pqd_last_cycle_success_timestamp_seconds", probe="victim") or 0
    text = pqd.scrape_until(
        lambda t: (
            (sample(t, "pqd_last_cycle_success_timestamp_seconds", probe="victim") or 0) > successes
            and sample(t, "pqd_last_cycle_success", probe="victim") == 1
        ),
        "the next victim cycle to succeed",
    )
    assert sample(text, "pqd_last_cycle_cause", probe="victim", pqd_last_cycle_cause="none") == 1
    if "[probes.bystander]" in pqd.config_path.read_text():
        pqd.scrape_until(
            lambda t: (
                (sample(t, "pqd_cycles_total", probe="bystander") or 0) > bystander_before
                and sample(t, "pqd_last_cycle_success", probe="bystander") == 1
            ),
            "the bystander probe to keep cycling successfully",
        )
        assert scraper.count > 0
    assert scraper.failures == []
    return line
