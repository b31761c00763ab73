"""The status pages: the landing page (probe status first, then the recent cycles), a probe's own
page, the configuration, and the not-found pages. Plain functions from data to HTML text.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from pqd.results import CycleResult
from pqd.trace import headroom_rows, pid_count_delta_text
from pqd.web import markup
from pqd.web.state import ProbeView, WebState

#: The values of ``result=`` in a cycle list's query.
RESULT_FILTERS: Final = ("failed", "succeeded")
CYCLES_PER_PAGE: Final = 50
# A detail line can be long (a leaked process's command line); the status cell shows this much.
_MAX_STATUS_DETAIL: Final = 200
#: The status table's columns. On a narrow screen each row stacks, one labelled line a cell
#: (data-label, markup.CSS), so no probe's status needs scrolling sideways to read.
_STATUS_COLUMNS: Final = (
    "Probe",
    "Status (last cycle)",
    "Last success",
    "Kept cycles",
    "Last duration",
    "Median duration",
    "Schedule",
    "Containment",
    "Python",
)


@dataclass(frozen=True)
class CycleQuery:
    """What a cycle list shows: one probe's cycles or all, failures or successes or both, a page."""

    probe: str | None = None
    result: str | None = None  # one of RESULT_FILTERS, None for both
    page: int = 1  # from 1

    def href(self, path: str, **changes: object) -> str:
        """A link to ``path`` with this query, some fields changed; the fields are percent-encoded
        as pqd's parser decodes them (quote with safe='' turns "+" into %2B, " " into %20)."""
        fields = {"probe": self.probe, "result": self.result, "page": self.page, **changes}
        params = []
        if fields["probe"] is not None:
            params.append(f"probe={quote(str(fields['probe']), safe='')}")
        if fields["result"] is not None:
            params.append(f"result={quote(str(fields['result']), safe='')}")
        if fields["page"] != 1:
            params.append(f"page={fields['page']}")
        return path + ("?" + "&".join(params) if params else "")


@dataclass(frozen=True)
class ProbeStatus:
    """One probe's standing over the kept history."""

    probe: ProbeView
    last: CycleResult | None  # the cycle that ended last
    last_success: CycleResult | None
    successes: int
    failures: int
    median_seconds: float | None  # of every kept cycle's duration

    @property
    def failing(self) -> bool:
        return self.last is not None and not self.last.success

    def setting(self, name: str) -> str:
        return next((value for key, value in self.probe.settings if key == name), "")


def _ended(result: CycleResult) -> tuple[float, float, str]:
    return (result.ended_at, result.started_at, result.cycle_id)


def probe_statuses(probes: Iterable[ProbeView], cycles: Iterable[CycleResult]) -> list[ProbeStatus]:
    """Each probe's status, failing probes first, otherwise in the given (config) order."""
    by_probe: dict[str, list[CycleResult]] = {}
    for cycle in cycles:
        by_probe.setdefault(cycle.probe, []).append(cycle)
    statuses = []
    for probe in probes:
        kept = by_probe.get(probe.name, [])
        successes = [c for c in kept if c.success]
        durations = [c.duration_seconds for c in kept if math.isfinite(c.duration_seconds)]
        statuses.append(
            ProbeStatus(
                probe=probe,
                last=max(kept, key=_ended, default=None),
                last_success=max(successes, key=_ended, default=None),
                successes=len(successes),
                failures=len(kept) - len(successes),
                median_seconds=statistics.median(durations) if durations else None,
            )
        )
    statuses.sort(key=lambda status: not status.failing)  # stable: config order otherwise
    return statuses


def _status_cell(base: str, status: ProbeStatus) -> str:
    last = status.last
    if last is None:
        return '<span class="label">waiting</span> no cycle yet'
    href = markup.cycle_href(base, last.cycle_id)
    if last.success:
        return f'<span class="label">ok</span> ({markup.link(href, "last cycle")})'
    reason = markup.link(href, last.reason or "unknown")
    cause = (
        ""
        if last.cause is None
        else f"; cause {markup.escape(last.cause)}: "
        f"{markup.escape(markup.cut(last.cause_detail, _MAX_STATUS_DETAIL))}"
    )
    return (
        f'<span class="label">FAILING</span> {reason}: '
        f"{markup.escape(markup.cut(last.detail, _MAX_STATUS_DETAIL))}{cause}"
    )


