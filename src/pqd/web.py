"""The HTTP interface as a WSGI application: /metrics, a landing page, cycle traces, lifecycle API.

Only the application lives here; the daemon wraps it in a server (TLS, basic auth, threads). Like
prometheus_client's own make_wsgi_app, the registry is passed in, and so is everything else the
pages show: the app reads the daemon's state only through the callbacks given to make_app, so it
can be driven in tests with plain environ dicts.
"""

from __future__ import annotations

import html
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Final
from urllib.parse import quote
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app

from pqd.results import PHASES, CycleResult

__all__ = ["ProbeView", "WebState", "make_app"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeView:
    """One configured probe, as the landing page lists it."""

    name: str
    settings: tuple[tuple[str, str], ...]  # ("start_method", "forkserver"), ("workers", "4"), ...


@dataclass(frozen=True)
class WebState:
    """A snapshot of the daemon that the pages show; plain data handed over by the daemon."""

    version: str
    python_version: str
    started_at: float  # Unix time the daemon started
    probes: tuple[ProbeView, ...]
    reload_enabled: bool
    ready: bool
    # Why cycles are not progressing (the check that withholds the watchdog ping); "" if they are.
    unhealthy_reason: str = ""


_Headers = list[tuple[str, str]]
_Response = tuple[str, _Headers, bytes]

_GET_METHODS: Final = ("GET", "HEAD")
_ALLOW_GET: Final = "GET, HEAD"
_ALLOW_POST: Final = "POST"
_CYCLES_PREFIX: Final = "/cycles/"
# Longer than any id the daemon makes; bounds the work done for a hostile request.
_MAX_CYCLE_ID_LENGTH: Final = 256
# A leaked process's command line can be as long as the kernel allows; the page shows this much.
_MAX_COMMAND_LENGTH: Final = 1000

# Every response: browsers must not guess a type (a trace rendered as HTML would be an XSS).
_COMMON_HEADERS: Final = (("X-Content-Type-Options", "nosniff"),)
# HTML pages need no script, image, font or frame, only their own inline <style>.
_HTML_HEADERS: Final = (
    ("Content-Type", "text/html; charset=utf-8"),
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
)

_CSS: Final = """
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       margin: 0; color: #222; }
header { background: #e6522c; color: #fff; padding: 0.6em 1em; }
header h1 { margin: 0; font-size: 1.4em; }
header a { color: #fff; }
main { padding: 0 1em 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fde8e8; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 0.6em; overflow-x: auto; }
code { font-size: 0.95em; }
"""


def make_app(
    *,
    registry: CollectorRegistry,
    state: Callable[[], WebState],
    recent_cycles: Callable[[], list[CycleResult]],
    find_cycle: Callable[[str], CycleResult | None],
    render_trace: Callable[[CycleResult], list[str]],
    reload: Callable[[], tuple[bool, str]],
) -> WSGIApplication:
    """Build the WSGI application.

    The callbacks are called on every request that needs them, from the server's threads:
    ``state`` for a snapshot of the daemon, ``recent_cycles`` for the cycles to list (any order;
    the page sorts them), ``find_cycle`` to look one up by id, ``render_trace`` for its trace
    lines, and ``reload`` to reload the configuration (``(ok, message)``). A callback that raises
    gives a 500 response; the application itself never raises.
    """
    return _App(
        metrics_app=make_wsgi_app(registry),
        state=state,
        recent_cycles=recent_cycles,
        find_cycle=find_cycle,
        render_trace=render_trace,
        reload=reload,
    )


class _App:
    def __init__(
        self,
        *,
        metrics_app: WSGIApplication,
        state: Callable[[], WebState],
        recent_cycles: Callable[[], list[CycleResult]],
        find_cycle: Callable[[str], CycleResult | None],
        render_trace: Callable[[CycleResult], list[str]],
        reload: Callable[[], tuple[bool, str]],
    ) -> None:
        self._metrics_app = metrics_app
        self._state = state
        self._recent_cycles = recent_cycles
        self._find_cycle = find_cycle
        self._render_trace = render_trace
        self._reload = reload

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        try:
            status, headers, body = self._dispatch(environ, method)
        except Exception:
            # A failing callback (or a collector during a scrape) must cost one response, not the
            # server thread; the client gets no traceback, the log gets it.
            logger.exception("error serving %s %r", method, environ.get("PATH_INFO", ""))
            status, headers, body = _text(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal Server Error")
        headers.extend(h for h in _COMMON_HEADERS if not _has_header(headers, h[0]))
        if not _has_header(headers, "Content-Length"):
            headers.append(("Content-Length", str(len(body))))
        start_response(status, headers)
        # HEAD gets the headers GET would have got, Content-Length included, but no body.
        return [] if method == "HEAD" else [body]

    def _dispatch(self, environ: WSGIEnvironment, method: str) -> _Response:
        path = _decode_path(environ.get("PATH_INFO", ""))
        if path is None:
            return _text(HTTPStatus.BAD_REQUEST, "Bad Request: the path is not valid UTF-8")
        if path == "":
            path = "/"
        base = _script_name(environ)

        if path == "/-/reload":
            if method != "POST":
                return _method_not_allowed(_ALLOW_POST)
            return self._reload_response()

        if path.startswith(_CYCLES_PREFIX):
            if method not in _GET_METHODS:
                return _method_not_allowed(_ALLOW_GET)
            cycle_id = path[len(_CYCLES_PREFIX) :]
            if not _plausible_cycle_id(cycle_id):
                return _cycle_not_found(base, cycle_id)
            result = self._find_cycle(cycle_id)
            if result is None:
                return _cycle_not_found(base, cycle_id)
            return _html(HTTPStatus.OK, _cycle_page(base, result, self._render_trace(result)))

        get_routes: dict[str, Callable[[], _Response]] = {
            "/": lambda: _html(
                HTTPStatus.OK, _landing_page(base, self._state(), self._recent_cycles())
            ),
            "/metrics": lambda: self._metrics(environ),
            "/-/healthy": self._healthy_response,
            "/-/ready": self._ready_response,
        }
        handler = get_routes.get(path)
        if handler is None:
            return _text(HTTPStatus.NOT_FOUND, "Not Found")
        if method not in _GET_METHODS:
            return _method_not_allowed(_ALLOW_GET)
        return handler()

    def _metrics(self, environ: WSGIEnvironment) -> _Response:
        # prometheus_client's app answers HEAD with 405, so ask it for GET and drop the body
        # ourselves (in __call__); a copy keeps the caller's environ untouched.
        inner_environ = dict(environ)
        inner_environ["REQUEST_METHOD"] = "GET"
        # prometheus_client compresses whenever "gzip" is named, even as "gzip;q=0" (RFC 9110
        # §12.5.3: q=0 means "not acceptable") and never for "*": it is told plainly.
        if gzip_wanted(str(environ.get("HTTP_ACCEPT_ENCODING", ""))):
            inner_environ["HTTP_ACCEPT_ENCODING"] = "gzip"
        else:
            inner_environ.pop("HTTP_ACCEPT_ENCODING", None)
        captured: list[tuple[str, _Headers]] = []
        written: list[bytes] = []

        def capture(
            status: str, headers: _Headers, exc_info: object = None, /
        ) -> Callable[[bytes], object]:
            captured.append((status, list(headers)))
            return written.append

        chunks = self._metrics_app(inner_environ, capture)
        try:
            body = b"".join([*written, *chunks])
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if not captured:
            raise RuntimeError("metrics app returned without calling start_response")
        status, headers = captured[-1]
        # The body depends on Accept-Encoding (and Accept): caches must keep them apart.
        return status, [*headers, ("Vary", "Accept-Encoding, Accept")], body

    def _healthy_response(self) -> _Response:
        reason = self._state().unhealthy_reason
        if not reason:
            return _text(HTTPStatus.OK, "Healthy")
        return _text(HTTPStatus.SERVICE_UNAVAILABLE, f"Not healthy: {reason}")

    def _ready_response(self) -> _Response:
        if self._state().ready:
            return _text(HTTPStatus.OK, "Ready")
        return _text(HTTPStatus.SERVICE_UNAVAILABLE, "Not ready")

    def _reload_response(self) -> _Response:
        if not self._state().reload_enabled:
            # Not switched on: the endpoint does not exist, as far as a client can tell.
            return _text(HTTPStatus.NOT_FOUND, "Not Found (the reload endpoint is not enabled)")
        ok, message = self._reload()
        return _text(HTTPStatus.OK if ok else HTTPStatus.INTERNAL_SERVER_ERROR, message)


# --- request helpers -----------------------------------------------------------------------


def _decode_path(raw: object) -> str | None:
    """PATH_INFO as text, or None if it is not UTF-8.

    PEP 3333 servers percent-decode the path and hand over its bytes as a latin-1 str, so the
    real text is recovered by re-encoding. A str holding characters above U+00FF breaks that
    contract and is refused the same way. A ``%`` left in the result is a literal character.
    """
    if not isinstance(raw, str):
        return None
    try:
        return raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return None


def _script_name(environ: WSGIEnvironment) -> str:
    """The URL prefix the app is mounted under, ready to put in an href ("" at the root)."""
    raw = environ.get("SCRIPT_NAME", "")
    if not isinstance(raw, str):
        return ""
    try:
        return quote(raw.encode("latin-1"), safe="/").rstrip("/")
    except UnicodeError:
        return ""


def _plausible_cycle_id(cycle_id: str) -> bool:
    """Reject what cannot be an id before it reaches find_cycle: nested paths, dot segments."""
    return (
        0 < len(cycle_id) <= _MAX_CYCLE_ID_LENGTH
        and "/" not in cycle_id
        and cycle_id not in (".", "..")
        and cycle_id.isprintable()
    )


def _has_header(headers: _Headers, name: str) -> bool:
    lowered = name.lower()
    return any(key.lower() == lowered for key, _ in headers)


def _status_line(status: HTTPStatus) -> str:
    return f"{status.value} {status.phrase}"


def _text(status: HTTPStatus, message: str) -> _Response:
    headers: _Headers = [("Content-Type", "text/plain; charset=utf-8")]
    return _status_line(status), headers, (message + "\n").encode("utf-8", "replace")


def _html(status: HTTPStatus, page: str) -> _Response:
    # "replace": a lone surrogate in some detail text must not turn the page into a 500.
    return _status_line(status), list(_HTML_HEADERS), page.encode("utf-8", "replace")


def _method_not_allowed(allow: str) -> _Response:
    status, headers, body = _text(HTTPStatus.METHOD_NOT_ALLOWED, "Method Not Allowed")
    headers.append(("Allow", allow))
    return status, headers, body


def _cycle_not_found(base: str, cycle_id: str) -> _Response:
    body = (
        f"<p>No cycle with id <code>{_e(cycle_id)}</code>. Cycles are kept for a limited time;"
        f' see the <a href="{_e(base)}/">recent cycles</a>.</p>'
    )
    return _html(HTTPStatus.NOT_FOUND, _page("pqd: cycle not found", base, body))


# --- formatting ----------------------------------------------------------------------------


def _e(value: object) -> str:
    """Escape anything for HTML text and attribute values alike."""
    return html.escape(str(value), quote=True)


def _utc(timestamp: float) -> str:
    try:
        moment = datetime.fromtimestamp(timestamp, tz=UTC)
    except (ValueError, OverflowError, OSError):
        # A timestamp the platform cannot convert (NaN, far future) still deserves a page.
        return str(timestamp)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


def _seconds(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.3f} s"


def _measured_seconds(value: float | None) -> str:
    return "not measured" if value is None else _seconds(value)


def _measured_mib(value: int | None) -> str:
    return "not measured" if value is None else f"{value / 2**20:.1f} MiB"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _outcome(result: CycleResult) -> str:
    if result.success:
        return "ok"
    return f"failed: {result.reason or 'unknown'}"


def _cycle_href(base: str, cycle_id: str) -> str:
    return f"{base}{_CYCLES_PREFIX}{quote(cycle_id, safe='')}"


def _page(title: str, base: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f'<header><h1><a href="{_e(base)}/">pqd</a></h1></header>\n'
        f"<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def _kv_table(rows: Iterable[tuple[str, str]]) -> str:
    """A two-column table; both columns are escaped here."""
    cells = "".join(f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>" for key, value in rows)
    return f"<table>{cells}</table>"


def _landing_page(base: str, state: WebState, cycles: list[CycleResult]) -> str:
    parts = [
        "<p>Probe daemon for Python multiprocessing health.</p>",
        "<h2>Build</h2>",
        _kv_table(
            [
                ("version", state.version),
                ("python", state.python_version),
                ("started", _utc(state.started_at)),
                ("ready", "yes" if state.ready else "no"),
                (
                    "lifecycle API (POST /-/reload)",
                    "enabled" if state.reload_enabled else "disabled",
                ),
            ]
        ),
        f'<p><a href="{_e(base)}/metrics">Metrics</a></p>',
        "<h2>Probes</h2>",
    ]
    if not state.probes:
        parts.append("<p>No probes are configured.</p>")
    for probe in state.probes:
        parts.append(f"<h3>{_e(probe.name)}</h3>")
        parts.append(_kv_table(probe.settings))

    parts.append("<h2>Recent cycles</h2>")
    if not cycles:
        parts.append("<p>No cycle has completed yet.</p>")
    else:
        # Newest first whatever order the history keeps them in; the id keeps equal times stable.
        ordered = sorted(cycles, key=lambda c: (c.started_at, c.ended_at, c.cycle_id), reverse=True)
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
        for c in ordered:
            jobs = str(c.jobs_completed)
            if c.jobs_failed:
                jobs += f" ({c.jobs_failed} failed)"
            row_class = "" if c.success else ' class="failed"'
            href = _cycle_href(base, c.cycle_id)
            rows.append(
                f"<tr{row_class}>"
                f'<td><a href="{_e(href)}">{_e(_utc(c.started_at))}</a></td>'
                f"<td>{_e(c.probe)}</td>"
                f"<td>{_e(_outcome(c))}</td>"
                f'<td class="num">{_e(_seconds(c.duration_seconds))}</td>'
                f'<td class="num">{_e(jobs)}</td>'
                f'<td class="num">{c.queue_full_events}</td>'
                f'<td class="num">{c.pid_count_delta:+d}</td>'
                f'<td class="num">{c.leaked_processes}</td>'
                "</tr>"
            )
        parts.append(f"<table><tr>{header}</tr>{''.join(rows)}</table>")
    return _page("pqd", base, "\n".join(parts))


def _cycle_page(base: str, result: CycleResult, trace: list[str]) -> str:
    r = result
    summary = [
        ("cycle id", r.cycle_id),
        ("probe", r.probe),
        ("result", _outcome(r)),
        ("detail", r.detail),
        ("started (UTC)", _utc(r.started_at)),
        ("ended (UTC)", _utc(r.ended_at)),
        ("duration", _seconds(r.duration_seconds)),
        ("CPU (whole tree)", _measured_seconds(r.cpu_seconds)),
        ("peak RSS (largest process)", _measured_mib(r.max_rss_bytes)),
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
            f"{r.host_pid_count_before} / {r.host_pid_count_during} / {r.host_pid_count_after}",
        ),
        ("pid count delta", f"{r.pid_count_delta:+d}"),
        ("leaked processes", str(r.leaked_processes)),
        ("leaked pids", " ".join(str(p) for p in r.leaked_pids) or "none"),
        (
            "helpers started",
            ", ".join(f"{h.role} {h.pid}" for h in r.helpers_started) or "none",
        ),
    ]
    # The known phases in cycle order, then anything else a newer cycle module might report.
    phase_names: list[str] = [p for p in PHASES if p in r.phase_seconds]
    phase_names += sorted(p for p in r.phase_seconds if p not in PHASES)
    phases = [(p, _seconds(r.phase_seconds[p])) for p in phase_names]

    parts = [
        f"<h2>Cycle <code>{_e(r.cycle_id)}</code></h2>",
        f'<p><a href="{_e(base)}/">Back to the recent cycles</a></p>',
        _kv_table(summary),
        *(["<h3>Leaked processes</h3>", _leaked_table(r)] if r.leaked_pids else []),
        "<h3>Phases</h3>",
        _kv_table(phases) if phases else "<p>No phase was reached.</p>",
        "<h3>Jobs</h3>",
        _jobs_table(r) if r.jobs else "<p>No job reported back.</p>",
        "<h3>Trace</h3>",
        f"<pre>{_e(chr(10).join(trace))}</pre>",
    ]
    return _page(f"pqd: cycle {r.cycle_id}", base, "\n".join(parts))


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
        cells = (
            job.job_counter,
            job.round,
            job.kind,
            job.pid,
            job.process_name,
            "yes" if job.is_alive else "no",
            job.parent_pid,
            job.host_pid_count,
            " ".join(job.items)
            + (
                f" (+{job.item_count - len(job.items)} more)"
                if job.item_count > len(job.items)
                else ""
            ),
            job.full_events,
            sum(job.operation_counts),
            job.queue_depth_after,
            job.workers_live_after,
            job.error or "",
        )
        row_class = ' class="failed"' if job.error else ""
        rows.append(f"<tr{row_class}>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{header}</tr>{''.join(rows)}</table>"


def _leaked_table(result: CycleResult) -> str:
    """Each leaked pid with its command line (escaped: a process names itself what it likes)."""
    commands = list(result.leaked_commands)
    commands += [""] * (len(result.leaked_pids) - len(commands))  # a result without them
    rows = "".join(
        f'<tr><td class="num">{pid}</td>'
        f"<td><code>{_e(_cut(cmd, _MAX_COMMAND_LENGTH)) or 'unknown'}</code></td></tr>"
        for pid, cmd in zip(result.leaked_pids, commands, strict=False)
    )
    return f"<table><tr><th>PID</th><th>Command line</th></tr>{rows}</table>"


def gzip_wanted(accept_encoding: str) -> bool:
    """True if Accept-Encoding names gzip (or *) with a q-value above 0."""
    wanted = False
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if coding.lower() == "gzip":
            return quality > 0  # an explicit gzip entry decides, whatever * says
        if coding == "*":
            wanted = quality > 0
    return wanted
