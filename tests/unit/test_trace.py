"""pqd.trace's summary lines: plain data in, lines out; no processes."""

from __future__ import annotations

import dataclasses

from pqd.results import StuckProcess
from pqd.trace import (
    STACK_NOT_SHOWN,
    render_headroom,
    render_summary,
    render_trace,
    render_where_stuck,
    stuck_as_shown,
)
from tests.helpers.factories import seed_shaped_result

#: The summary's keys before the per-probe runner, in order; scripts (and test_cli_once) parse
#: them, so they stay first and in this order.
OLDER_KEYS = [
    "probe",
    "result",
    "detail",
    "cycle_id",
    "start_method",
    "duration_seconds",
    "phases",
    "jobs_completed",
    "jobs_failed",
    "queue_full_events",
    "queue_capacity",
    "queue_depth_max",
    "items_put",
    "items_got",
    "pid_count_before",
    "pid_count_during",
    "pid_count_after",
    "pid_count_delta",
    "leaked_processes",
    "multiprocessing_helpers_started",
]


def keys(lines: list[str]) -> list[str]:
    return [line.split(":", 1)[0] for line in lines]


def test_older_lines_come_first_and_in_order_then_the_new_ones() -> None:
    lines = render_summary(seed_shaped_result(containment="cgroup"))
    assert keys(lines) == [
        *OLDER_KEYS,
        "containment",
        "cpu_seconds",
        "max_rss_bytes",
        "python_implementation",
        "python_version",
    ]
    assert lines[-5:] == [
        "containment: cgroup",
        "cpu_seconds: not measured",
        "max_rss_bytes: not measured",
        "python_implementation: unknown",
        "python_version: unknown",
    ]
    assert "leaked_processes: 0" in lines


def test_measured_cpu_and_rss() -> None:
    lines = render_summary(seed_shaped_result(cpu_seconds=0.7563, max_rss_bytes=44_040_192))
    assert lines[-5:-2] == [
        "containment: subreaper",
        "cpu_seconds: 0.756",
        "max_rss_bytes: 44040192",
    ]
    zero = render_summary(seed_shaped_result(cpu_seconds=0.0, max_rss_bytes=0))
    assert zero[-4:-2] == ["cpu_seconds: 0.000", "max_rss_bytes: 0"]


def test_a_count_not_measured_is_said_so_not_subtracted() -> None:
    """A cycle pqd ended before its runner reported the start printed pid_count_before: -1
    and a pid_count_delta of the host's whole pid count."""
    killed = render_summary(seed_shaped_result(host_pid_count_before=-1, host_pid_count_during=-1))
    assert [line for line in killed if line.startswith("pid_count_")] == [
        "pid_count_before: not sampled",
        "pid_count_during: not sampled",
        "pid_count_after: 200",
        "pid_count_delta: not sampled",
    ]
    whole = render_summary(seed_shaped_result(host_pid_count_after=203))
    assert "pid_count_delta: 3" in whole and "pid_count_before: 200" in whole
    # Fewer processes after than before is a measured delta, not a placeholder.
    fewer = render_summary(seed_shaped_result(host_pid_count_after=195))
    assert "pid_count_delta: -5" in fewer


def test_the_interpreter_the_runner_ran_under() -> None:
    lines = render_summary(
        seed_shaped_result(python_implementation="cpython", python_version="3.13.0")
    )
    assert lines[-2:] == ["python_implementation: cpython", "python_version: 3.13.0"]


def test_each_leaked_process_gets_one_line_with_its_command() -> None:
    result = seed_shaped_result(
        success=False,
        reason="leak",
        leaked_processes=3,
        leaked_pids=(4242, 4243, 4244),
        # A hostile command line: a newline would forge a summary line, an escape would
        # recolour the operator's terminal. The third pid has no command line at all.
        leaked_commands=("sh -c 'sleep 300'\nresult: success", "evil\x1b[2J  \t name"),
    )
    lines = render_summary(result)
    assert keys(lines)[: len(OLDER_KEYS)] == OLDER_KEYS
    assert lines[-5:-2] == [
        "leaked: 4242 sh -c 'sleep 300' result: success",
        "leaked: 4243 evil\\x1b[2J name",
        "leaked: 4244 ?",
    ]
    # A failed result without a cause (an older runner's) reads as unknown.
    assert lines[-2:] == ["cause: unknown", "cause_detail: "]
    assert lines.count("result: success") == 0
    assert all(line.isprintable() for line in lines)


def test_a_very_long_command_line_is_cut_short() -> None:
    result = seed_shaped_result(leaked_processes=1, leaked_pids=(7,), leaked_commands=("x" * 5000,))
    (line,) = [line for line in render_summary(result) if line.startswith("leaked: ")]
    assert line == "leaked: 7 " + "x" * 499 + "…"


