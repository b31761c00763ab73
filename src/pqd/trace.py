"""A CycleResult as the seed script printed it, line for line, plus a summary."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Final

from pqd.bounds import TRACE_ITEMS, TRACE_JOBS
from pqd.results import CycleResult, StuckProcess
from pqd.runner.stacks import state_meaning

SEPARATOR = "**********"
#: What a page or ``pqd once`` shows for a count that was never taken: a cycle that failed
#: before its workers ran keeps -1 for the count during, and so does a /proc pqd could not read.
NOT_SAMPLED = "not sampled"
#: The reasons of a cycle given up with its work unfinished (docs/design.md §1): the deadline
#: passed, or a helper it waited on died or stopped. Only then do the stacks of its processes say
#: what it was waiting for. Any other failure ended on an error or an exit, which the detail
#: names; its live processes were only waiting for their next task, and one line of state each
#: says so (every thread's stack of each was some 80 lines of idle frames).
UNFINISHED_REASONS: Final = ("timeout", "helper_died")
STACK_NOT_SHOWN: Final = "stack not shown: the cycle ended on an error, not with work unfinished"
# A command line can be as long as the kernel allows; a summary line need not be.
_MAX_COMMAND = 500


def _timestamp(unix_time: float) -> str:
    # The seed printed datetime.now(): local time, always with microseconds.
    return datetime.fromtimestamp(unix_time).isoformat(sep=" ", timespec="microseconds")


def sampled(count: int) -> str:
    """A count as people read it: -1, the placeholder of a count not taken, is "not sampled"."""
    return NOT_SAMPLED if count < 0 else str(count)


def pid_count_delta_text(result: CycleResult, *, sign: bool = False) -> str:
    delta = result.measured_pid_count_delta
    if delta is None:
        return NOT_SAMPLED
    return f"{delta:+d}" if sign else str(delta)


def render_trace(result: CycleResult) -> list[str]:
    """The seed's line shapes: main line, per job its worker line, parent, queue operations and
    the ('pid', …) tuple, count(N) after each consumer, the separator, the main line again."""
    lines = [
        f"{_timestamp(result.started_at)} {result.main_pid} {result.main_process_name} "
        f"{sampled(result.host_pid_count_before)}"
    ]
    for index, job in enumerate(result.jobs):
        if result.jobs_not_kept and index == TRACE_JOBS // 2:
            lines.append(f"... {result.jobs_not_kept} jobs not kept (pqd keeps the first and last)")
        lines.append(f"{_timestamp(job.started_at)} {job.pid} {job.process_name} {job.is_alive}")
        lines.append(f"parent:  {job.parent_pid}")
        verb = "put in q" if job.kind == "producer" else "get from q"
        lines.extend(f"{verb}：{item}" for item in job.items)
        if job.item_count > len(job.items):
            lines.append(f"(+{job.item_count - len(job.items)} more {verb})")
        if job.kind == "producer":
            lines.extend("Full q !!!" for _ in range(min(job.full_events, TRACE_ITEMS)))
            if job.full_events > TRACE_ITEMS:
                lines.append(f"(+{job.full_events - TRACE_ITEMS} more Full q !!!)")
        count = job.host_pid_count if job.host_pid_count >= 0 else NOT_SAMPLED
        lines.append(str(("pid", job.pid, "pid count", count, "name", str(job.round))))
        if job.kind == "consumer":
            lines.append(f"count({job.job_counter})")
    if not result.success:
        lines.append(f"cycle failed: {result.reason or 'unknown'}: {result.detail}")
        if result.cause is not None:
            lines.append(f"cause: {result.cause}: {result.cause_detail}")
    lines.append(SEPARATOR)
    lines.append(
        f"{_timestamp(result.ended_at)} {result.main_pid} {result.main_process_name} "
        f"{sampled(result.host_pid_count_after)}"
    )
    return lines


def render_summary(result: CycleResult) -> list[str]:
    """One ``key: value`` per line, for people and for grep."""
    phases = " ".join(f"{name}={seconds:.3f}s" for name, seconds in result.phase_seconds.items())
    helpers = ", ".join(f"{h.role} pid {h.pid}" for h in result.helpers_started) or "none new"
    outcome = "success" if result.success else f"failed ({result.reason})"
    cpu = "not measured" if result.cpu_seconds is None else f"{result.cpu_seconds:.3f}"
    rss = "not measured" if result.max_rss_bytes is None else str(result.max_rss_bytes)
    return [
        f"probe: {result.probe}",
        f"result: {outcome}",
        f"detail: {result.detail}",
        f"cycle_id: {result.cycle_id}",
        f"start_method: {result.start_method}",
        f"duration_seconds: {result.duration_seconds:.3f}",
        f"phases: {phases}",
        f"jobs_completed: {result.jobs_completed}",
        f"jobs_failed: {result.jobs_failed}",
        f"queue_full_events: {result.queue_full_events}",
        f"queue_capacity: {result.queue_capacity}",
        f"queue_depth_max: {result.queue_depth_max}",
        f"items_put: {result.items_put}",
        f"items_got: {result.items_got}",
        f"pid_count_before: {sampled(result.host_pid_count_before)}",
        f"pid_count_during: {sampled(result.host_pid_count_during)}",
        f"pid_count_after: {sampled(result.host_pid_count_after)}",
        f"pid_count_delta: {pid_count_delta_text(result)}",
        f"leaked_processes: {result.leaked_processes}",
        f"multiprocessing_helpers_started: {helpers}",
        # Added with the per-probe runner; after the older lines, which scripts parse in order.
        f"containment: {result.containment}",
        f"cpu_seconds: {cpu}",
        f"max_rss_bytes: {rss}",
        f"python_implementation: {result.python_implementation or 'unknown'}",
        f"python_version: {result.python_version or 'unknown'}",
        *(f"leaked: {pid} {cmd}" for pid, cmd in _leaked_with_commands(result)),
        # Added with causes (docs/design.md §1): what on the host made a failed cycle fail.
        *(
            []
            if result.success
            else [f"cause: {result.cause or 'unknown'}", f"cause_detail: {result.cause_detail}"]
        ),
        *(
            [f"stderr_bytes: {result.stderr_bytes}", f"warnings: {_warnings(result)}"]
            if result.stderr_bytes
            else []
        ),
    ]


def _warnings(result: CycleResult) -> str:
    counted = [f"{category}={n}" for category, n in sorted(result.warnings.items()) if n]
    return " ".join(counted) or "none"


def _share(used: int, limit: int) -> str:
    return f" ({100 * used / limit:.1f}%)" if limit > 0 and used >= 0 else ""


def headroom_rows(result: CycleResult) -> list[tuple[str, str]]:
    """The probe's headroom as the cycle began (docs/design.md §2), one (resource, text) each:
    used and limit, and where the limit comes from; empty for a result without headroom."""
    room = result.headroom
    if room is None:
        return []
    leaked = result.leaked_shm_objects
    left = "" if leaked is None else f", {leaked} left by this cycle"
    files = result.max_open_files
    tmpdir = "usable" if room.tmpdir_usable else f"NOT usable: {room.tmpdir_problem}"
    return [
        (
            "shm",
            f"{room.shm_available_bytes} of {room.shm_size_bytes} bytes free"
            f"{_share(room.shm_available_bytes, room.shm_size_bytes)}, "
            f"{room.shm_objects} entries{left}",
        ),
        (
            "pids",
            f"{sampled(room.pids_current)} of {room.pids_limit}"
            f"{_share(room.pids_current, room.pids_limit)} ({room.pids_source})",
        ),
        (
            "memory",
            f"{sampled(room.memory_usage_bytes)} of {room.memory_limit_bytes} bytes"
            f"{_share(room.memory_usage_bytes, room.memory_limit_bytes)} ({room.memory_source})",
        ),
        (
            "open_files",
            ("not measured" if files is None else f"{files}")
            + f" of {room.open_files_limit} (most in one process of the cycle)",
        ),
        (
            "cpu",
            f"Pool() starts {room.cpu_count} workers for {room.cpu_quota_cores:g} cores"
            f" ({room.cpu_source})",
        ),
        ("tmpdir", f"{tmpdir} ({room.tmpdir or 'no temporary directory found'})"),
    ]


def render_headroom(result: CycleResult) -> list[str]:
    """``headroom_RESOURCE: text`` lines, after the summary."""
    return [f"headroom_{name}: {text}" for name, text in headroom_rows(result)]


def stacks_explain(result: CycleResult) -> bool:
    """Whether the stacks of a failed cycle's processes explain it (UNFINISHED_REASONS)."""
    return not result.success and result.reason in UNFINISHED_REASONS


