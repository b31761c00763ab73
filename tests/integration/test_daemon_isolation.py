"""Each probe in its own supervised process tree (docs/design.md §1a), tested against a running
`pqd run` with real processes over real HTTP, /metrics scraped throughout: hard deadlines from
outside, truthful reasons, exact leaks, nothing shared between probes, nothing outliving pqd."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from pqd.results import FAILURE_REASONS
from pqd.runner.containment import cgroup2_mount
from tests.helpers import fault_jobs
from tests.helpers.daemon_faults import (
    HARNESS,
    REPO,
    Scraper,
    assert_failure_then_success,
    counter,
    faulty_pqd,
    in_a_cycle,
)
from tests.helpers.pqd_process import PqdProcess, alive, sample
from tests.helpers.waiting import wait_until

# Ten jobs of 300 ms: a cycle takes about 3 s, long enough to be hit in the middle.
VICTIM = """
containment = "{containment}"

[probes.victim]
start_method = "{method}"
interval = "1s"
job_pause = "300ms"
timeout = "{timeout}"
"""


def victim(method: str = "forkserver", timeout: str = "6s", containment: str = "subreaper") -> str:
    return VICTIM.format(method=method, timeout=timeout, containment=containment)


def with_role(pqd: PqdProcess, mark: str) -> psutil.Process:
    """The one process of pqd's tree whose command line contains ``mark``."""

    def found() -> psutil.Process | None:
        for proc in pqd.descendants():
            with contextlib.suppress(psutil.Error):
                if mark in " ".join(proc.cmdline()):
                    return proc
        return None

    return wait_until(found, f"a process running {mark}")


def failed_cycles(pqd: PqdProcess, reason: str) -> list[dict[str, str]]:
    return [e for e in pqd.log_events("cycle failed") if e.get("reason") == reason]


def test_stopped_forkserver_ends_the_cycle_within_its_timeout(tmp_path: Path) -> None:
    with faulty_pqd(tmp_path, victim(timeout="5s")) as (pqd, scraper):

        def inject() -> None:
            in_a_cycle(pqd)
            with_role(pqd, "multiprocessing.forkserver").send_signal(signal.SIGSTOP)

        assert_failure_then_success(pqd, scraper, "helper_died", inject)
        (event, *_) = failed_cycles(pqd, "helper_died")

    assert "forkserver" in event["detail"]
    assert float(event["duration_seconds"]) <= 5 + 1


def test_stopped_forkserver_does_not_keep_pqd_from_stopping(tmp_path: Path) -> None:
    pqd = PqdProcess(tmp_path, victim()).wait_ready()
    try:
        in_a_cycle(pqd)
        with_role(pqd, "multiprocessing.forkserver").send_signal(signal.SIGSTOP)
        tree = pqd.descendants()
        pqd.signal(signal.SIGTERM)
        code = pqd.proc.wait(10)
        wait_until(lambda: not alive(tree), "every process of pqd's tree to be gone", seconds=5)
    finally:
        pqd.stop()

    assert code == 0
    assert "pqd stopped" in pqd.log_text()


def test_a_probe_timing_out_every_cycle_does_not_touch_another(tmp_path: Path) -> None:
    config = """
containment = "subreaper"

# 10,000 jobs take far longer than 2 s: every cycle of this probe is killed at its deadline.
[probes.stuck]
start_method = "forkserver"
interval = "1s"
rounds = 5000
timeout = "2s"

[probes.healthy]
start_method = "forkserver"
interval = "1s"
"""
    with faulty_pqd(tmp_path, config) as (pqd, scraper):
        started = time.monotonic()
        # Run every second, the healthy probe's 60th cycle ends at least 59 s after its first:
        # the window is the cycles, not a timer. Failure counters only grow, so one look at
        # the end sees any failure in it.
        text = pqd.scrape_until(
            lambda t: (sample(t, "pqd_cycles_total", probe="healthy") or 0) >= 60,
            "sixty cycles of the healthy probe",
            seconds=240,
        )
        window = time.monotonic() - started

    assert window >= 59
    healthy_failures = {
        reason: sample(text, "pqd_cycle_failures_total", probe="healthy", reason=reason)
        for reason in FAILURE_REASONS
    }
    assert healthy_failures == dict.fromkeys(FAILURE_REASONS, 0.0)
    assert (sample(text, "pqd_cycle_failures_total", probe="stuck", reason="timeout") or 0) >= 10
    assert scraper.failures == []


