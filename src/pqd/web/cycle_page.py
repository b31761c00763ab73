"""/cycles/ID: one cycle's summary, where it was stuck, its leaks, phases, jobs and trace."""

from __future__ import annotations

from typing import Final

from pqd.results import PHASES, CycleResult, StuckProcess
from pqd.runner.stacks import STATE_MEANINGS
from pqd.trace import pid_count_delta_text, sampled, stacks_explain
from pqd.web import markup

# A leaked process's command line can be as long as the kernel allows; the page shows this much.
_MAX_COMMAND_LENGTH: Final = 1000


def process_state(letter: str) -> str:
    """ "T" -> "T (stopped)"; a letter proc(5) does not list is shown as it is."""
    meaning = STATE_MEANINGS.get(letter)
    return letter if meaning is None else f"{letter} ({meaning})"


def _outcome_rows(r: CycleResult) -> list[tuple[str, str]]:
    """What failed and why: the reason, its detail and, for a failure, the one-line cause."""
    return [
        ("result", markup.outcome(r)),
        ("detail", r.detail),
        *([("cause", _cause(r))] if not r.success else []),
    ]


def _summary_rows(r: CycleResult) -> list[tuple[str, str]]:
    """Every fact of the cycle; a failed cycle's page shows its outcome rows above instead."""
    return [
        ("cycle id", r.cycle_id),
        ("probe", r.probe),
        *(_outcome_rows(r) if r.success else []),
        ("started (UTC)", markup.utc(r.started_at)),
        ("ended (UTC)", markup.utc(r.ended_at)),
        ("duration", markup.seconds(r.duration_seconds)),
        (
            "CPU (whole tree)",
            "not measured" if r.cpu_seconds is None else markup.seconds(r.cpu_seconds),
        ),
        (
            "peak RSS (largest process)",
            "not measured" if r.max_rss_bytes is None else f"{r.max_rss_bytes / 2**20:.1f} MiB",
        ),
        ("start method", r.start_method),
        ("containment", r.containment),
        ("workers", str(r.workers_configured)),
        ("queue capacity", str(r.queue_capacity)),
        ("rounds", str(r.rounds)),
        ("items per producer", str(r.items_per_producer)),
        ("main process", f"{r.main_pid} {r.main_process_name}"),
        ("jobs completed", str(r.jobs_completed)),
        ("jobs failed", str(r.jobs_failed)),
        ("full-queue events", str(r.queue_full_events)),
        ("items put / got", f"{r.items_put} / {r.items_got}"),
        ("deepest queue", str(r.queue_depth_max)),
        (
            "host pid count before / during / after",
            " / ".join(
                sampled(count)
                for count in (
                    r.host_pid_count_before,
                    r.host_pid_count_during,
                    r.host_pid_count_after,
                )
            ),
        ),
        ("pid count delta", pid_count_delta_text(r, sign=True)),
        ("leaked processes", str(r.leaked_processes)),
        ("leaked pids", " ".join(str(p) for p in r.leaked_pids) or "none"),
        ("helpers started", ", ".join(f"{h.role} {h.pid}" for h in r.helpers_started) or "none"),
    ]


def _cause(result: CycleResult) -> str:
    """ "process_limit: pids limit … reached"; a result without one (an older runner's) is
    "unknown", not "None" or a dangling colon."""
    cause = result.cause or "unknown"
    return f"{cause}: {result.cause_detail}" if result.cause_detail else cause


def cycle_page(base: str, result: CycleResult, trace: list[str]) -> str:
    r = result
    # The known phases in cycle order, then anything else a newer cycle module might report.
    phase_names: list[str] = [p for p in PHASES if p in r.phase_seconds]
    phase_names += sorted(p for p in r.phase_seconds if p not in PHASES)
    phases = [(p, markup.seconds(r.phase_seconds[p])) for p in phase_names]
    back = (
        f"<p>{markup.link(markup.probe_href(base, r.probe), f'Probe {r.probe}')} · "
        f'<a href="{markup.escape(base)}/">Back to the recent cycles</a></p>'
    )
    if r.success:
        first = [markup.kv_table(_summary_rows(r))]
    else:
        # What an operator opened the page for first, above the fold at 1280x900: the reason,
        # the cause and where it was stuck; the 25-row summary pushed all but the reason below.
        first = [
            markup.kv_table(_outcome_rows(r), table_class="outcome"),
            *stuck_section(r),
            '<h3 id="summary">Summary</h3>',
            markup.kv_table(_summary_rows(r)),
        ]
    parts = [
        f"<h2>Cycle <code>{markup.escape(r.cycle_id)}</code></h2>",
        back,
        *first,
        *stderr_section(r),
        *(["<h3>Leaked processes</h3>", _leaked_table(r)] if r.leaked_pids else []),
        "<h3>Phases</h3>",
        markup.kv_table(phases) if phases else "<p>No phase was reached.</p>",
        "<h3>Jobs</h3>",
        _jobs_table(r) if r.jobs else "<p>No job reported back.</p>",
        "<h3>Trace</h3>",
        f'<pre class="trace">{markup.escape(chr(10).join(trace))}</pre>',
    ]
    return markup.page(f"pqd: cycle {r.cycle_id}", base, "\n".join(parts))


