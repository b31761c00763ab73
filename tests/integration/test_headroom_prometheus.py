"""Headroom alerts in a real Prometheus, for real (docs/design.md §2, "Headroom"): `pqd run`
under a condition that brings it close to a limit while its cycles still succeed, scraped by
Prometheus with deploy/prometheus's rules. The alert fires while no cycle has failed; then, with
the limit below the need, cycles fail with the cause that names the resource.

The rules are loaded unchanged except the `for:` of the alert under test, cut to 5s so that the
test need not wait minutes (the edges of every `for:` are pinned by the promtool tests)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import psutil
import pytest

from tests.helpers import conditions as c
from tests.helpers.pqd_process import PqdProcess, running_pqd, sample
from tests.helpers.prometheus_process import PROMETHEUS_DIR, running_prometheus
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

PQD = [sys.executable, "-m", "pqd"]
PROBE = '[probes.p]\ninterval = "1s"\ntimeout = "20s"\njob_pause = "0s"\n'
REASONS = ("timeout", "worker_died", "manager_died", "spawn_failed", "job_error", "helper_died")
#: Threads of a ballast process in the pids cgroup: the application's tasks, so that what
#: pqd's own cycles add is a small share of the limit.
BALLAST_THREADS = 600
BALLAST = (
    "import threading, time\n"
    f"for _ in range({BALLAST_THREADS}):\n"
    "    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
    "time.sleep(3600)\n"
)
#: Above the highest pids.current seen during cycles: room for what a 2 ms sampler misses.
PIDS_MARGIN = 20


def rules_with_short_window(tmp: Path, alert: str) -> Path:
    for name in ("pqd-rules.yml", "pqd-alerts.yml"):
        shutil.copy(PROMETHEUS_DIR / name, tmp / name)
    alerts = tmp / "pqd-alerts.yml"
    text = alerts.read_text()
    start = text.index(f"- alert: {alert}\n")
    head, tail = text[:start], text[start:]
    tail, count = re.subn(r"for: \d+m", "for: 5s", tail, count=1)
    assert count == 1, f"{alert} has no for:"
    alerts.write_text(head + tail)
    return tmp


@contextlib.contextmanager
def daemon(tmp_path: Path, *wraps: c.Wrap) -> Iterator[PqdProcess]:
    with running_pqd(
        tmp_path / "pqd", PROBE, command=c.command(PQD, *wraps), env=c.environment(*wraps)
    ) as pqd:
        pqd.scrape_until(lambda t: (sample(t, "pqd_cycles_total", probe="p") or 0) >= 2, "2 cycles")
        yield pqd


def fires_before_any_failure(tmp_path: Path, pqd: PqdProcess, alert: str) -> str:
    """Prometheus scraping ``pqd`` until ``alert`` fires for probe p; then no cycle may have
    failed. pqd's exposition at that moment."""
    rules = rules_with_short_window(tmp_path / "rules", alert)
    with running_prometheus(
        tmp_path / "prometheus", f"127.0.0.1:{pqd.port}", rules_dir=rules
    ) as prometheus:
        expr = f'ALERTS{{alertname="{alert}", alertstate="firing", probe="p"}}'
        wait_until(lambda: prometheus.query(expr)["data"]["result"], f"{alert} firing", seconds=90)
    text = pqd.scrape()
    assert (sample(text, "pqd_cycles_total", probe="p") or 0) >= 3, text
    failed = [sample(text, "pqd_cycle_failures_total", probe="p", reason=r) for r in REASONS]
    assert failed == [0] * len(REASONS), text
    return text


def fails_with_cause(
    pqd: PqdProcess, cause: str, meanwhile: Callable[[], object] | None = None
) -> None:
    """Wait for a cycle failed with ``cause``; ``meanwhile`` runs before each scrape."""

    def failed(text: str) -> bool:
        return (sample(text, "pqd_cycle_failure_causes_total", probe="p", cause=cause) or 0) >= 1

    seen = [""]

    def attempt() -> bool:
        if meanwhile is not None:
            meanwhile()
        seen[0] = pqd.scrape()
        return failed(seen[0])

    try:
        wait_until(attempt, f"a cycle failed with cause {cause}", 60)
    except AssertionError as e:
        counted = [
            line
            for line in seen[0].splitlines()
            if line.startswith(("pqd_cycle_failure", "pqd_last_cycle_success", "pqd_cycles_total"))
            and not line.endswith(" 0.0")
        ]
        lines = pqd.log_events("cycle failed")
        raise AssertionError(f"{e}; last scrape: {counted}; failed cycles: {lines}") from None


