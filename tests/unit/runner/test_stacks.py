"""pqd.runner.stacks: the one-line summary and frame parsing on plain text, and a capture of a real
process (the smallest real thing: a Python child that installed the dump and sleeps)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from pqd.results import StuckProcess
from pqd.runner import stacks
from pqd.trace import render_where_stuck
from tests.helpers.factories import seed_shaped_result
from tests.helpers.waiting import wait_until

# faulthandler's format: threads newest first, so the main thread ("Current thread" here,
# because it took the signal) is the last block; frames innermost first.
DUMP = textwrap.dedent(
    """\
    Thread 0x00007f34bd1ff6c0 (most recent call first):
      File "/src/pqd/runner/jobs.py", line 170 in wait_for_pqd
      File "/usr/lib/python3.11/threading.py", line 982 in run

    Current thread 0x00007f34be7efb80 (most recent call first):
      File "/jobs/fault_jobs.py", line 133 in sleeping_producer
      File "/src/pqd/runner/jobs.py", line 221 in run_job
    """
)


def test_innermost_frame_is_the_main_threads() -> None:
    assert stacks.innermost_frame(DUMP) == "fault_jobs.py:133 in sleeping_producer"
    assert stacks.innermost_frame("") is None


def test_summary_is_one_bounded_line() -> None:
    processes = (
        StuckProcess(812, "pool worker 1", "T", "do_signal_stop", None, "stopped"),
        StuckProcess(813, "pool worker 2", "S", "hrtimer_nanosleep", DUMP, ""),
    )
    assert stacks.summary(processes) == (
        "pool worker 1 pid 812 T; pool worker 2 pid 813 S at fault_jobs.py:133 in sleeping_producer"
    )
    many = processes * 50
    line = stacks.summary(many, limit=120)
    assert len(line) == 120 and line.endswith("...")
    assert "\n" not in stacks.summary(many)


def test_where_stuck_lines_for_pqd_once() -> None:
    result = seed_shaped_result(
        success=False,
        reason="timeout",
        stuck=(StuckProcess(812, "pool worker 1", "T", "do_signal_stop", None, "stopped"),),
        job_traceback="Traceback (most recent call last):\nValueError: x\n",
    )
    assert render_where_stuck(result) == [
        "where it was stuck:",
        "  pool worker 1 pid 812: state T (stopped), wchan do_signal_stop (stopped)",
        "job traceback:",
        "  Traceback (most recent call last):",
        "  ValueError: x",
    ]
    assert render_where_stuck(seed_shaped_result()) == []


def test_capture_of_a_real_process_and_of_a_stopped_one(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """\
        import sys, time
        from pqd.runner import stacks
        assert stacks.install(sys.argv[1])
        print("ready", flush=True)
        def napping():
            time.sleep(60)  # NAP
        napping()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        # "ready" comes just before the sleep: wait until it sleeps (or a busy machine shows R).
        wait_until(lambda: stacks._read_state(child.pid) == "S", "the child to sleep", 10.0)
        (proc,) = stacks.capture({child.pid: "pool worker 1"}, str(tmp_path))
        assert (proc.pid, proc.role, proc.state) == (child.pid, "pool worker 1", "S")
        assert proc.stack is not None and "line 6 in napping" in proc.stack, proc
        assert proc.note == ""

        os.kill(child.pid, signal.SIGSTOP)
        wanted = ("T", "t")
        wait_until(lambda: stacks._read_state(child.pid) in wanted, "the child to stop", 10.0)
        (stopped,) = stacks.capture({child.pid: "pool worker 1"}, str(tmp_path))
        assert stopped.state in wanted and stopped.stack is None
        assert stopped.note.startswith("stopped")
    finally:
        child.kill()
        child.wait()
    stacks.prune(str(tmp_path))
    assert not list(tmp_path.iterdir())


def test_a_process_without_the_hook_is_reported_not_signalled(tmp_path: Path) -> None:
    (proc,) = stacks.capture({os.getppid(): "other"}, str(tmp_path))
    assert proc.stack is None and "no stack dump handler" in proc.note


def test_capture_without_asking_reports_states_only(tmp_path: Path) -> None:
    """capture_stacks = false: nothing is signalled, each process has its state and a note."""
    (proc,) = stacks.capture({os.getpid(): "runner"}, str(tmp_path), ask=False)
    assert proc.state == "R" and proc.stack is None
    assert proc.note == "stacks not captured (capture_stacks = false)"
