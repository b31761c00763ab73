"""`pqd once` as an operator runs it: a real process, real workers, real output."""

from __future__ import annotations

import json
import re
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


def _textfile_targets(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Each target `pqd once --textfile` cannot write, and what its one line must say."""
    (tmp_path / "read-only").mkdir()
    (tmp_path / "a-directory.prom").mkdir()
    return {
        "missing directory": (tmp_path / "missing" / "pqd.prom", "does not exist"),
        "read-only directory": (tmp_path / "read-only" / "pqd.prom", "Read-only file system"),
        "a directory": (tmp_path / "a-directory.prom", "not a regular file"),
    }


def test_a_textfile_target_that_cannot_be_written_is_refused_before_the_cycle(
    tmp_path: Path,
) -> None:
    """A missing or unwritable directory was found only when the metrics were written, after
    the whole cycle (its trace printed, its exit code lost). Root ignores mode bits, so the
    read-only directory is a read-only bind mount in a mount namespace of pqd's own."""
    from tests.helpers.namespaces import mount_namespace, read_only_steps
    from tests.helpers.wraps import run

    targets = _textfile_targets(tmp_path)
    with mount_namespace(read_only_steps([tmp_path / "read-only"])) as namespace:
        touch = run(["touch", str(tmp_path / "read-only" / "x")], namespace.wrap)
        assert touch.returncode != 0 and "Read-only file system" in touch.stderr, touch
        done = {
            name: run([*PQD, "once", "--textfile", str(target)], namespace.wrap, timeout=60)
            for name, (target, _) in targets.items()
        }

    for name, (target, problem) in targets.items():
        line = done[name].stderr.strip()
        assert done[name].returncode == 2, (name, done[name])
        assert done[name].stdout == "", (name, "a cycle ran")
        assert len(done[name].stderr.splitlines()) == 1, (name, done[name].stderr)
        assert line.startswith(f"pqd: error: --textfile={str(target)!r}: "), (name, line)
        assert problem in line, (name, line)
    assert sorted(p.name for p in (tmp_path / "read-only").iterdir()) == []


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


def peak_rss_of_tree(*args: str) -> tuple[int, list[dict[str, object]]]:
    """Run `pqd once --json ARGS`; the peak RSS (bytes) of the largest process of its whole
    tree (wait4 folds every reaped descendant's peak into pqd's), and the results."""
    import os
    import tempfile

    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen([*PQD, "once", "--json", *args], stdout=out, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        results = json.loads(out.read())
    assert proc.returncode == 0, (args, proc.stderr.read() if proc.stderr else b"")
    return usage.ru_maxrss * 1024, results


@pytest.mark.slow
def test_a_large_probe_costs_pqd_and_its_tree_bounded_memory() -> None:
    """A cycle keeps counts and a bounded trace (pqd.bounds), not every item and duration: a
    probe moving 120,000 items through a large queue peaks no higher than the default one
    (measured side by side; before, 100,000 items x 2 rounds took the parent to 176 MB)."""
    from pqd.bounds import TRACE_ITEMS, TRACE_JOBS

    small_peak, _ = peak_rss_of_tree("--rounds", "1")
    big_args = ("--queue-maxsize", "100000", "--items-per-producer", "30000", "--rounds", "2")
    big_peak, (big,) = peak_rss_of_tree(*big_args, "--timeout", "5m")
    _, (many,) = peak_rss_of_tree("--rounds", "150", "--timeout", "5m")

    assert big_peak <= small_peak + 8 * 1024 * 1024, (small_peak, big_peak)
    assert (big["items_put"], big["items_got"], big["success"]) == (60_000, 60_000, True)
    assert all(len(job["items"]) == TRACE_ITEMS for job in big["jobs"])
    assert sum(big["put_operations"]["counts"]) == 60_000
    assert (many["jobs_completed"], len(many["jobs"]), many["jobs_not_kept"]) == (
        300,
        TRACE_JOBS,
        300 - TRACE_JOBS,
    )


IMPORTED_SCHEDULER = """
import sys
from pqd.cli import main
code = main(["once", "--config", sys.argv[1]])
heavy = {m.split(".")[0] for m in sys.modules if m.startswith(("apscheduler", "asyncio"))}
print(code, sorted(heavy))
"""


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [('interval = "1m"', "0 []"), ('cron = "*/5 * * * *"', "0 ['apscheduler', 'asyncio']")],
)
def test_once_imports_the_scheduler_only_to_check_a_cron(
    tmp_path: Path, schedule: str, expected: str
) -> None:
    """`pqd once` runs no scheduler: an interval config never imports APScheduler (nor the
    asyncio it pulls in); a cron config imports its parser to check the expression, nothing
    more starts."""
    config = tmp_path / "pqd.toml"
    config.write_text(f"[probes.p]\n{schedule}\nworkers = 1\nrounds = 1\n")
    done = subprocess.run(
        [sys.executable, "-c", IMPORTED_SCHEDULER, str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == expected, done.stdout[-2000:]


def test_a_spawn_failed_cycle_lists_its_processes_in_one_line_each_without_stacks() -> None:
    """The pool cannot start (24 file descriptors for 8 workers): the cycle ends on an error, not
    at a deadline, so nothing was stuck and the stacks of its idle processes explain nothing.
    Each process is one line of state, in the text and in --json; the count during the cycle,
    never taken, reads "not sampled"."""
    limited = ["prlimit", "--nofile=24:24", "--", *PQD, "once", "--workers", "8"]
    done = subprocess.run(limited, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert "result: failed (spawn_failed)" in lines, done.stdout
    assert any("Too many open files" in line for line in lines if line.startswith("detail: "))
    assert "pid_count_during: not sampled" in lines
    (start,) = [i for i, line in enumerate(lines) if line.startswith("where it was stuck:")]
    assert "spawn_failed" in lines[start], lines[start]
    processes = lines[start + 1 : lines.index("", start)]
    assert processes, done.stdout
    assert any(line.startswith("  runner pid ") for line in processes), processes
    assert all(re.fullmatch(r"  \S.* pid \d+: state .*", line) for line in processes), processes
    assert "Thread 0x" not in done.stdout and 'File "' not in done.stdout, done.stdout

    as_json = subprocess.run([*limited, "--json"], capture_output=True, text=True, timeout=120)
    (result,) = json.loads(as_json.stdout)
    assert result["reason"] == "spawn_failed", result["detail"]
    assert result["stuck"] and all(p["stack"] is None for p in result["stuck"]), result["stuck"]
    assert any(p["note"].startswith("stack not shown") for p in result["stuck"]), result["stuck"]