@pytest.fixture
def dirs(tmp_path: Path) -> Path:
    for part in ("pqd", "rules", "prometheus"):
        (tmp_path / part).mkdir()
    return tmp_path


def pids_samples(group: c.Cgroup, seconds: float) -> list[int]:
    """pids.current every 2 ms for ``seconds`` (cycles run every second)."""
    found = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found.append(int(group.read("pids.current")))
        time.sleep(0.002)
    return found


@contextlib.contextmanager
def sampling(read: Callable[[], int]) -> Iterator[list[int]]:
    """``read()`` every 2 ms from a thread while held: the values, for a gauge that pqd reads
    at one moment of a cycle (a cycle's start, the end of its jobs) the test cannot align
    with. Both counts move within a cycle (threads, pipes), so the range the test saw over the
    same cycles is the honest check, not equality."""
    values: list[int] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.002):
            with contextlib.suppress(OSError, psutil.Error):
                values.append(read())

    thread = threading.Thread(target=run, name="sampler", daemon=True)
    thread.start()
    try:
        yield values
    finally:
        stop.set()
        thread.join(5)


def test_pids_alert_fires_before_any_cycle_fails_then_the_cause_is_process_limit(
    dirs: Path,
) -> None:
    with c.pids_cgroup("max") as group:
        ballast = subprocess.Popen(c.command([sys.executable, "-c", BALLAST], group.wrap))
        try:
            wait_until(
                lambda: int(group.read("pids.current")) > BALLAST_THREADS, "the ballast's threads"
            )
            with daemon(dirs, group.wrap) as pqd:
                seen = pids_samples(group, 3.0)
                limit = max(seen) + PIDS_MARGIN
                group.write("pids.max", str(limit))
                refused = group.keyed("pids.events").get("max", 0)
                with sampling(lambda: int(group.read("pids.current"))) as during:
                    text = fires_before_any_failure(dirs, pqd, "PqdPidsNearLimit")
                # ... and before the kernel refused a single task.
                assert group.keyed("pids.events").get("max", 0) == refused
                assert sample(text, "pqd_pids_limit", probe="p") == limit
                current = sample(text, "pqd_pids_current", probe="p")
                assert current is not None and 0.9 * limit < current < limit
                assert min(during) <= current <= max(during), (current, min(during), max(during))
                group.write("pids.max", str(min(seen) + 4))  # below the need
                fails_with_cause(pqd, "process_limit")
                assert group.keyed("pids.events").get("max", 0) > refused
                group.write("pids.max", "max")  # let pqd stop cleanly
        finally:
            ballast.kill()
            ballast.wait(10)


def test_shm_alert_fires_before_any_cycle_fails_then_the_cause_is_shm_full(dirs: Path) -> None:
    with c.private_shm("1m") as namespace, daemon(dirs, namespace.wrap) as pqd:
        shm = namespace.shm_dir(pqd.proc.pid)
        # Leave 64 KiB of 1 MiB (6%): under the alert's 10%, above a cycle's 24 KiB. Written
        # to a size, not to ENOSPC, so that no cycle meets a full /dev/shm meanwhile.
        ballast = shm / "ballast"
        ballast.write_bytes(bytes(max(0, c.space(shm).available - (64 << 10))))
        text = fires_before_any_failure(dirs, pqd, "PqdSharedMemoryLow")
        room = c.space(shm)
        assert sample(text, "pqd_shm_size_bytes", probe="p") == room.size == 1 << 20
        available = sample(text, "pqd_shm_available_bytes", probe="p")
        assert available is not None and 0 < available < 0.1 * room.size
        c.fill(shm)  # to the last byte: below the need
        # A cycle running as it was filled frees its semaphores' pages at its end, and the next
        # cycle fits in them: what is freed is taken again (a new file each time), as an
        # application's processes would (it failed once so in a clean-clone run).
        top_ups = iter(range(10**6))
        fails_with_cause(pqd, "shm_full", lambda: c.fill(shm, name=f"-top-up-{next(top_ups)}"))
        ballast.unlink()


def span(text: str) -> tuple[float, float]:
    """When the cycle that ``text`` reports began and ended (Unix time)."""
    ended = sample(text, "pqd_last_cycle_timestamp_seconds", probe="p")
    duration = sample(text, "pqd_last_cycle_duration_seconds", probe="p")
    assert ended is not None and duration is not None, text
    return ended - duration, ended