def _status_row(base: str, status: ProbeStatus, now: float) -> str:
    success = status.last_success
    since = (
        "never"
        if success is None
        else f'<span title="{markup.escape(markup.utc(success.ended_at))}">'
        f"{markup.escape(markup.age(now - success.ended_at))}</span>"
    )
    last_seconds = "" if status.last is None else markup.seconds(status.last.duration_seconds)
    median = "" if status.median_seconds is None else markup.seconds(status.median_seconds)
    row_class = "failing" if status.failing else "ok" if status.last else "waiting"
    name = status.probe.name
    cells = (  # (class, HTML), one per _STATUS_COLUMNS
        ("name", markup.link(markup.probe_href(base, name), name)),
        ("detail", _status_cell(base, status)),
        ("num", since),
        ("num", f"{status.successes} ok / {status.failures} failed"),
        ("num", markup.escape(last_seconds)),
        ("num", markup.escape(median)),
        ("", markup.escape(status.setting("schedule"))),
        ("", markup.escape(status.setting("containment"))),
        ("", markup.escape(status.setting("python"))),
    )
    tds = "".join(
        f'<td{_class_attribute(css)} data-label="{markup.escape(label)}">{content}</td>'
        for label, (css, content) in zip(_STATUS_COLUMNS, cells, strict=True)
    )
    return f'<tr class="{row_class}">{tds}</tr>'


def _class_attribute(css: str) -> str:
    return f' class="{css}"' if css else ""


def status_table(base: str, statuses: Sequence[ProbeStatus], now: float) -> str:
    header = "".join(f"<th>{h}</th>" for h in _STATUS_COLUMNS)
    rows = "".join(_status_row(base, status, now) for status in statuses)
    return markup.scrolling(f'<table class="status"><tr>{header}</tr>{rows}</table>')


def _verdict(statuses: Sequence[ProbeStatus], state: WebState) -> str:
    lines = []
    if state.unhealthy_reason:
        lines.append(
            '<p class="verdict failing"><span class="label">NOT HEALTHY</span>: '
            f"{markup.escape(state.unhealthy_reason)}</p>"
        )
    failing = sum(1 for s in statuses if s.failing)
    if failing:
        lines.append(
            f'<p class="verdict failing"><span class="label">FAILING</span>: {failing} of '
            f"{len(statuses)} probe{'s' if len(statuses) != 1 else ''}</p>"
        )
    elif statuses:
        waiting = sum(1 for s in statuses if s.last is None)
        ok = f"{len(statuses) - waiting} of {len(statuses)} probes ok"
        lines.append(f'<p class="verdict">{ok}{f", {waiting} waiting" if waiting else ""}</p>')
    return "\n".join(lines)


def _filter_line(label: str, options: Iterable[tuple[str, str, bool]]) -> str:
    """One line of filter links; the option in force is bold text, not a link."""
    items = [
        f'<strong aria-current="true">{markup.escape(text)}</strong>'
        if chosen
        else markup.link(href, text)
        for text, href, chosen in options
    ]
    return f'<p class="filters">{markup.escape(label)}: {" · ".join(items)}</p>'


def _filters(path: str, query: CycleQuery, probe_names: Sequence[str] | None) -> list[str]:
    lines = []
    if probe_names is not None:
        lines.append(
            _filter_line(
                "Probe",
                [("all", query.href(path, probe=None, page=1), query.probe is None)]
                + [(n, query.href(path, probe=n, page=1), query.probe == n) for n in probe_names],
            )
        )
    results = [("all", query.href(path, result=None, page=1), query.result is None)]
    results += [(r, query.href(path, result=r, page=1), query.result == r) for r in RESULT_FILTERS]
    lines.append(_filter_line("Result", results))
    return lines


