"""/cycles/ID driven with environ dicts: summary, where it was stuck, leaks, phases, jobs,
trace."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest

from pqd.results import CycleResult, StuckProcess
from tests.helpers.web import (
    SEED_COLON,
    XSS,
    XSS_ESCAPED,
    Fake,
    get,
    make_cycle,
    make_job,
    rows,
    table,
    text_of,
)

# --- cycle pages -----------------------------------------------------------------------------


def test_cycle_page_shows_summary_phases_jobs_and_trace() -> None:
    cycle = make_cycle(
        cycle_id="abc123",
        success=False,
        reason="leak",
        detail="2 processes left behind: 4242 4243",
        leaked_processes=2,
        leaked_pids=(4242, 4243),
        phase_seconds={"teardown": 0.5, "pool_start": 0.25},
    )
    fake = Fake([cycle])
    r = get(fake.app(), "/cycles/abc123")
    assert r.status == 200
    assert fake.looked_up == ["abc123"]
    for text in (
        "failed: leak",
        "2 processes left behind: 4242 4243",
        "4242 4243",
        "forkserver",
        "forkserver 1999",
        "ForkServerPoolWorker-1",
        "A B C D E",
        "300 / 307 / 302",
    ):
        assert text in r.text, text
    # Phases in cycle order, the unreached "jobs" phase absent.
    assert r.text.index(">pool_start<") < r.text.index(">teardown<")
    assert ">jobs<" not in r.text
    pre = re.search(r'<pre class="trace">(.*)</pre>', r.text, re.S)
    assert pre is not None
    assert pre.group(1).splitlines() == [
        "1700000000.0 2000 MainProcess 300",
        f"put in q{SEED_COLON}A",
        "Full q !!!",
        "count(1)",
        "**********",
    ]


def summary_rows(page: str) -> dict[str, str]:
    """The cycle page's key/value rows (its first table without a class), as the page writes
    them (escaped)."""
    start = page.index("<table>")
    table = page[start : page.index("</table>", start)]
    return dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", table))


def test_a_failed_cycle_page_starts_with_what_failed_and_where_it_was_stuck() -> None:
    """The reason, the one-line cause and where it was stuck come first; the 25-row summary
    after them. A successful cycle's page keeps its order: the summary first."""
    failed = stuck_cycle(cause="stopped", cause_detail="pool worker 2 pid 4243 was stopped")
    page = get(Fake([failed]).app(), "/cycles/c1").text
    outcome = table(page, "outcome")
    assert [text_of(r) for r in re.findall(r"<tr>(.*?)</tr>", outcome)] == [
        "resultfailed: timeout",
        f"detail{failed.detail}",
        "causestopped: pool worker 2 pid 4243 was stopped",
    ]
    marks = ('class="outcome"', '<h3 id="stuck">', '<h3 id="summary">')
    order = [page.index(mark) for mark in marks]
    assert order == sorted(order), order
    summary = summary_rows(page)
    assert page.index("<table>") > page.index('<h3 id="summary">')
    assert list(summary)[:3] == ["cycle id", "probe", "started (UTC)"]  # not twice
    assert len(summary) == 24

    page = get(Fake([make_cycle()]).app(), "/cycles/c1").text
    assert 'class="outcome"' not in page and 'id="summary"' not in page
    assert list(summary_rows(page))[:4] == ["cycle id", "probe", "result", "detail"]
    assert page.index("<table>") < page.index("<h3>Phases</h3>")


def outcome_rows(page: str) -> dict[str, str]:
    """A failed cycle's result, detail and cause rows, at the top of its page (escaped)."""
    return dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", table(page, "outcome")))


def test_cycle_page_shows_containment_cpu_and_peak_rss() -> None:
    cycle = make_cycle(containment="cgroup", cpu_seconds=0.7563, max_rss_bytes=44_040_192)
    rows = summary_rows(get(Fake([cycle]).app(), "/cycles/c1").text)
    assert rows["containment"] == "cgroup"
    assert rows["CPU (whole tree)"] == "0.756 s"
    assert rows["peak RSS (largest process)"] == "42.0 MiB"  # 44,040,192 B = 42 MiB


