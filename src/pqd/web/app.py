"""The HTTP interface as a WSGI application: /metrics, status pages, cycle traces, lifecycle API.

Only the application lives here; the daemon wraps it in a server (TLS, basic auth, threads), and
the pages are rendered by pqd.web.pages and pqd.web.cycle_page. Like prometheus_client's own
make_wsgi_app, the registry is passed in, and so is everything else the pages show: the app reads
the daemon's state only through the callbacks given to make_app, so it can be driven in tests
with plain environ dicts.
"""

from __future__ import annotations

import gzip
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final
from urllib.parse import parse_qs, parse_qsl, quote
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from pqd.metrics.exposition_cache import ExpositionCache
from pqd.results import CycleResult
from pqd.web.cycle_page import cycle_page
from pqd.web.markup import CYCLES_PREFIX, PROBES_PREFIX, cut
from pqd.web.pages import (
    RESULT_FILTERS,
    CycleQuery,
    config_page,
    cycle_not_found_page,
    landing_page,
    probe_not_found_page,
    probe_page,
)
from pqd.web.state import ProbeView, WebState

__all__ = ["ProbeView", "WebState", "make_app"]

logger = logging.getLogger(__name__)

_Headers = list[tuple[str, str]]
_Response = tuple[str, _Headers, bytes]

_GET_METHODS: Final = ("GET", "HEAD")
_ALLOW_GET: Final = "GET, HEAD"
_ALLOW_POST: Final = "POST"
# Longer than any id the daemon makes; bounds the work done for a hostile request.
_MAX_CYCLE_ID_LENGTH: Final = 256
# Four UTF-8 bytes for each of a probe name's at most 128 characters, percent-encoded or not.
_MAX_PROBE_PATH_LENGTH: Final = 4 * 128
# Far more than three parameters need; bounds the parsing done for a hostile request.
_MAX_QUERY_LENGTH: Final = 4096
_MAX_ECHO: Final = 80
# The parameters of a cycle list. Others are ignored: a link may carry a tracker's utm_source.
_QUERY_FIELDS: Final = ("probe", "result", "page")
# Each scrape's body is compressed whole (one gzip member). Level 1, measured on the default
# probe's 18.5 kB exposition: 34 us and 2.9 kB, against 117 us and 2.6 kB at level 6 and 140 us
# at level 9 (the default), so the bytes saved are not worth the CPU of every scrape.
_GZIP_LEVEL: Final = 1

# Every response: browsers must not guess a type (a trace rendered as HTML would be an XSS).
_COMMON_HEADERS: Final = (("X-Content-Type-Options", "nosniff"),)
# HTML pages need no script, image, font or frame, only their own inline <style>.
_HTML_HEADERS: Final = (
    ("Content-Type", "text/html; charset=utf-8"),
    ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
)


class _BadRequest(Exception):
    """A query the pages cannot answer; its message is the response's one line."""


def make_app(
    *,
    registry: CollectorRegistry,
    state: Callable[[], WebState],
    recent_cycles: Callable[[], list[CycleResult]],
    find_cycle: Callable[[str], CycleResult | None],
    render_trace: Callable[[CycleResult], list[str]],
    reload: Callable[[], tuple[bool, str]],
    clock: Callable[[], float] = time.time,
    exposition: ExpositionCache | None = None,
) -> WSGIApplication:
    """Build the WSGI application.

    The callbacks are called on every request that needs them, from the server's threads:
    ``state`` for a snapshot of the daemon, ``recent_cycles`` for the cycles to list (any order;
    the pages sort them), ``find_cycle`` to look one up by id, ``render_trace`` for its trace
    lines, ``reload`` to reload the configuration (``(ok, message)``) and ``clock`` for the Unix
    time that "last success ... ago" is counted to. A callback that raises gives a 500 response;
    the application itself never raises.

    ``exposition`` (PqdMetrics.exposition, of this same registry) serves /metrics with pqd's own
    families encoded once per change; without it every scrape renders the whole registry.
    """
    if exposition is not None and exposition.registry is not registry:
        raise ValueError("the exposition must be of the registry the app serves")
    return _App(registry, state, recent_cycles, find_cycle, render_trace, reload, clock, exposition)