def _pager(path: str, query: CycleQuery, shown: int, total: int, pages: int) -> str:
    first = (query.page - 1) * CYCLES_PER_PAGE + 1
    parts = [f"Cycles {first} to {first + shown - 1} of {total}, page {query.page} of {pages}"]
    if query.page > 1:
        href = query.href(path, page=query.page - 1)
        parts.append(f'<a rel="prev" href="{markup.escape(href)}">← previous page</a>')
    if query.page < pages:
        href = query.href(path, page=query.page + 1)
        parts.append(f'<a rel="next" href="{markup.escape(href)}">next page →</a>')
    return f'<p class="pager">{" · ".join(parts)}</p>'


def _matches(cycle: CycleResult, query: CycleQuery) -> bool:
    if query.probe is not None and cycle.probe != query.probe:
        return False
    return query.result is None or cycle.success == (query.result == "succeeded")


def cycle_listing(
    base: str,
    path: str,
    cycles: Iterable[CycleResult],
    query: CycleQuery,
    probe_names: Sequence[str] | None,
) -> str:
    """Filter links, then one page of the cycles that match ``query``, newest first.

    ``path`` is the page's own (prefixed, percent-encoded) path, which every link keeps;
    ``probe_names`` are the probes to offer as filters (None: no probe filter line).
    """
    matching = [c for c in cycles if _matches(c, query)]
    # Newest first whatever order the history keeps them in; the id keeps equal times stable.
    matching.sort(key=lambda c: (c.started_at, c.ended_at, c.cycle_id), reverse=True)
    pages = max(1, math.ceil(len(matching) / CYCLES_PER_PAGE))
    parts = _filters(path, query, probe_names)
    if not matching:
        if query.probe is None and query.result is None:
            parts.append("<p>No cycle has completed yet.</p>")
        else:
            clear = markup.link(query.href(path, probe=None, result=None, page=1), "all cycles")
            parts.append(f"<p>No kept cycle matches these filters; see {clear}.</p>")
        return "\n".join(parts)
    if query.page > pages:
        first = markup.link(query.href(path, page=1), "the first page")
        parts.append(
            f"<p>There is no page {query.page}: the matching cycles fill {pages} "
            f"page{'s' if pages != 1 else ''}. Go to {first}.</p>"
        )
        return "\n".join(parts)
    start = (query.page - 1) * CYCLES_PER_PAGE
    shown = matching[start : start + CYCLES_PER_PAGE]
    pager = _pager(path, query, len(shown), len(matching), pages)
    parts += [pager, _cycles_table(base, shown)]
    if pages > 1:  # at the foot of the table too, where a reader of the list arrives
        parts.append(pager)
    return "\n".join(parts)


def _cycles_table(base: str, cycles: Iterable[CycleResult]) -> str:
    header = "".join(
        f"<th>{h}</th>"
        for h in (
            "Started (UTC)",
            "Probe",
            "Result",
            "Duration",
            "Jobs",
            "Full events",
            "PID delta",
            "Leaked",
        )
    )
    rows = []
    for c in cycles:
        # Plain words: "1 (1 failed)" read as one job in all, not one completed and one failed.
        jobs = f"{c.jobs_completed} completed"
        if c.jobs_failed:
            jobs += f", {c.jobs_failed} failed"
        row_class = "ok" if c.success else "failed"
        rows.append(
            f'<tr class="{row_class}">'
            f"<td>{markup.link(markup.cycle_href(base, c.cycle_id), markup.utc(c.started_at))}</td>"
            f'<td class="name">{markup.link(markup.probe_href(base, c.probe), c.probe)}</td>'
            f"<td>{markup.escape(markup.outcome(c))}</td>"
            f'<td class="num">{markup.escape(markup.seconds(c.duration_seconds))}</td>'
            f'<td class="num">{markup.escape(jobs)}</td>'
            f'<td class="num">{c.queue_full_events}</td>'
            f'<td class="num">{pid_count_delta_text(c, sign=True)}</td>'
            f'<td class="num">{c.leaked_processes}</td>'
            "</tr>"
        )
    return markup.scrolling(f'<table class="cycles"><tr>{header}</tr>{"".join(rows)}</table>')


