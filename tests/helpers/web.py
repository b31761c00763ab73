"""Driving the WSGI app in unit tests: hand-built cycles and daemon state, a request with
PATH_INFO as a server passes it, and reading what the pages show."""

from __future__ import annotations

import dataclasses
import html
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote
from wsgiref.types import WSGIApplication
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

from prometheus_client import CollectorRegistry

from pqd.results import CycleResult, HelperProcess, JobReport
from pqd.web.app import ProbeView, WebState, make_app
from tests.helpers.factories import seed_shaped_result, tallied

# The seed prints a full-width colon (U+FF1A) in "put in q:A"; it must reach the page intact.
SEED_COLON = "\uff1a"
XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
# Cycle ids travel in the URL path, where "/" cannot round-trip: the id gets a slash-free payload.
XSS_ID = '<img src="x" onerror=alert(1)>'
# The Unix time the app's clock says it is, a little after make_cycle's cycles.
NOW = 1_700_000_100.0


# --- factories -------------------------------------------------------------------------------


def make_job(**overrides: Any) -> JobReport:
    fields: dict[str, Any] = {
        "kind": "producer",
        "round": 1,
        "pid": 2001,
        "process_name": "ForkServerPoolWorker-1",
        "is_alive": True,
        "parent_pid": 2000,
        "host_pid_count": 321,
        "started_at": 1_700_000_000.5,
        "items": ("A", "B", "C", "D", "E"),
        "item_count": 5,
        "full_events": 2,
        **tallied((0.001,) * 5),
        "error": None,
        "job_counter": 1,
        "queue_depth_after": 3,
        "workers_live_after": 4,
    }
    fields.update(overrides)
    return JobReport(**fields)


def make_cycle(**overrides: Any) -> CycleResult:
    fields: dict[str, Any] = {
        "cycle_id": "c1",
        "main_pid": 2000,
        "started_at": 1_700_000_000.0,
        "ended_at": 1_700_000_001.25,
        "duration_seconds": 1.25,
        "host_pid_count_before": 300,
        "host_pid_count_during": 307,
        "host_pid_count_after": 302,
        "helpers_started": (HelperProcess(pid=1999, role="forkserver"),),
        "phase_seconds": {"pool_start": 0.2, "jobs": 1.0, "teardown": 0.05},
        "jobs": (make_job(),),
    }
    return seed_shaped_result(**{**fields, **overrides})


def make_state(**overrides: Any) -> WebState:
    fields: dict[str, Any] = {
        "version": "1.2.3",
        "python_version": "3.11.9",
        "started_at": 1_700_000_000.0,
        "probes": (
            ProbeView(
                name="default",
                settings=(("start_method", "forkserver"), ("workers", "4"), ("schedule", "15s")),
            ),
        ),
        "reload_enabled": True,
        "ready": True,
    }
    fields.update(overrides)
    return WebState(**fields)


class Fake:
    """The daemon side: holds what the callbacks return and records how they were called."""

    def __init__(self, cycles: Iterable[CycleResult] = (), state: WebState | None = None) -> None:
        self.cycles = list(cycles)
        self.state = state or make_state()
        self.looked_up: list[str] = []
        self.reloads = 0
        self.reload_result = (True, "Configuration reloaded.")
        self.trace: Callable[[CycleResult], list[str]] = lambda r: [
            f"1700000000.0 {r.main_pid} MainProcess 300",
            f"put in q{SEED_COLON}A",
            "Full q !!!",
            "count(1)",
            "**********",
        ]
        self.registry = CollectorRegistry(auto_describe=True)

    def find(self, cycle_id: str) -> CycleResult | None:
        self.looked_up.append(cycle_id)
        return next((c for c in self.cycles if c.cycle_id == cycle_id), None)

    def reload(self) -> tuple[bool, str]:
        self.reloads += 1
        return self.reload_result

    def app(self) -> WSGIApplication:
        return make_app(
            registry=self.registry,
            state=lambda: self.state,
            recent_cycles=lambda: list(self.cycles),
            find_cycle=self.find,
            render_trace=lambda r: self.trace(r),
            reload=self.reload,
            clock=lambda: NOW,
        )


# --- driving the app -------------------------------------------------------------------------


@dataclasses.dataclass
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def call(
    app: WSGIApplication,
    *,
    path_info: str,
    method: str = "GET",
    query: str = "",
    headers: dict[str, str] | None = None,
    script_name: str = "",
) -> Response:
    """One request with PATH_INFO exactly as given, through wsgiref's PEP 3333 validator."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path_info,
        "QUERY_STRING": query,
        "SCRIPT_NAME": script_name,
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    captured: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, response_headers: list[tuple[str, str]], *_: Any) -> Any:
        captured.append((status, response_headers))
        return lambda data: None

    result = validator(app)(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        result.close()  # type: ignore[attr-defined]  # the validator's iterator insists on it
    status, response_headers = captured[-1]
    return Response(
        status=int(status.split(" ", 1)[0]),
        headers={k.lower(): v for k, v in response_headers},
        body=body,
    )


def get(app: WSGIApplication, url_path: str, **kwargs: Any) -> Response:
    """A request for a URL path as a browser sends it: the server percent-decodes it to latin-1."""
    path, _, query = url_path.partition("?")
    return call(app, path_info=unquote(path, encoding="latin-1"), query=query, **kwargs)


def hrefs(body: str) -> list[str]:
    """Every link's target, as the browser reads it (attribute entities decoded)."""
    return [html.unescape(h) for h in re.findall(r'href="([^"]*)"', body)]


def text_of(fragment: str) -> str:
    """What a browser shows of an HTML fragment: tags dropped, entities decoded."""
    return html.unescape(re.sub(r"<[^>]*>", "", fragment))


def table(page: str, table_class: str) -> str:
    found = re.search(rf'<table class="{table_class}">(.*?)</table>', page, re.S)
    assert found is not None, f"no table.{table_class} in the page"
    return found.group(1)


def rows(page: str, table_class: str) -> list[list[str]]:
    """The text of each cell of each row of the table with that class, header row left out."""
    return [
        [text_of(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table(page, table_class), re.S)[1:]
    ]


def row_classes(page: str, table_class: str) -> list[str]:
    return re.findall(r'<tr class="([^"]*)">', table(page, table_class))


def cycle_links(page: str) -> list[str]:
    """The cycle ids linked from the recent-cycles table, top to bottom."""
    return [
        unquote(h.removeprefix("/cycles/"))
        for h in hrefs(table(page, "cycles"))
        if h.startswith("/cycles/")
    ]