@dataclass(frozen=True)
class _App:
    """The application: everything it shows comes through these callbacks (make_app)."""

    _registry: CollectorRegistry
    _state: Callable[[], WebState]
    _recent_cycles: Callable[[], list[CycleResult]]
    _find_cycle: Callable[[str], CycleResult | None]
    _render_trace: Callable[[CycleResult], list[str]]
    _reload: Callable[[], tuple[bool, str]]
    _clock: Callable[[], float]
    _exposition: ExpositionCache | None

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET"))
        try:
            status, headers, body = self._dispatch(environ, method)
        except _BadRequest as err:
            status, headers, body = _text(HTTPStatus.BAD_REQUEST, f"Bad Request: {err}")
        except Exception:
            # A failing callback (or a collector during a scrape) must cost one response, not the
            # server thread; the client gets no traceback, the log gets it.
            logger.exception("error serving %s %r", method, environ.get("PATH_INFO", ""))
            status, headers, body = _text(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal Server Error")
        headers.extend(h for h in _COMMON_HEADERS if not _has_header(headers, h[0]))
        # Content-Length, and no body for HEAD, are the server's (pqd.http.parse.response_bytes).
        start_response(status, headers)
        return [body]

    def _dispatch(self, environ: WSGIEnvironment, method: str) -> _Response:
        path = _decode_path(environ.get("PATH_INFO", ""))
        if path is None:
            return _text(HTTPStatus.BAD_REQUEST, "Bad Request: the path is not valid UTF-8")
        base = _script_name(environ)
        if path == "/-/reload":
            if method != "POST":
                return _method_not_allowed(_ALLOW_POST)
            return self._reload_response()
        handler = self._get_handler(path or "/", base, environ)
        if handler is None:
            return _text(HTTPStatus.NOT_FOUND, "Not Found")
        if method not in _GET_METHODS:
            return _method_not_allowed(_ALLOW_GET)
        return handler()

    def _get_handler(
        self, path: str, base: str, environ: WSGIEnvironment
    ) -> Callable[[], _Response] | None:
        """What answers a GET of ``path``; called only once the method is known to be right."""
        if path.startswith(CYCLES_PREFIX):
            return lambda: self._cycle_response(base, path[len(CYCLES_PREFIX) :])
        if path.startswith(PROBES_PREFIX) and len(path) > len(PROBES_PREFIX):
            name = path[len(PROBES_PREFIX) :]
            return lambda: self._probe_response(base, name, environ)
        routes: dict[str, Callable[[], _Response]] = {
            "/": lambda: self._landing_response(base, environ),
            "/config": lambda: _html(HTTPStatus.OK, config_page(base, self._state())),
            "/metrics": lambda: self._metrics(environ),
            "/-/healthy": self._healthy_response,
            "/-/ready": self._ready_response,
        }
        return routes.get(path)

    def _landing_response(self, base: str, environ: WSGIEnvironment) -> _Response:
        query = _cycle_query(environ.get("QUERY_STRING", ""))
        state = self._state()
        cycles = self._recent_cycles()
        if query.probe is not None:
            known = {p.name for p in state.probes} | {c.probe for c in cycles}
            if query.probe not in known:
                raise _BadRequest(f"no probe is named {_echo(query.probe)}")
        page = landing_page(base, state, cycles, query, self._clock())
        return _html(HTTPStatus.OK, page)

    def _probe_response(self, base: str, name: str, environ: WSGIEnvironment) -> _Response:
        query = _cycle_query(environ.get("QUERY_STRING", ""))
        probe = (
            _find_probe(self._state().probes, name) if len(name) <= _MAX_PROBE_PATH_LENGTH else None
        )
        if probe is None:
            return _html(HTTPStatus.NOT_FOUND, probe_not_found_page(base, name))
        # The path names the probe; a probe= in the query would only contradict it.
        query = CycleQuery(result=query.result, page=query.page)
        page = probe_page(base, probe, self._recent_cycles(), query, self._clock())
        return _html(HTTPStatus.OK, page)

    def _cycle_response(self, base: str, cycle_id: str) -> _Response:
        result = self._find_cycle(cycle_id) if _plausible_cycle_id(cycle_id) else None
        if result is None:
            return _html(HTTPStatus.NOT_FOUND, cycle_not_found_page(base, cycle_id))
        return _html(HTTPStatus.OK, cycle_page(base, result, self._render_trace(result)))

    def _metrics(self, environ: WSGIEnvironment) -> _Response:
        """The registry in the format that Accept asks for (OpenMetrics carries exemplars),
        only the families named by ``name[]`` if any, gzipped if Accept-Encoding allows it."""
        encoder, content_type = choose_encoder(str(environ.get("HTTP_ACCEPT", "")))
        names = parse_qs(str(environ.get("QUERY_STRING", ""))).get("name[]")
        if names:
            body = encoder(self._registry.restricted_registry(names))  # rare: never kept
        elif self._exposition is not None:
            body = self._exposition.render(encoder, content_type)
        else:
            body = encoder(self._registry)
        headers: _Headers = [("Content-Type", content_type)]
        # Not prometheus_client's gzip_accepted: it gzips for "gzip;q=0" too (RFC 9110 §12.5.3:
        # q=0 means "not acceptable") and never for "*".
        if gzip_wanted(str(environ.get("HTTP_ACCEPT_ENCODING", ""))):
            body = gzip.compress(body, compresslevel=_GZIP_LEVEL)
            headers.append(("Content-Encoding", "gzip"))
        # The body depends on Accept-Encoding (and Accept): caches must keep them apart.
        headers.append(("Vary", "Accept-Encoding, Accept"))
        return _status_line(HTTPStatus.OK), headers, body

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
        # A refused file is the caller's to fix, not a fault of pqd's, which keeps running on
        # its old config: 422, with the one-line reason.
        return _text(HTTPStatus.OK if ok else HTTPStatus.UNPROCESSABLE_ENTITY, message)


# --- query and probe name ------------------------------------------------------------------


def _echo(value: str) -> str:
    return repr(cut(value, _MAX_ECHO))


def _cycle_query(raw: object) -> CycleQuery:
    """``?probe=NAME&result=failed&page=2`` as a CycleQuery; _BadRequest for values that are
    not valid. An empty value means the same as a missing one."""
    text = raw if isinstance(raw, str) else ""
    if len(text) > _MAX_QUERY_LENGTH:
        raise _BadRequest(f"the query string is longer than {_MAX_QUERY_LENGTH} characters")
    try:
        # PEP 3333: QUERY_STRING is not decoded, but a non-ASCII byte in it arrives as latin-1.
        decoded = text.encode("latin-1").decode("utf-8")
        pairs = parse_qsl(decoded, keep_blank_values=True, errors="strict")
    except UnicodeError:
        raise _BadRequest("the query string is not UTF-8 text") from None
    values: dict[str, str] = {}
    for key, value in pairs:
        if key not in _QUERY_FIELDS:
            continue
        if key in values:
            raise _BadRequest(f"{key} is given more than once")
        values[key] = value
    result = values.get("result") or None
    if result is not None and result not in RESULT_FILTERS:
        raise _BadRequest(f"result must be {' or '.join(RESULT_FILTERS)}, not {_echo(result)}")
    page = values.get("page") or "1"
    # At most 9 digits: a page number, not a request for a billion-digit int() conversion.
    if not (page.isascii() and page.isdigit() and len(page) <= 9 and int(page) >= 1):
        raise _BadRequest(f"page must be a whole number from 1, not {_echo(page)}")
    return CycleQuery(probe=values.get("probe") or None, result=result, page=int(page))


def _find_probe(probes: Sequence[ProbeView], name: str) -> ProbeView | None:
    """The probe that ``/probes/NAME`` names, NAME as decoded by the server.

    A "+" in the decoded path was either "+" or "%2B" in the URL: Go's ``urlquery`` (in alert
    templates) writes a space as "+" and a plus as "%2B", and the server decodes both to "+"
    before the app sees the path (pqd's own links write %20 and %2B). So an exact match wins,
    and failing that a "+" in the path also matches a space in the name.
    """
    exact = next((p for p in probes if p.name == name), None)
    if exact is not None or "+" not in name:
        return exact
    return next((p for p in probes if _same_but_plus_for_space(name, p.name)), None)


def _same_but_plus_for_space(path_name: str, probe_name: str) -> bool:
    return len(path_name) == len(probe_name) and all(
        a == b or (a == "+" and b == " ") for a, b in zip(path_name, probe_name, strict=True)
    )


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