def test_killed_forkserver_is_helper_died_not_manager_died(tmp_path: Path) -> None:
    with faulty_pqd(tmp_path, victim()) as (pqd, scraper):

        def inject() -> None:
            in_a_cycle(pqd)
            with_role(pqd, "multiprocessing.forkserver").send_signal(signal.SIGKILL)

        assert_failure_then_success(pqd, scraper, "helper_died", inject)
        text = pqd.scrape()

    assert sample(text, "pqd_cycle_failures_total", probe="victim", reason="manager_died") == 0


@contextlib.contextmanager
def leaking_pqd(
    tmp_path: Path, config: str, args: tuple[str, ...] = (), wrapper: tuple[str, ...] = ()
) -> Iterator[tuple[PqdProcess, Scraper, Path, str]]:
    """A pqd whose producer leaves processes behind on demand: write "plain N" or "setsid N"
    to the trigger file. Each test gets its own `sleep` argument to find them by."""
    trigger = tmp_path / "leak-now"
    marker = f"{300 + os.getpid() % 1000}.{time.monotonic_ns() % 10**6}"
    env = {
        fault_jobs.TRIGGER_ENV: str(trigger),
        fault_jobs.SLEEP_ENV: marker,
        "PYTHONPATH": str(REPO),
    }
    command = (*wrapper, sys.executable, str(HARNESS))
    with faulty_pqd(tmp_path, config, env=env, command=command, args=args) as (pqd, scraper):
        yield pqd, scraper, trigger, marker


def sleepers(marker: str) -> list[psutil.Process]:
    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] == ["sleep", marker] and p.status() != psutil.STATUS_ZOMBIE
    ]


@pytest.mark.parametrize(
    ("method", "kind", "count"),
    [
        ("forkserver", "plain", 1),
        ("forkserver", "plain", 3),
        ("forkserver", "setsid", 1),
        ("forkserver", "setsid", 3),
        ("spawn", "setsid", 3),
        ("fork", "plain", 3),
    ],
)
def test_leaks_are_counted_exactly_and_killed(
    tmp_path: Path, method: str, kind: str, count: int
) -> None:
    with leaking_pqd(tmp_path, victim(method)) as (pqd, scraper, trigger, marker):

        def inject() -> None:
            trigger.write_text(f"{kind} {count}")

        assert_failure_then_success(pqd, scraper, "leak", inject)
        (event, *_) = failed_cycles(pqd, "leak")
        wait_until(lambda: not sleepers(marker), "the leaked processes to be killed", seconds=10)

    assert event["leaked"] == str(count)
    assert f"{count} process(es) left behind" in event["detail"]


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_sigkill_of_pqd_mid_cycle_leaves_nothing_behind(tmp_path: Path, method: str) -> None:
    config = victim(method, timeout="20s").replace('job_pause = "300ms"', 'job_pause = "1s"')
    with leaking_pqd(tmp_path, config) as (pqd, _, trigger, marker):
        trigger.write_text("plain 1")
        (child,) = wait_until(lambda: sleepers(marker), "a job's child to be running")
        tree = [*pqd.descendants()]
        assert child.pid in {p.pid for p in tree}
        pqd.signal(signal.SIGKILL)
        pqd.proc.wait(10)
        wait_until(lambda: not alive(tree), "every process of pqd's tree to die", seconds=2)


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
def test_killed_runner_fails_the_cycle_and_a_new_runner_takes_over(
    tmp_path: Path, method: str
) -> None:
    with faulty_pqd(tmp_path, victim(method)) as (pqd, scraper):
        first = with_role(pqd, "pqd.runner.main")

        def inject() -> None:
            wait_until(lambda: counter(pqd, "pqd_workers_live", probe="victim") > 0, "a cycle")
            with_role(pqd, "pqd.runner.main").send_signal(signal.SIGKILL)

        assert_failure_then_success(pqd, scraper, "helper_died", inject)
        (event, *_) = failed_cycles(pqd, "helper_died")
        second = with_role(pqd, "pqd.runner.main")

    assert "runner pid" in event["detail"] and "signal 9" in event["detail"]
    assert second.pid != first.pid


def test_stopped_runner_is_killed_at_the_deadline(tmp_path: Path) -> None:
    with faulty_pqd(tmp_path, victim(timeout="4s")) as (pqd, scraper):

        def inject() -> None:
            wait_until(lambda: counter(pqd, "pqd_workers_live", probe="victim") > 0, "a cycle")
            with_role(pqd, "pqd.runner.main").send_signal(signal.SIGSTOP)

        assert_failure_then_success(pqd, scraper, "helper_died", inject)
        (event, *_) = failed_cycles(pqd, "helper_died")

    assert "stopped" in event["detail"]
    assert float(event["duration_seconds"]) <= 4 + 1


# -- cgroup v2 containment -------------------------------------------------------------------