def counted_by_the_test(shm: Path, text: str) -> tuple[int, int]:
    """(entries made during the cycle that ``text`` reports and still there, entries there as
    it began), from the test's own listing of ``shm`` and each entry's mtime, placed in the
    cycle's span. Exact whenever it is read after that cycle: nothing removes an entry here but
    a pool's own, gone when its cycle ends, and a later cycle's are newer than the span."""
    began, ended = span(text)
    times = []
    for entry in os.scandir(shm):
        with contextlib.suppress(FileNotFoundError):  # a running cycle's pool, gone meanwhile
            times.append(entry.stat().st_mtime_ns / 1e9)
    return sum(began <= t <= ended for t in times), sum(t < began for t in times)


def cycles_past(text: str, last: float) -> bool:
    return (sample(text, "pqd_cycles_total", probe="p") or 0) > last


def leaks_as_the_test_counts_them(
    pqd: PqdProcess, shm: Path, cycles: int, since: float
) -> list[int]:
    """pqd_last_cycle_leaked_shm_objects and pqd_shm_objects of ``cycles`` successive cycles
    begun after ``since``, each equal to what the test counts itself; the leaks of each."""
    leaks: list[int] = []
    last = 0.0
    while len(leaks) < cycles:
        text = pqd.scrape_until(partial(cycles_past, last=last), "the next cycle")
        last = sample(text, "pqd_cycles_total", probe="p") or 0
        if span(text)[0] < since:
            continue  # begun before its jobs were told to leak
        made, there = counted_by_the_test(shm, text)
        assert sample(text, "pqd_last_cycle_success", probe="p") == 1, text
        assert sample(text, "pqd_last_cycle_leaked_shm_objects", probe="p") == made > 0, text
        assert sample(text, "pqd_shm_objects", probe="p") == there, text
        leaks.append(made)
    return leaks


#: Another process of the application in the probe's /dev/shm, leaking named semaphores as
#: fast as there is room (each takes a page): what frees, it takes within milliseconds.
LEAKER = (
    "import _multiprocessing, os, time\n"
    "n = 0\n"
    "while True:\n"
    "    try:\n"
    "        _multiprocessing.SemLock(1, 1, 1, f'/mp-app-leak-{os.getpid()}-{n}', False)\n"
    "        n += 1\n"
    "    except OSError:\n"
    "        time.sleep(0.002)\n"
)


def test_leaked_semaphores_alert_fires_before_any_cycle_fails_then_the_cause_is_shm_full(
    dirs: Path,
) -> None:
    # 4 MiB: a thousand pages, a semaphore takes one. Each of a cycle's 10 jobs leaves one.
    with (
        c.private_shm("4m") as namespace,
        c.worker_hook() as hook,
        c.cpu_cgroup(1.5) as cpu,
        daemon(dirs, namespace.wrap, hook.wrap, cpu.wrap) as pqd,
    ):
        shm = namespace.shm_dir(pqd.proc.pid)
        hook.every_job("leave_semaphores 1")
        since = time.time()
        leaks = leaks_as_the_test_counts_them(pqd, shm, 3, since)
        text = fires_before_any_failure(dirs, pqd, "PqdSharedMemoryObjectsGrowing")
        leaks += leaks_as_the_test_counts_them(pqd, shm, 2, since)
        assert leaks == [10] * len(leaks)
        assert sample(text, "pqd_cpu_quota_cores", probe="p") == cpu_quota(cpu) == 1.5
        assert sample(text, "pqd_tmpdir_usable", probe="p") == 1
        # The next cycle's first job fills /dev/shm; that cycle still ends well (its teardown
        # needs no new semaphore) and counts them all. Its own pages, freed at teardown, are
        # what the next pool would take: the application's other processes take them first.
        hook.every_job("leave_semaphores 100000")
        (filled,) = leaks_as_the_test_counts_them(pqd, shm, 1, time.time())
        assert filled > 500 and c.space(shm).available < 8 * 4096
        leaker = subprocess.Popen(
            ["nsenter", "-t", str(pqd.proc.pid), "-m", sys.executable, "-c", LEAKER]
        )
        try:
            fails_with_cause(pqd, "shm_full")
            (failed, *_) = pqd.log_events("cycle failed")
        finally:
            leaker.kill()
            leaker.wait(10)
        assert failed["reason"] == "spawn_failed", failed
        assert failed["cause_detail"].startswith("/dev/shm is full: 4.0 MiB tmpfs, 0 B free")
        hook.every_job(None)
        for entry in os.scandir(shm):  # let pqd stop cleanly
            os.unlink(entry.path)