def stuck_as_shown(result: CycleResult) -> tuple[StuckProcess, ...]:
    """The cycle's processes with the stacks that explain nothing left out (``stack`` None,
    ``note`` saying why), as ``pqd once --json`` gives them."""
    if stacks_explain(result):
        return result.stuck
    return tuple(
        dataclasses.replace(p, stack=None, note=p.note or STACK_NOT_SHOWN)
        if p.stack is not None
        else p
        for p in result.stuck
    )


def nothing_stuck(result: CycleResult) -> str:
    """Why a failed cycle's processes are shown without their stacks, in one sentence."""
    return (
        f"nothing ({result.reason or 'unknown'} ended on an error, not with work unfinished); "
        "its processes then"
    )


def render_where_stuck(result: CycleResult) -> list[str]:
    """A failed cycle's "Where it was stuck" (pqd.runner.stacks) and a job_error's traceback,
    indented under two headings; nothing for a cycle without them. Stacks only where they
    explain the failure (stacks_explain); otherwise one line of state per process."""
    lines = []
    explain = stacks_explain(result)
    if result.stuck:
        lines.append("where it was stuck:" + ("" if explain else f" {nothing_stuck(result)}"))
    for proc in result.stuck:
        wchan = f", wchan {proc.wchan}" if proc.wchan else ""
        # A note says why a process has no stack: nothing to say where none is shown.
        note = f" ({proc.note})" if proc.note and explain else ""
        lines.append(
            f"  {proc.role} pid {proc.pid}: state {proc.state} "
            f"({state_meaning(proc.state)}){wchan}{note}"
        )
        if proc.stack and explain:
            lines.extend(f"    {line}" for line in proc.stack.rstrip("\n").splitlines() if line)
    if result.job_traceback:
        lines.append("job traceback:")
        lines.extend(f"  {line}" for line in result.job_traceback.rstrip("\n").splitlines())
    return lines


def _leaked_with_commands(result: CycleResult) -> list[tuple[int, str]]:
    """Each leaked pid with its command line, made safe for one line of a terminal."""
    commands = list(result.leaked_commands)
    # A result without command lines (an older runner) must not lose a pid.
    commands += [""] * (len(result.leaked_pids) - len(commands))
    return [
        (pid, _one_line(cmd) or "?") for pid, cmd in zip(result.leaked_pids, commands, strict=False)
    ]


def _one_line(text: str) -> str:
    """``text`` on one line: whitespace runs become one space, other control characters (a
    terminal escape in a hostile command line) are shown escaped, and it is cut short."""
    flat = " ".join(text.split())
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in flat)
    return shown if len(shown) <= _MAX_COMMAND else shown[: _MAX_COMMAND - 1] + "…"