def writable_cgroup2_root() -> Path | None:
    try:
        mount = cgroup2_mount(Path("/proc/self/mountinfo").read_text())
    except OSError:
        return None
    if mount is None or not os.access(mount, os.W_OK):
        return None
    return Path(mount)


def _removed(group: Path) -> bool:
    try:
        group.rmdir()
    except OSError as exc:
        if exc.errno != errno.EBUSY:
            raise
        return False
    return True


@pytest.fixture
def scratch_cgroup() -> Iterator[Path]:
    """A child cgroup v2 for one test daemon; everything in it is killed and removed after."""
    root = writable_cgroup2_root()
    if root is None:
        pytest.fail("no writable cgroup v2 hierarchy on this machine: the test cannot run")
    group = root / f"pqd-test-{os.getpid()}-{time.monotonic_ns()}"
    group.mkdir()
    try:
        yield group
    finally:
        for sub in sorted(group.rglob("*"), reverse=True):
            if sub.is_dir():
                with contextlib.suppress(OSError):
                    (sub / "cgroup.kill").write_text("1")
                wait_until(lambda s=sub: not (s / "cgroup.procs").read_text().split(), "empty")
                # cgroup.procs empties before the kernel has released the dying tasks: rmdir
                # says EBUSY until then (cgroup.events "populated 0").
                wait_until(lambda s=sub: _removed(s), f"{sub} removed")
        with contextlib.suppress(OSError):
            (group / "cgroup.kill").write_text("1")
        wait_until(lambda: not (group / "cgroup.procs").read_text().split(), "an empty cgroup")
        wait_until(lambda: _removed(group), f"{group} removed")


def into(group: Path) -> tuple[str, ...]:
    """A command prefix that moves the process into ``group`` before pqd starts."""
    return ("sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', str(group))


def test_cgroup_containment_holds_and_kills_the_whole_tree(
    tmp_path: Path, scratch_cgroup: Path
) -> None:
    config = victim(containment="cgroup")
    with leaking_pqd(tmp_path, config, wrapper=into(scratch_cgroup)) as (
        pqd,
        scraper,
        trigger,
        marker,
    ):
        probe_group = scratch_cgroup / "probe-victim"
        text = pqd.scrape()
        assert (
            sample(
                text,
                "pqd_probe_info",
                probe="victim",
                start_method="forkserver",
                containment="cgroup",
            )
            == 1
        )
        manager, workers = in_a_cycle(pqd)
        members = {int(p) for p in (probe_group / "cgroup.procs").read_text().split()}
        forkserver = with_role(pqd, "multiprocessing.forkserver")
        assert {manager.pid, forkserver.pid, *(w.pid for w in workers)} <= members
        assert pqd.proc.pid not in members

        def inject() -> None:
            trigger.write_text("setsid 3")

        assert_failure_then_success(pqd, scraper, "leak", inject)
        (event, *_) = failed_cycles(pqd, "leak")
        assert event["leaked"] == "3"
        wait_until(lambda: not sleepers(marker), "the leaked processes to be killed", seconds=10)
        assert (sample(pqd.scrape(), "pqd_last_cycle_cpu_seconds", probe="victim") or 0) > 0

        trigger.write_text("plain 1")
        wait_until(lambda: sleepers(marker), "a job's child to be running")
        pqd.signal(signal.SIGKILL)
        pqd.proc.wait(10)
        wait_until(
            lambda: not (probe_group / "cgroup.procs").read_text().split(),
            "the probe's cgroup to be empty",
            seconds=2,
        )


def test_a_probes_cgroup_is_removed_on_a_clean_stop_after_its_cycle_failed(
    tmp_path: Path, scratch_cgroup: Path
) -> None:
    """Every cycle of this probe times out, so it never has an idle runner: its cgroup went only
    with an idle runner, and a clean stop left it behind."""
    config = """
containment = "cgroup"

[probes.stuck]
start_method = "forkserver"
interval = "1s"
rounds = 5000
timeout = "2s"
"""
    command = (*into(scratch_cgroup), sys.executable, "-m", "pqd")
    pqd = PqdProcess(tmp_path, config, command=command).wait_ready()
    try:
        pqd.scrape_until(
            lambda t: (
                (sample(t, "pqd_cycle_failures_total", probe="stuck", reason="timeout") or 0) >= 1
            ),
            "a cycle of the probe to time out",
        )
        assert (scratch_cgroup / "probe-stuck").is_dir()
        pqd.signal(signal.SIGTERM)
        code = pqd.proc.wait(15)
    finally:
        pqd.stop()

    assert code == 0
    assert not (scratch_cgroup / "probe-stuck").exists()