def test_cycle_page_says_when_cpu_and_rss_were_not_measured() -> None:
    rows = summary_rows(get(Fake([make_cycle()]).app(), "/cycles/c1").text)
    assert rows["containment"] == "subreaper"  # the default
    assert rows["CPU (whole tree)"] == "not measured"
    assert rows["peak RSS (largest process)"] == "not measured"
    # A measured zero is shown as zero, not as "not measured".
    cycle = make_cycle(cpu_seconds=0.0, max_rss_bytes=0)
    rows = summary_rows(get(Fake([cycle]).app(), "/cycles/c1").text)
    assert (rows["CPU (whole tree)"], rows["peak RSS (largest process)"]) == ("0.000 s", "0.0 MiB")


def test_cycle_page_lists_leaked_processes_with_escaped_command_lines() -> None:
    hostile = f'sh -c "{XSS}" </td></table><img src=x onerror=alert(1)> & more'
    cycle = make_cycle(
        success=False,
        reason="leak",
        leaked_processes=3,
        leaked_pids=(4242, 4243, 4244),
        # The third pid has no command line (a result from a runner that did not read it).
        leaked_commands=(hostile, "sleep 300" + " x" * 1000),
    )
    r = get(Fake([cycle]).app(), "/cycles/c1")
    assert r.status == 200
    assert "<script>" not in r.text and "<img" not in r.text
    section = r.text[r.text.index("<h3>Leaked processes</h3>") : r.text.index("<h3>Phases</h3>")]
    cells = re.findall(r"<tr><td[^>]*>(.*?)</td><td><code>(.*?)</code></td></tr>", section)
    assert [pid for pid, _ in cells] == ["4242", "4243", "4244"]
    assert cells[0][1] == (
        "sh -c &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot; &lt;/td&gt;&lt;/table&gt;"
        "&lt;img src=x onerror=alert(1)&gt; &amp; more"
    )
    assert cells[1][1].startswith("sleep 300 x x") and cells[1][1].endswith("…")
    assert len(cells[1][1]) == 1000  # cut short: the page stays small
    assert cells[2][1] == "unknown"
    assert summary_rows(r.text)["leaked pids"] == "4242 4243 4244"


def test_cycle_page_without_leaks_has_no_leaked_section() -> None:
    r = get(Fake([make_cycle()]).app(), "/cycles/c1")
    assert "Leaked processes" not in r.text
    assert summary_rows(r.text)["leaked pids"] == "none"


def test_unknown_cycle_is_a_404_page() -> None:
    fake = Fake([make_cycle(cycle_id="known")])
    r = get(fake.app(), "/cycles/nope")
    assert r.status == 404
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert "nope" in r.text
    assert fake.looked_up == ["nope"]


def test_cycle_with_odd_numbers_still_renders() -> None:
    cycle = make_cycle(
        duration_seconds=float("nan"),
        started_at=float("inf"),
        phase_seconds={},
        jobs=(),
        helpers_started=(),
        host_pid_count_during=-1,
        detail="broken \udcff text",
    )
    r = get(Fake([cycle]).app(), "/cycles/c1")
    assert r.status == 200
    assert "No phase was reached." in r.text
    assert "No job reported back." in r.text
    assert "broken ? text" in r.text