def stuck_section(result: CycleResult) -> list[str]:
    """ "Where it was stuck": the failed cycle's live processes, their stacks where they explain
    the failure (pqd.trace.stacks_explain), the job's traceback. Nothing for a successful
    cycle."""
    if result.success:
        return []
    parts = ['<h3 id="stuck">Where it was stuck</h3>']
    if not result.stuck and not result.job_traceback:
        parts.append("<p>Nothing was captured.</p>")
        return parts
    explain = stacks_explain(result)
    if result.stuck and not explain:
        parts.append(
            "<p>Nothing was stuck: the cycle ended on an error "
            f"({markup.escape(result.reason or 'unknown')}), not with work unfinished. "
            "Its processes then, by state (stacks are shown when a cycle times out or a "
            "helper dies):</p>"
        )
    if result.stuck:
        parts.append(_stuck_table(result.stuck, notes=explain))
    for process in result.stuck:
        if process.stack is not None and explain:
            parts.append(f"<h4>Stack of pid {process.pid} ({markup.escape(process.role)})</h4>")
            parts.append(f'<pre class="stack">{markup.escape(process.stack)}</pre>')
    if result.job_traceback:
        parts.append("<h4>Traceback of the failed job</h4>")
        parts.append(f'<pre class="traceback">{markup.escape(result.job_traceback)}</pre>')
    return parts


def stderr_section(result: CycleResult) -> list[str]:
    """What the tree wrote to stderr during the cycle (bounded) and the warnings counted in it."""
    if not result.stderr_bytes:
        return []
    counted = ", ".join(f"{c} {n}" for c, n in sorted(result.warnings.items()) if n) or "none"
    return [
        '<h3 id="stderr">Stderr of the tree</h3>',
        f"<p>{result.stderr_bytes} bytes written; warnings: {markup.escape(counted)}</p>",
        f'<pre class="stderr">{markup.escape(result.stderr)}</pre>',
    ]


def _stuck_table(processes: tuple[StuckProcess, ...], *, notes: bool) -> str:
    """One row per process; ``notes``: a Note column (its notes say why a process has no stack,
    so none where no stack is shown)."""
    columns = ("PID", "Role", "State", "Waiting in (wchan)", *(("Note",) if notes else ()))
    header = "".join(f"<th>{h}</th>" for h in columns)
    rows = "".join(
        f'<tr><td class="num">{p.pid}</td><td>{markup.escape(p.role)}</td>'
        f"<td>{markup.escape(process_state(p.state))}</td><td><code>{markup.escape(p.wchan)}</code></td>"
        + (f'<td class="note">{markup.escape(p.note)}</td>' if notes else "")
        + "</tr>"
        for p in processes
    )
    return markup.scrolling(f'<table class="stuck"><tr>{header}</tr>{rows}</table>')


def _jobs_table(result: CycleResult) -> str:
    header = "".join(
        f"<th>{h}</th>"
        for h in (
            "#",
            "Round",
            "Kind",
            "PID",
            "Process",
            "Alive",
            "Parent",
            "Host pids",
            "Items",
            "Full events",
            "Queue ops",
            "Depth after",
            "Workers after",
            "Error",
        )
    )
    rows = []
    for job in result.jobs:
        more = job.item_count - len(job.items)
        cells = (
            job.job_counter,
            job.round,
            job.kind,
            job.pid,
            job.process_name,
            "yes" if job.is_alive else "no",
            job.parent_pid,
            sampled(job.host_pid_count),
            " ".join(job.items) + (f" (+{more} more)" if more > 0 else ""),
            job.full_events,
            sum(job.operation_counts),
            sampled(job.queue_depth_after),
            job.workers_live_after,
            job.error or "",
        )
        row_class = ' class="failed"' if job.error else ""
        rows.append(
            f"<tr{row_class}>" + "".join(f"<td>{markup.escape(c)}</td>" for c in cells) + "</tr>"
        )
    return markup.scrolling(f"<table><tr>{header}</tr>{''.join(rows)}</table>")


def _leaked_table(result: CycleResult) -> str:
    """Each leaked pid with its command line (escaped: a process names itself what it likes)."""
    commands = list(result.leaked_commands)
    commands += [""] * (len(result.leaked_pids) - len(commands))  # a result without them
    rows = "".join(
        f'<tr><td class="num">{pid}</td>'
        f"<td><code>{markup.escape(markup.cut(cmd, _MAX_COMMAND_LENGTH)) or 'unknown'}"
        "</code></td></tr>"
        for pid, cmd in zip(result.leaked_pids, commands, strict=False)
    )
    return markup.scrolling(f"<table><tr><th>PID</th><th>Command line</th></tr>{rows}</table>")