def _build_line(state: WebState) -> str:
    version, python = markup.escape(state.version), markup.escape(state.python_version)
    started = markup.escape(markup.utc(state.started_at))
    return (
        f'<p class="build">pqd {version} on Python {python}, '
        f"started {started}; ready: {'yes' if state.ready else 'no'}; "
        f"lifecycle API (POST /-/reload): {'enabled' if state.reload_enabled else 'disabled'}.</p>"
    )


def landing_page(
    base: str, state: WebState, cycles: Sequence[CycleResult], query: CycleQuery, now: float
) -> str:
    statuses = probe_statuses(state.probes, cycles)
    configured = [p.name for p in state.probes]
    # A probe a reload removed can still have cycles in the list for a moment: filterable too.
    names = configured + sorted({c.probe for c in cycles} - set(configured))
    parts = ["<h2>Probes</h2>", _verdict(statuses, state)]
    if statuses:
        parts.append(status_table(base, statuses, now))
    else:
        parts.append("<p>No probes are configured.</p>")
    parts += [
        '<h2 id="cycles">Recent cycles</h2>',
        cycle_listing(base, f"{base}/", cycles, query, names),
        _build_line(state),
    ]
    return markup.page("pqd", base, "\n".join(parts))


def probe_page(
    base: str, probe: ProbeView, cycles: Iterable[CycleResult], query: CycleQuery, now: float
) -> str:
    own = [c for c in cycles if c.probe == probe.name]
    parts = [
        f"<h2>Probe <code>{markup.escape(probe.name)}</code></h2>",
        status_table(base, probe_statuses([probe], own), now),
        *_headroom(base, own),
        "<h3>Settings</h3>",
        markup.settings_table(probe.settings),
        '<h3 id="cycles">Recent cycles</h3>',
        cycle_listing(base, markup.probe_href(base, probe.name), own, query, None),
    ]
    return markup.page(f"pqd: probe {probe.name}", base, "\n".join(parts))


def _headroom(base: str, cycles: Sequence[CycleResult]) -> list[str]:
    """The headroom the probe's latest cycle began with (docs/design.md §2), if any has one."""
    measured = [c for c in cycles if c.headroom is not None]
    if not measured:
        return []
    latest = max(measured, key=lambda c: c.ended_at)
    began = markup.link(markup.cycle_href(base, latest.cycle_id), markup.utc(latest.started_at))
    return [
        '<h3 id="headroom">Headroom</h3>',
        f"<p>As the cycle of {began} began, in the probe's own cgroup, limits and /dev/shm.</p>",
        markup.kv_table(headroom_rows(latest)),
    ]


def config_page(base: str, state: WebState) -> str:
    parts = [
        "<h2>Configuration</h2>",
        "<p>What the daemon runs now: the last configuration it loaded successfully. "
        "Values that could be secrets are never shown.</p>",
        "<h3>Global settings</h3>",
        markup.settings_table(state.global_settings)
        if state.global_settings
        else "<p>The daemon reported none.</p>",
        "<h3>Probes</h3>",
    ]
    if not state.probes:
        parts.append("<p>No probes are configured.</p>")
    for probe in state.probes:
        parts += [f"<h4>{markup.link(markup.probe_href(base, probe.name), probe.name)}</h4>"]
        parts.append(markup.settings_table(probe.settings))
    return markup.page("pqd: configuration", base, "\n".join(parts))


def cycle_not_found_page(base: str, cycle_id: str) -> str:
    body = (
        f"<p>No cycle with id <code>{markup.escape(markup.cut(cycle_id, 300))}</code>. "
        "Cycles are kept for a "
        f'limited time; see the <a href="{markup.escape(base)}/">recent cycles</a>.</p>'
    )
    return markup.page("pqd: cycle not found", base, body)


def probe_not_found_page(base: str, name: str) -> str:
    body = (
        f"<p>No probe named <code>{markup.escape(markup.cut(name, 300))}</code> is configured. "
        f'See the <a href="{markup.escape(base)}/">probes</a> and the '
        f'<a href="{markup.escape(base)}/config">configuration</a>.</p>'
    )
    return markup.page("pqd: probe not found", base, body)