def test_counts_that_were_not_sampled_say_so_never_minus_one() -> None:
    """A failed cycle keeps -1 for the counts it never took: the page says "not sampled", and
    a delta from a missing count is not a number either (82 - (-1) is not 83 processes)."""
    from pqd.trace import render_trace

    failed = make_cycle(
        cycle_id="f",
        success=False,
        reason="spawn_failed",
        host_pid_count_before=91,
        host_pid_count_during=-1,
        host_pid_count_after=82,
        jobs=(make_job(queue_depth_after=-1, host_pid_count=-1),),
    )
    unbegun = make_cycle(
        cycle_id="u",
        started_at=1_700_000_010.0,
        success=False,
        reason="spawn_failed",
        host_pid_count_before=-1,
        host_pid_count_during=-1,
        jobs=(),
    )
    fake = Fake([failed, unbegun])
    fake.trace = render_trace
    page = get(fake.app(), "/cycles/f").text
    summary = summary_rows(page)
    assert summary["host pid count before / during / after"] == "91 / not sampled / 82"
    assert summary["pid count delta"] == "-9"
    # None given (an older runner's result): no dangling colon.
    assert outcome_rows(page)["cause"] == "unknown"
    job_row = re.findall(r"<tr><td>(.*?)</td></tr>", page[page.index("<h3>Jobs</h3>") :])[0]
    cells = job_row.split("</td><td>")
    assert (cells[7], cells[11]) == ("not sampled", "not sampled"), cells  # host pids, depth

    page = get(fake.app(), "/cycles/u").text
    summary = summary_rows(page)
    assert summary["host pid count before / during / after"] == "not sampled / not sampled / 302"
    assert summary["pid count delta"] == "not sampled"
    trace = page[page.index('<pre class="trace">') :]
    assert trace.splitlines()[0].endswith("MainProcess not sampled"), trace
    listed = rows(get(fake.app(), "/").text, "cycles")
    assert [row[6] for row in listed] == ["not sampled", "-9"]  # the PID delta column
    for url in ("/", "/cycles/f", "/cycles/u"):
        text = text_of(get(fake.app(), url).text)
        assert not re.search(r"(^|[ />])-1($|[ /<])", text, re.M), (url, text)


# --- where it was stuck -------------------------------------------------------------------------

RUNNER_STACK = (
    "Thread 0x00007f0000000001 (most recent call first):\n"
    '  File "/usr/lib/python3.11/selectors.py", line 415 in select\n'
    '  File "/opt/pqd/src/pqd/runner/main.py", line 88 in main\n'
)
HOSTILE_STACK = f'  File "<job>", line 1 in {XSS}\n  </pre><b>bold</b> & more\n'
JOB_TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/opt/pqd/src/pqd/runner/jobs.py", line 220 in run_job\n'
    f"ValueError: {XSS} & </pre>\n"
)


def stuck_cycle(**overrides: Any) -> CycleResult:
    fields: dict[str, Any] = {
        "success": False,
        "reason": "timeout",
        "detail": "producer job of round 1 unfinished after 2s; pqd killed the tree",
        "stuck": (
            StuckProcess(4242, "runner", "S", "do_select", RUNNER_STACK),
            StuckProcess(4243, "pool worker 2", "T", "do_signal_stop", None, "stopped: no stack"),
            StuckProcess(4244, XSS, "D", "<wchan>", HOSTILE_STACK, "a & b"),
            StuckProcess(4245, "other", "?", "", None, "gone before it could be read"),
            StuckProcess(4246, "forkserver", "x", "", None),
        ),
        "job_traceback": JOB_TRACEBACK,
    }
    return make_cycle(**{**fields, **overrides})


def stuck_part(page: str) -> str:
    """The stuck section: from its heading to the summary under it."""
    return page[page.index('<h3 id="stuck">') : page.index('<h3 id="summary">')]


def test_where_it_was_stuck_lists_processes_stacks_and_the_traceback() -> None:
    r = get(Fake([stuck_cycle()]).app(), "/cycles/c1")
    assert r.status == 200
    assert "<script>" not in r.text and "<b>bold</b>" not in r.text
    part = stuck_part(r.text)
    assert part.startswith('<h3 id="stuck">Where it was stuck</h3>')
    assert rows(part, "stuck") == [
        ["4242", "runner", "S (sleeping)", "do_select", ""],
        ["4243", "pool worker 2", "T (stopped)", "do_signal_stop", "stopped: no stack"],
        ["4244", XSS, "D (uninterruptible sleep)", "<wchan>", "a & b"],
        ["4245", "other", "? (could not be read)", "", "gone before it could be read"],
        ["4246", "forkserver", "x", "", ""],
    ]
    # A heading naming each process that answered, then its stack exactly, escaped.
    assert re.findall(r"<h4>(.*?)</h4>", part) == [
        "Stack of pid 4242 (runner)",
        f"Stack of pid 4244 ({XSS_ESCAPED})",
        "Traceback of the failed job",
    ]
    assert re.findall(r'<pre class="stack">(.*?)</pre>', part, re.S) == [
        html.escape(RUNNER_STACK),
        html.escape(HOSTILE_STACK),
    ]
    traceback = re.findall(r'<pre class="traceback">(.*?)</pre>', part, re.S)
    assert traceback == [html.escape(JOB_TRACEBACK)]
    assert html.unescape(traceback[0]) == JOB_TRACEBACK
    # Right after what failed (reason, cause), before the summary and the jobs.
    assert r.text.index("</table>") < r.text.index('<h3 id="stuck">') < r.text.index(">Jobs<")