def cpu_quota(group: c.Cgroup) -> float:
    if group.version == 2:
        quota, period = group.read("cpu.max").split()
    else:
        quota, period = group.read("cpu.cfs_quota_us"), group.read("cpu.cfs_period_us")
    return int(quota) / int(period)


def most_open_files(runner: psutil.Process) -> int:
    """The most descriptors one process of the runner's tree holds now (its /proc/PID/fd)."""
    counts = [runner.num_fds()]
    for child in runner.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            counts.append(child.num_fds())
    return max(counts)


def runner_pid(pqd: PqdProcess) -> int:
    (runner,) = [p for p in pqd.descendants() if "pqd.runner.main" in " ".join(p.cmdline())]
    return runner.pid


def test_open_files_alert_fires_before_any_cycle_fails_then_the_cause_is_the_limit(
    dirs: Path,
) -> None:
    # A cycle's busiest process (the runner) holds 26 descriptors here: 30 is 87% of that.
    with daemon(dirs, c.rlimits(nofile=30)) as pqd:
        runner = psutil.Process(runner_pid(pqd))
        with sampling(lambda: most_open_files(runner)) as during:
            text = fires_before_any_failure(dirs, pqd, "PqdOpenFilesNearLimit")
        assert sample(text, "pqd_open_files_limit", probe="p") == 30
        held = sample(text, "pqd_last_cycle_max_open_files", probe="p")
        assert held is not None and 0.8 * 30 < held < 30
        assert min(during) <= held <= max(during), (held, min(during), max(during))
        # Below the need, for the runner that pqd keeps between cycles.
        subprocess.run(["prlimit", "--pid", str(runner_pid(pqd)), "--nofile=16"], check=True)
        fails_with_cause(pqd, "open_files_limit")


#: Anonymous memory of a ballast process in the memory cgroup (the application's), so that a
#: cycle's swing is a small share of the limit.
MEMORY_BALLAST = (
    "import time\n"
    "ballast = bytearray(500 << 20)\n"
    "for i in range(0, len(ballast), 4096):\n"
    "    ballast[i] = 1\n"
    "print('ready', flush=True)\n"
    "time.sleep(3600)\n"
)


def set_memory_limit(group: c.Cgroup, limit: int) -> None:
    """memory.limit_in_bytes (v1, with memsw kept equal: no swap beyond it) or memory.max."""
    if group.version == 2:
        group.write("memory.max", str(limit))
        return
    memsw = group.path / "memory.memsw.limit_in_bytes"
    order = ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    if memsw.exists() and limit > int(group.read("memory.limit_in_bytes")):
        order.reverse()  # memsw may never be below the memory limit
    for name in order:
        if (group.path / name).exists():
            group.write(name, str(limit))


def memory_samples(group: c.Cgroup, seconds: float) -> list[int]:
    found = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        found.append(c.memory_usage(group))
        time.sleep(0.002)
    return found


def test_memory_alert_fires_before_any_cycle_fails_then_the_cause_is_memory_limit(
    dirs: Path,
) -> None:
    with c.memory_cgroup(2 << 30) as group, c.worker_hook() as hook:
        ballast = subprocess.Popen(
            c.command([sys.executable, "-c", MEMORY_BALLAST], group.wrap),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert ballast.stdout is not None and ballast.stdout.readline() == "ready\n"
            with daemon(dirs, group.wrap, hook.wrap) as pqd:
                seen = memory_samples(group, 3.0)
                # 16 MiB above the highest usage sampled during cycles: the cycles still fit.
                limit = max(seen) + (16 << 20)
                set_memory_limit(group, limit)
                kills = c.oom_kills(group)
                text = fires_before_any_failure(dirs, pqd, "PqdMemoryNearLimit")
                assert c.oom_kills(group) == kills  # nothing was killed on the way
                assert sample(text, "pqd_memory_limit_bytes", probe="p") == limit
                usage = sample(text, "pqd_memory_usage_bytes", probe="p")
                assert usage is not None and 0.9 * limit < usage <= limit
                # Below the need: a job that wants more than the whole limit. The OOM killer may
                # first take the ballast (the largest process then); the job still does not fit
                # and its worker is killed next.
                hook.add("oom 800000000")
                fails_with_cause(pqd, "memory_limit")
                assert c.oom_kills(group) > kills
                set_memory_limit(group, 2 << 30)  # let pqd stop cleanly
        finally:
            ballast.kill()
            ballast.wait(10)
