"""`pqd run` as a real process: scheduled cycles, the exposition over HTTP, skips, reloads, stop."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from pqd.results import FAILURE_REASONS, PHASES
from tests.helpers.contract import CONTRACT_COUNTERS, CONTRACT_GAUGES
from tests.helpers.pqd_process import PqdProcess, running_pqd, sample
from tests.helpers.waiting import wait_until

TWO_PROBES = """
[probes.fs]
start_method = "forkserver"
interval = "1s"
shared_memory_bytes = 1048576

[probes.sp]
start_method = "spawn"
interval = "4s"
workers = 2
"""

# Every per-probe gauge and the counters without a further label.
DESIGN_NAMES = [
    *sorted(CONTRACT_GAUGES),
    *sorted(CONTRACT_COUNTERS - {"pqd_cycle_failures_total", "pqd_cycles_skipped_total"}),
]


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def cycles(text: str, probe: str) -> float:
    return sample(text, "pqd_cycles_total", probe=probe) or 0.0


def test_two_probes_export_every_design_series(tmp_path: Path) -> None:
    with running_pqd(tmp_path, TWO_PROBES) as pqd:
        first = pqd.scrape_until(
            lambda t: cycles(t, "fs") >= 2 and cycles(t, "sp") >= 1,
            "two cycles of fs and one of sp",
        )
        # Right after an sp cycle ends there are seconds before the next: its live gauges are 0.
        done_sp = cycles(first, "sp")
        text = pqd.scrape_until(lambda t: cycles(t, "sp") > done_sp, "the next sp cycle")
        later = pqd.scrape_until(
            lambda t: cycles(t, "fs") > cycles(text, "fs") + 1, "more fs cycles"
        )

    for name in DESIGN_NAMES:
        for probe in ("fs", "sp"):
            assert sample(text, name, probe=probe) is not None, (name, probe)
    for probe, workers in (("fs", 4), ("sp", 2)):
        n = cycles(text, probe)
        assert sample(text, "pqd_last_cycle_success", probe=probe) == 1
        assert sample(text, "pqd_last_cycle_jobs_completed", probe=probe) == 10
        assert sample(text, "pqd_last_cycle_queue_full_events", probe=probe) == 10
        assert sample(text, "pqd_last_cycle_queue_depth_max", probe=probe) == 3
        assert sample(text, "pqd_last_cycle_leaked_processes", probe=probe) == 0
        assert sample(text, "pqd_queue_capacity", probe=probe) == 3
        assert sample(text, "pqd_workers_configured", probe=probe) == workers
        assert sample(text, "pqd_jobs_completed_total", probe=probe) == 10 * n
        assert sample(text, "pqd_queue_full_events_total", probe=probe) == 10 * n
        assert sample(text, "pqd_jobs_failed_total", probe=probe) == 0
        assert sample(text, "pqd_cycle_duration_seconds_count", probe=probe) == n
        assert (sample(text, "pqd_host_pid_count", probe=probe) or 0) > 0
        for reason in FAILURE_REASONS:
            assert sample(text, "pqd_cycle_failures_total", probe=probe, reason=reason) == 0
        for phase in PHASES:
            # sp has no shared-memory phase (shared_memory_bytes 0): its series stays at 0.
            runs = 0 if (probe, phase) == ("sp", "shared_memory") else n
            assert (
                sample(text, "pqd_phase_duration_seconds_count", probe=probe, phase=phase) == runs
            )
        for operation in ("put", "get"):
            assert (
                sample(
                    text,
                    "pqd_queue_operation_duration_seconds_count",
                    probe=probe,
                    operation=operation,
                )
                or 0
            ) >= 20 * n
        assert sample(text, "pqd_last_cycle_timestamp_seconds", probe=probe) == sample(
            text, "pqd_last_cycle_success_timestamp_seconds", probe=probe
        )
    assert sample(text, "pqd_queue_depth", probe="sp") == 0
    assert sample(text, "pqd_workers_live", probe="sp") == 0
    # A cycle of fs may outlast its 1 s interval on a loaded machine: then it is skipped.
    for reason in ("overlap", "missed"):
        assert sample(text, "pqd_cycles_skipped_total", probe="fs", reason=reason) is not None
    assert sample(text, "pqd_probe_info", probe="fs", start_method="forkserver") == 1
    assert sample(text, "pqd_probe_info", probe="sp", start_method="spawn") == 1
    assert sample(text, "pqd_build_info") == 1
    assert sample(text, "pqd_config_last_reload_successful") == 1
    assert (sample(text, "pqd_config_last_reload_success_timestamp_seconds") or 0) > 0
    assert (sample(text, "process_resident_memory_bytes") or 0) > 0
    assert sample(text, "python_info") == 1
    ts_before = sample(text, "pqd_last_cycle_timestamp_seconds", probe="fs") or 0
    assert (sample(later, "pqd_last_cycle_timestamp_seconds", probe="fs") or 0) > ts_before

    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with Debian's prometheus package (make test installs it)"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")


def test_a_cycle_longer_than_its_interval_is_skipped_never_overlapped(tmp_path: Path) -> None:
    config = '[probes.slow]\ninterval = "1s"\njob_pause = "300ms"\nworkers = 2\n'
    with running_pqd(tmp_path, config) as pqd:
        text = pqd.scrape_until(
            lambda t: (
                cycles(t, "slow") >= 3
                and (sample(t, "pqd_cycles_skipped_total", probe="slow", reason="overlap") or 0)
                >= 3
            ),
            "three cycles and three skips",
            seconds=60,
        )
        finished = pqd.log_events("cycle finished")
        skipped = pqd.log_events("cycle skipped")

    spans = sorted((float(e["started_at"]), float(e["ended_at"])) for e in finished)
    assert len(spans) >= 3
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, "two cycles of one probe ran at once"
    assert all(float(e["duration_seconds"]) > 1.0 for e in finished)
    assert skipped and all(int(e["count"]) >= 1 for e in skipped)
    assert sample(text, "pqd_cycles_skipped_total", probe="slow", reason="missed") == 0


def test_skips_are_all_counted_but_logged_at_most_once_a_second(tmp_path: Path) -> None:
    """A 100 ms interval (the floor) under cycles of about 0.6 s: several skips a second, each
    one counted; the log says so in a line a second at most, with the count."""
    config = '[probes.fast]\ninterval = "100ms"\njob_pause = "60ms"\nworkers = 2\n'
    with running_pqd(tmp_path, config) as pqd:
        started = time.monotonic()
        pqd.scrape_until(
            lambda t: (
                (sample(t, "pqd_cycles_skipped_total", probe="fast", reason="overlap") or 0) >= 20
            ),
            "twenty skips",
            seconds=60,
        )
        skipped = pqd.log_events("cycle skipped")
        elapsed = time.monotonic() - started
        text = pqd.scrape()

    total = sample(text, "pqd_cycles_skipped_total", probe="fast", reason="overlap") or 0
    assert sum(int(e["count"]) for e in skipped) <= total
    assert len(skipped) <= elapsed + 2  # at most one a second (and the one at start-up)
    assert len(skipped) < total / 2


def test_sighup_applies_a_good_config_and_refuses_a_bad_one(tmp_path: Path) -> None:
    with running_pqd(tmp_path, '[probes.a]\ninterval = "1s"\n') as pqd:
        wait_until(lambda: cycles(pqd.scrape(), "a") >= 1, "a cycle of a")

        pqd.config_path.write_text('[probes.a]\ninterval = "1s"\n[probes.b]\ninterval = "1s"\n')
        pqd.signal(signal.SIGHUP)
        wait_until(lambda: cycles(pqd.scrape(), "b") >= 1, "probe b after reload")
        good = pqd.scrape()

        pqd.config_path.write_text("[probes.a]\nworkers = 0\n")
        pqd.signal(signal.SIGHUP)
        bad = pqd.scrape_until(
            lambda t: sample(t, "pqd_config_last_reload_successful") == 0,
            "the failed reload to be exported",
        )
        base = cycles(bad, "b")
        after = pqd.scrape_until(
            lambda t: cycles(t, "b") > base, "probe b to keep running on the old config"
        )
        refused = pqd.log_events("config reload refused; keeping the running config")

    assert sample(good, "pqd_config_last_reload_successful") == 1
    assert sample(good, "pqd_probe_info", probe="b", start_method="forkserver") == 1
    assert sample(after, "pqd_last_cycle_success", probe="a") == 1
    assert sample(after, "pqd_config_last_reload_success_timestamp_seconds") == sample(
        good, "pqd_config_last_reload_success_timestamp_seconds"
    )
    assert len(refused) == 1
    assert "probes.a.workers=0" in refused[0]["err"]


def test_reload_endpoint_only_when_enabled(tmp_path: Path) -> None:
    with running_pqd(tmp_path, '[probes.a]\ninterval = "1h"\n') as pqd:
        assert pqd.get("/-/reload", method="POST")[0] == 404
        assert pqd.get("/-/reload")[0] == 405
        pqd.config_path.write_text('enable_reload_endpoint = true\n[probes.a]\ninterval = "1h"\n')
        pqd.signal(signal.SIGHUP)
        wait_until(lambda: pqd.get("/-/reload", method="POST")[0] == 200, "reload endpoint")
        pqd.config_path.write_text('enable_reload_endpoint = true\n[probes.a]\nrounds = "x"\n')
        status, body = pqd.get("/-/reload", method="POST")

    assert status == 422
    assert "probes.a.rounds" in body


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_stop_during_a_long_cycle_is_clean_and_quick(tmp_path: Path, stop_signal: int) -> None:
    # Stopping must not wait for the job in progress: every job sleeps 20 s, so pqd gone in less
    # than that is the proof (rather than a fixed limit in seconds, which a busy machine breaks).
    job_pause = 20.0
    config = f'[probes.long]\ninterval = "1s"\njob_pause = "{job_pause:g}s"\ntimeout = "600s"\n'
    pqd = PqdProcess(tmp_path, config).wait_ready()
    try:
        # Manager + 4 workers (+ forkserver and resource tracker) exist only inside a cycle.
        tree = wait_until(
            lambda: [d for d in [pqd.descendants()] if len(d) >= 7], "a cycle in progress"
        )[0]
        t0 = time.monotonic()
        pqd.signal(stop_signal)
        code = pqd.proc.wait(job_pause * 2)
        elapsed = time.monotonic() - t0
        wait_until(
            lambda: not [p for p in tree if alive(p)],
            "every process of the cycle to be gone",
            seconds=5,
        )
    finally:
        pqd.stop()

    assert code == 0
    assert elapsed < job_pause, f"pqd took {elapsed:.1f} s to stop: it waited for the job"
    assert pqd.log_events("pqd stopped")
    assert not [p for p in tree if alive(p)]


def test_a_probe_removed_while_its_cycle_runs_leaves_no_trace(tmp_path: Path) -> None:
    """Its cycle ends after the reload: it must not come back in the recent cycles (nor in
    the metrics), and its runner is stopped."""
    both = '[probes.gone]\ninterval = "1s"\njob_pause = "300ms"\n[probes.stay]\ninterval = "1s"\n'
    with running_pqd(tmp_path, both) as pqd:
        wait_until(
            lambda: (sample(pqd.scrape(), "pqd_workers_live", probe="gone") or 0) > 0,
            "a cycle of the probe to be removed",
        )
        pqd.config_path.write_text('[probes.stay]\ninterval = "1s"\n')
        pqd.signal(signal.SIGHUP)
        wait_until(lambda: pqd.log_events("config reloaded"), "the reload")

        def runners() -> int:
            found = 0
            for proc in pqd.descendants():
                with contextlib.suppress(psutil.Error):  # gone, or a zombie not yet reaped
                    found += "pqd.runner.main" in " ".join(proc.cmdline())
            return found

        wait_until(lambda: runners() == 1, "the removed probe's runner to stop")
        landing = pqd.get("/")[1]
        text = pqd.scrape()

    assert "gone" not in landing
    assert 'probe="gone"' not in text