@pytest.mark.parametrize("reason", ["spawn_failed", "job_error", "worker_died", "manager_died"])
def test_a_failure_on_an_error_lists_its_processes_by_state_without_stacks(reason: str) -> None:
    """Nothing was left unfinished: every live process only waited for its next task, and its
    stacks (some 80 lines of idle frames) explain nothing. One row of state each; the job's
    traceback, which does explain, stays."""
    part = stuck_part(get(Fake([stuck_cycle(reason=reason)]).app(), "/cycles/c1").text)
    assert '<pre class="stack">' not in part and "Stack of pid" not in part
    assert f"Nothing was stuck: the cycle ended on an error ({reason})" in text_of(part)
    # No Note column either: its notes only say why a process has no stack.
    assert rows(part, "stuck") == [
        ["4242", "runner", "S (sleeping)", "do_select"],
        ["4243", "pool worker 2", "T (stopped)", "do_signal_stop"],
        ["4244", XSS, "D (uninterruptible sleep)", "<wchan>"],
        ["4245", "other", "? (could not be read)", ""],
        ["4246", "forkserver", "x", ""],
    ]
    assert re.findall(r"<h4>(.*?)</h4>", part) == ["Traceback of the failed job"]


@pytest.mark.parametrize("reason", ["timeout", "helper_died"])
def test_work_left_unfinished_keeps_every_stack(reason: str) -> None:
    part = stuck_part(get(Fake([stuck_cycle(reason=reason)]).app(), "/cycles/c1").text)
    assert len(re.findall(r'<pre class="stack">', part)) == 2
    assert "Nothing was stuck" not in part


def test_a_job_error_shows_the_traceback_without_a_process_table() -> None:
    cycle = stuck_cycle(reason="job_error", stuck=())
    part = stuck_part(get(Fake([cycle]).app(), "/cycles/c1").text)
    assert '<table class="stuck">' not in part
    assert re.findall(r"<h4>(.*?)</h4>", part) == ["Traceback of the failed job"]


def test_a_failed_cycle_without_a_capture_says_nothing_was_captured() -> None:
    cycle = stuck_cycle(stuck=(), job_traceback=None)
    part = stuck_part(get(Fake([cycle]).app(), "/cycles/c1").text)
    assert part == '<h3 id="stuck">Where it was stuck</h3>\n<p>Nothing was captured.</p>\n'


def test_a_successful_cycle_has_no_stuck_section() -> None:
    r = get(Fake([make_cycle()]).app(), "/cycles/c1")
    assert r.status == 200
    assert "Where it was stuck" not in r.text


def test_a_failed_cycle_names_its_cause_and_keeps_the_trees_stderr_escaped() -> None:
    cycle = make_cycle(
        cycle_id="c4u5e",
        success=False,
        reason="spawn_failed",
        detail="starting the pool: EOFError",
        cause="process_limit",
        cause_detail="pids limit of the cgroup /limited reached: 12 of 12",
        stderr=f"Traceback (most recent call last):\n{XSS}\nBlockingIOError: [Errno 11]\n",
        stderr_bytes=90,
        warnings={"tracker_relaunched": 2, "other": 0},
    )
    r = get(Fake([cycle]).app(), "/cycles/c4u5e")
    assert r.status == 200
    assert outcome_rows(r.text)["cause"] == (
        "process_limit: pids limit of the cgroup /limited reached: 12 of 12"
    )
    assert "Stderr of the tree" in r.text and "warnings: tracker_relaunched 2" in r.text
    assert XSS not in r.text and XSS_ESCAPED in r.text
    assert "BlockingIOError: [Errno 11]" in html.unescape(r.text)


def test_a_successful_cycle_without_stderr_has_no_cause_or_stderr_section() -> None:
    r = get(Fake([make_cycle(cycle_id="fine")]).app(), "/cycles/fine")
    assert "Stderr of the tree" not in r.text and "cause" not in summary_rows(r.text)
