"""`pqd once` as an operator runs it: a real process, real workers, real output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PQD = [sys.executable, "-m", "pqd"]


def run_pqd(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PQD, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def test_once_prints_the_seed_trace_and_a_summary() -> None:
    done = run_pqd("once")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.startswith("count(")] == [
        f"count({n})" for n in (2, 4, 6, 8, 10)
    ]
    assert lines.count("Full q !!!") == 10
    assert sum(line.endswith(" True") for line in lines) == 10
    assert sum(line.startswith("parent:  ") for line in lines) == 10
    assert "**********" in lines
    assert "result: success" in lines
    assert "leaked_processes: 0" in lines
    assert any(line.startswith("pid_count_delta: ") for line in lines)
    assert done.stderr == ""


def test_once_json_is_the_results() -> None:
    done = run_pqd("once", "--json", "--start-method", "spawn")

    assert done.returncode == 0, done.stderr
    (result,) = json.loads(done.stdout)
    assert result["success"] is True
    assert result["start_method"] == "spawn"
    assert result["jobs_completed"] == 10
    assert result["queue_full_events"] == 10
    assert result["pid_count_delta"] == (
        result["host_pid_count_after"] - result["host_pid_count_before"]
    )


def test_once_exits_1_when_a_cycle_fails(tmp_path: Path) -> None:
    # Validation only checks the pauses (2 x 1 s < 2.001 s); starting the Manager and the
    # pool takes far more than the 1 ms left, so the cycle must time out.
    config = tmp_path / "pqd.toml"
    config.write_text('[probes.slow]\njob_pause = "1s"\nrounds = 1\ntimeout = "2001ms"\n')
    done = run_pqd("once", "--config", str(config), "--start-method", "spawn", "--workers", "1")

    assert done.returncode == 1, done.stdout + done.stderr
    assert "result: failed (timeout)" in done.stdout
    assert "leaked_processes: 0" in done.stdout


def test_textfile_is_written_atomically_and_passes_promtool(tmp_path: Path) -> None:
    target = tmp_path / "pqd.prom"
    done = run_pqd("once", "--textfile", str(target))

    assert done.returncode == 0, done.stderr
    text = target.read_text()
    assert 'pqd_last_cycle_success{probe="default"} 1.0' in text
    assert 'pqd_last_cycle_queue_full_events{probe="default"} 10.0' in text
    assert "process_cpu_seconds_total" not in text  # node_exporter has its own
    assert [p.name for p in tmp_path.iterdir()] == ["pqd.prom"]  # no temp file left
    promtool = shutil.which("promtool")
    assert promtool, "promtool is installed by `make test` (Debian package prometheus)"
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert (check.returncode, check.stdout, check.stderr) == (0, "", "")


def test_version() -> None:
    done = run_pqd("--version")

    assert done.returncode == 0
    assert done.stdout.startswith("pqd ")


@pytest.mark.parametrize("args", [["once", "--workers", "0"], ["check-config", "/nonexistent"]])
def test_bad_input_from_a_real_process_is_one_line(args: list[str]) -> None:
    done = run_pqd(*args)

    assert done.returncode in (2, 78)
    assert len(done.stderr.splitlines()) == 1
    assert "Traceback" not in done.stderr