def test_a_large_cycle_traces_what_was_kept_and_says_what_was_not() -> None:
    """pqd.bounds: a job keeps TRACE_ITEMS item names and a cycle TRACE_JOBS reports; the trace
    shows them and counts the rest, so it stays a readable size whatever the probe."""
    from dataclasses import replace

    from pqd.bounds import TRACE_ITEMS
    from pqd.trace import render_trace
    from tests.helpers.factories import job

    names = tuple(chr(ord("A") + i) for i in range(TRACE_ITEMS))
    producer = replace(job("producer", 1, 1), items=names, item_count=1000, full_events=500)
    consumer = replace(job("consumer", 1, 2), items=names, item_count=1000)
    kept = (*[producer, consumer] * 5, *[producer, consumer] * 5)
    lines = render_trace(seed_shaped_result(jobs=kept, jobs_not_kept=80))

    assert lines.count("(+974 more put in q)") == 10
    assert lines.count("(+974 more get from q)") == 10
    assert lines.count("Full q !!!") == 10 * TRACE_ITEMS
    assert lines.count(f"(+{500 - TRACE_ITEMS} more Full q !!!)") == 10
    marker = "... 80 jobs not kept (pqd keeps the first and last)"
    assert lines.count(marker) == 1
    # Between the first ten reports and the last ten.
    assert sum(line.startswith("count(") for line in lines[: lines.index(marker)]) == 5
    assert sum(line.startswith("count(") for line in lines[lines.index(marker) :]) == 5


def test_a_failed_cycle_ends_with_its_cause_then_what_its_tree_wrote() -> None:
    result = seed_shaped_result(
        success=False,
        reason="spawn_failed",
        cause="shm_full",
        cause_detail="/dev/shm is full: 64 KiB tmpfs, 0 B free",
        stderr="x.py:1: ResourceWarning: unclosed\n",
        stderr_bytes=33,
        warnings={"resource_warning": 1, "other": 0},
    )
    assert render_summary(result)[-4:] == [
        "cause: shm_full",
        "cause_detail: /dev/shm is full: 64 KiB tmpfs, 0 B free",
        "stderr_bytes: 33",
        "warnings: resource_warning=1",
    ]
    assert "cause: shm_full: /dev/shm is full: 64 KiB tmpfs, 0 B free" in render_trace(result)


def test_counts_that_were_not_sampled_say_so_never_minus_one() -> None:
    """A cycle that failed before the workers ran keeps -1 for the count it never took (and a
    count /proc could not give is -1 too): the text says "not sampled", and the delta of a
    count that is missing is not a number either."""
    from dataclasses import replace

    from tests.helpers.factories import job, tight_headroom

    during = seed_shaped_result(
        success=False,
        reason="spawn_failed",
        host_pid_count_before=91,
        host_pid_count_during=-1,
        host_pid_count_after=82,
        jobs=(replace(job("producer", 1, 1), host_pid_count=-1),),
        headroom=tight_headroom(pids_current=-1, memory_usage_bytes=-1),
    )
    summary = render_summary(during)
    assert "pid_count_before: 91" in summary
    assert "pid_count_during: not sampled" in summary
    assert "pid_count_after: 82" in summary
    assert "pid_count_delta: -9" in summary
    headroom = dict(line.split(": ", 1) for line in render_headroom(during))
    assert headroom["headroom_pids"] == "not sampled of 2048 (cgroup v2 /sys/fs/cgroup/app)"
    assert headroom["headroom_memory"].startswith("not sampled of 1073741824 bytes (cgroup v1")
    trace = render_trace(during)
    (pid_line,) = [line for line in trace if line.startswith("('pid'")]
    assert "'pid count', 'not sampled'" in pid_line, trace

    before = render_summary(replace(during, host_pid_count_before=-1))
    assert "pid_count_before: not sampled" in before
    assert "pid_count_delta: not sampled" in before  # not 82 - (-1) = 83
    lines = render_trace(replace(during, host_pid_count_before=-1, host_pid_count_after=-1))
    assert lines[0].endswith(" MainProcess not sampled") and lines[-1].endswith(" not sampled")
    for text in (summary, before, lines, render_headroom(during)):
        assert not any(line.endswith(" -1") or " -1 " in line for line in text), text


STACK = (
    "Thread 0x00007f0000000001 (most recent call first):\n"
    '  File "/usr/lib/python3.11/threading.py", line 331 in wait\n'
    '  File "/usr/lib/python3.11/multiprocessing/managers.py", line 176 in serve_forever\n'
)


def test_where_stuck_lines_of_a_failure_on_an_error_are_one_per_process() -> None:
    """spawn_failed: nothing was left unfinished, so no stack and no note about stacks; the
    JSON leaves the stacks out the same way and says why."""
    stuck = (
        StuckProcess(700, "runner", "R", "", STACK),
        StuckProcess(701, "Manager", "S", "futex_do_wait", STACK),
        StuckProcess(702, "other", "Z", "", None, "zombie: not asked"),
    )
    result = seed_shaped_result(success=False, reason="spawn_failed", stuck=stuck)
    assert render_where_stuck(result) == [
        "where it was stuck: nothing (spawn_failed ended on an error, not with work "
        "unfinished); its processes then",
        "  runner pid 700: state R (running)",
        "  Manager pid 701: state S (sleeping), wchan futex_do_wait",
        "  other pid 702: state Z (zombie)",
    ]
    assert [(p.stack, p.note) for p in stuck_as_shown(result)] == [
        (None, STACK_NOT_SHOWN),
        (None, STACK_NOT_SHOWN),
        (None, "zombie: not asked"),
    ]
    for reason in ("timeout", "helper_died"):  # work left unfinished: every stack explains
        unfinished = dataclasses.replace(result, reason=reason)
        assert stuck_as_shown(unfinished) == stuck
        lines = render_where_stuck(unfinished)
        assert lines[0] == "where it was stuck:"
        assert sum(line.startswith("    ") for line in lines) == 6, lines
        assert "  other pid 702: state Z (zombie) (zombie: not asked)" in lines
