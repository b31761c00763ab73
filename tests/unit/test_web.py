"""The WSGI app driven directly with environ dicts: no server, no sockets, no threads."""

from __future__ import annotations

import dataclasses
import gzip
import logging
import re
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import unquote
from wsgiref.types import WSGIApplication
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.registry import Collector

from pqd.results import CycleResult, HelperProcess, JobReport
from pqd.web import ProbeView, WebState, make_app
from tests.factories import seed_shaped_result, tallied

# The seed prints a full-width colon (U+FF1A) in "put in q:A"; it must reach the page intact.
SEED_COLON = "\uff1a"
XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
# Cycle ids travel in the URL path, where "/" cannot round-trip: the id gets a slash-free payload.
XSS_ID = '<img src="x" onerror=alert(1)>'


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
    return re.findall(r'href="([^"]*)"', body)


# --- landing page ----------------------------------------------------------------------------


def test_landing_page_lists_cycles_newest_first_with_links() -> None:
    fake = Fake(
        [
            make_cycle(cycle_id="middle", started_at=1_700_000_100.0),
            make_cycle(cycle_id="newest", started_at=1_700_000_200.0),
            make_cycle(
                cycle_id="oldest",
                started_at=1_700_000_000.0,
                success=False,
                reason="timeout",
                jobs_completed=7,
                jobs_failed=1,
                host_pid_count_after=299,
                leaked_processes=2,
            ),
        ]
    )
    r = get(fake.app(), "/")
    assert r.status == 200
    cycle_links = [h for h in hrefs(r.text) if h.startswith("/cycles/")]
    assert cycle_links == ["/cycles/newest", "/cycles/middle", "/cycles/oldest"]
    assert "/metrics" in hrefs(r.text)
    assert "<title>pqd</title>" in r.text
    assert "1.2.3" in r.text and "3.11.9" in r.text
    assert "2023-11-14T22:16:40.000Z" in r.text  # oldest's start, in UTC
    assert "failed: timeout" in r.text
    assert "7 (1 failed)" in r.text
    assert ">-1<" in r.text  # pid delta 299 - 300
    assert ">+2<" in r.text  # the successful cycles' pid delta 302 - 300
    assert "1.250 s" in r.text


def test_landing_page_shows_probe_settings() -> None:
    state = make_state(
        probes=(
            ProbeView("default", (("start_method", "forkserver"), ("workers", "4"))),
            ProbeView("spawny", (("start_method", "spawn"), ("schedule", "*/5 * * * *"))),
        )
    )
    r = get(Fake(state=state).app(), "/")
    assert r.status == 200
    for text in ("default", "spawny", "forkserver", "spawn", "*/5 * * * *", "workers"):
        assert f">{text}<" in r.text


def test_landing_page_without_cycles_or_probes() -> None:
    r = get(Fake(state=make_state(probes=())).app(), "/")
    assert r.status == 200
    assert "No cycle has completed yet." in r.text
    assert "No probes are configured." in r.text


def test_html_pages_carry_type_nosniff_and_csp() -> None:
    fake = Fake([make_cycle()])
    for path in ("/", "/cycles/c1", "/cycles/unknown"):
        r = get(fake.app(), path)
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"] == (
            "default-src 'none'; style-src 'unsafe-inline'"
        )
        assert int(r.headers["content-length"]) == len(r.body)
        assert "<script" not in r.text  # no JS of our own


def test_everything_from_config_and_results_is_escaped() -> None:
    cycle = make_cycle(
        probe=XSS,
        cycle_id=XSS_ID,
        detail=XSS,
        success=False,
        reason=XSS,
        main_process_name=XSS,
        jobs=(make_job(process_name=XSS, error=XSS, items=(XSS,)),),
    )
    state = make_state(version=XSS, python_version=XSS, probes=(ProbeView(XSS, ((XSS, XSS),)),))
    fake = Fake([cycle], state=state)
    fake.trace = lambda r: [XSS, "a & b"]
    landing = get(fake.app(), "/")
    assert landing.status == 200
    assert "<script>" not in landing.text
    assert XSS_ESCAPED in landing.text
    assert "<img" not in landing.text
    # The id is percent-encoded in the href, so the link cannot break out of the attribute.
    assert "/cycles/%3Cimg%20src%3D%22x%22%20onerror%3Dalert%281%29%3E" in hrefs(landing.text)

    page = get(fake.app(), "/cycles/%3Cimg%20src%3D%22x%22%20onerror%3Dalert%281%29%3E")
    assert page.status == 200
    assert fake.looked_up == [XSS_ID]
    assert "<script>" not in page.text
    assert "<img" not in page.text
    assert XSS_ESCAPED in page.text
    assert "&lt;img src=&quot;x&quot; onerror=alert(1)&gt;" in page.text
    assert "a &amp; b" in page.text


def test_links_survive_ids_with_spaces_and_non_ascii() -> None:
    cycle = make_cycle(cycle_id="probe é/20 30?#%")
    fake = Fake([cycle])
    link = next(h for h in hrefs(get(fake.app(), "/").text) if h.startswith("/cycles/"))
    # A "/" in an id is percent-encoded too, but a server decodes %2F before PATH_INFO, so such an
    # id cannot round-trip; the daemon's ids never contain one. Everything else must.
    assert link == "/cycles/probe%20%C3%A9%2F20%2030%3F%23%25"
    cycle = make_cycle(cycle_id="probe é 20 30?#%")
    fake = Fake([cycle])
    link = next(h for h in hrefs(get(fake.app(), "/").text) if h.startswith("/cycles/"))
    r = get(fake.app(), link)
    assert r.status == 200
    assert fake.looked_up == ["probe é 20 30?#%"]


def test_links_respect_script_name() -> None:
    fake = Fake([make_cycle()])
    r = call(fake.app(), path_info="/", script_name="/pqd")
    assert r.status == 200
    assert {"/pqd/", "/pqd/metrics", "/pqd/cycles/c1"} <= set(hrefs(r.text))


def test_head_is_get_without_a_body() -> None:
    app = Fake([make_cycle()]).app()
    for path in ("/", "/cycles/c1", "/-/healthy", "/-/ready", "/metrics"):
        full = get(app, path)
        head = get(app, path, method="HEAD")
        assert head.status == full.status == 200
        assert head.body == b""
        assert head.headers["content-length"] == str(len(full.body))
        assert head.headers["content-type"] == full.headers["content-type"]


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
    pre = re.search(r"<pre>(.*)</pre>", r.text, re.S)
    assert pre is not None
    assert pre.group(1).splitlines() == [
        "1700000000.0 2000 MainProcess 300",
        f"put in q{SEED_COLON}A",
        "Full q !!!",
        "count(1)",
        "**********",
    ]


def summary_rows(page: str) -> dict[str, str]:
    """The cycle page's key/value rows (first table), as the page writes them (escaped)."""
    table = page[page.index("<table>") : page.index("</table>")]
    return dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", table))


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


# --- /metrics --------------------------------------------------------------------------------


def metrics_fake() -> Fake:
    fake = Fake()
    gauge = Gauge("pqd_test_value", "A test gauge.", ["probe"], registry=fake.registry)
    gauge.labels(probe="default").set(42)
    return fake


def test_metrics_text_exposition() -> None:
    r = get(metrics_fake().app(), "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "content-encoding" not in r.headers
    assert "# HELP pqd_test_value A test gauge.\n" in r.text
    assert 'pqd_test_value{probe="default"} 42.0\n' in r.text


def test_metrics_openmetrics_negotiation() -> None:
    r = get(
        metrics_fake().app(),
        "/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"},
    )
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert 'pqd_test_value{probe="default"} 42.0\n' in r.text
    assert r.text.endswith("# EOF\n")


def test_metrics_gzip() -> None:
    r = get(metrics_fake().app(), "/metrics", headers={"Accept-Encoding": "gzip"})
    assert r.status == 200
    assert r.headers["content-encoding"] == "gzip"
    assert int(r.headers["content-length"]) == len(r.body)
    assert b'pqd_test_value{probe="default"} 42.0\n' in gzip.decompress(r.body)


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("gzip;q=0.5, identity", True),
        ("identity, *", True),
        ("gzip;q=0", False),
        ("GZIP; Q=0.0", False),
        ("*;q=0", False),
        ("gzip;q=0, *", False),
        ("deflate", False),
        ("", False),
    ],
)
def test_metrics_gzip_follows_q_values(accept_encoding: str, gzipped: bool) -> None:
    """RFC 9110 §12.5.3: q=0 means not acceptable; prometheus_client gzipped "gzip;q=0"."""
    r = get(metrics_fake().app(), "/metrics", headers={"Accept-Encoding": accept_encoding})

    assert r.status == 200
    assert ("content-encoding" in r.headers) == gzipped
    body = gzip.decompress(r.body) if gzipped else r.body
    assert b'pqd_test_value{probe="default"} 42.0\n' in body
    assert r.headers["vary"] == "Accept-Encoding, Accept"


def test_metrics_name_filter_is_passed_through() -> None:
    fake = metrics_fake()
    Gauge("pqd_other", "Another.", registry=fake.registry).set(1)
    r = get(fake.app(), "/metrics?name[]=pqd_other")
    assert r.status == 200
    assert "pqd_other 1.0" in r.text
    assert "pqd_test_value" not in r.text


class _BrokenCollector(Collector):
    def describe(self) -> Any:
        return []  # so registering it does not call collect()

    def collect(self) -> Any:
        raise RuntimeError("secret internals")


def test_metrics_with_a_failing_collector_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    fake = Fake()
    fake.registry.register(_BrokenCollector())
    with caplog.at_level(logging.ERROR, logger="pqd.web"):
        r = get(fake.app(), "/metrics")
    assert r.status == 500
    assert r.text == "Internal Server Error\n"
    assert "secret internals" in caplog.text  # logged for the operator, not sent to the client


# --- health, readiness, reload ---------------------------------------------------------------


def test_healthy_and_ready() -> None:
    fake = Fake()
    healthy = get(fake.app(), "/-/healthy")
    assert (healthy.status, healthy.text) == (200, "Healthy\n")
    assert healthy.headers["content-type"] == "text/plain; charset=utf-8"
    ready = get(fake.app(), "/-/ready")
    assert (ready.status, ready.text) == (200, "Ready\n")
    fake.state = make_state(ready=False)
    not_ready = get(fake.app(), "/-/ready")
    assert (not_ready.status, not_ready.text) == (503, "Not ready\n")
    # Health does not depend on readiness.
    assert get(fake.app(), "/-/healthy").status == 200


def test_healthy_is_503_with_the_reason_when_cycles_do_not_progress() -> None:
    fake = Fake()
    fake.state = make_state(unhealthy_reason="probe default: not dispatched for 42s")

    unhealthy = get(fake.app(), "/-/healthy")

    assert (unhealthy.status, unhealthy.text) == (
        503,
        "Not healthy: probe default: not dispatched for 42s\n",
    )
    assert get(fake.app(), "/-/ready").status == 200  # still serving: not a readiness problem


def test_reload_enabled_and_succeeding() -> None:
    fake = Fake()
    r = get(fake.app(), "/-/reload", method="POST")
    assert (r.status, r.text) == (200, "Configuration reloaded.\n")
    assert fake.reloads == 1


def test_reload_enabled_and_failing() -> None:
    fake = Fake()
    fake.reload_result = (False, "probes.default.workers: must be >= 1, got 0")
    r = get(fake.app(), "/-/reload", method="POST")
    assert (r.status, r.text) == (500, "probes.default.workers: must be >= 1, got 0\n")
    assert fake.reloads == 1


def test_reload_disabled_is_not_found() -> None:
    fake = Fake(state=make_state(reload_enabled=False))
    r = get(fake.app(), "/-/reload", method="POST")
    assert (r.status, r.text) == (404, "Not Found (the reload endpoint is not enabled)\n")
    assert fake.reloads == 0


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/-/reload", "POST"),
        ("HEAD", "/-/reload", "POST"),
        ("PUT", "/-/reload", "POST"),
        ("POST", "/", "GET, HEAD"),
        ("DELETE", "/metrics", "GET, HEAD"),
        ("OPTIONS", "/metrics", "GET, HEAD"),
        ("POST", "/-/healthy", "GET, HEAD"),
        ("PUT", "/-/ready", "GET, HEAD"),
        ("POST", "/cycles/c1", "GET, HEAD"),
    ],
)
def test_wrong_method_is_405_with_allow(method: str, path: str, allow: str) -> None:
    fake = Fake([make_cycle()])
    r = get(fake.app(), path, method=method)
    assert r.status == 405
    assert r.headers["allow"] == allow
    assert fake.reloads == 0
    assert fake.looked_up == []


# --- hostile input and failing callbacks -----------------------------------------------------


@pytest.mark.parametrize(
    ("path_info", "status"),
    [
        ("/cycles/../../etc/passwd", 404),
        ("/cycles/..", 404),
        ("/cycles/.", 404),
        ("/cycles/", 404),
        ("/cycles", 404),
        ("/cycles/a/b", 404),
        ("/cycles/%zz", 404),  # a "%" left in PATH_INFO is a literal character
        ("/cycles/%E0%A4%A", 404),
        ("/cycles/\x00", 404),
        ("/cycles/" + "a" * 100_000, 404),
        ("/cycles/\xff\xfe", 400),  # bytes that are not UTF-8, latin-1 decoded as PEP 3333 says
        ("/\xc3", 400),
        ("/cycles/\u0100", 400),  # not a latin-1 str at all: a broken server, still no crash
        ("/metrics/", 404),
        ("/../metrics", 404),
        ("//", 404),
        ("/index.html", 404),
        ("/favicon.ico", 404),
    ],
)
def test_hostile_paths_are_4xx(path_info: str, status: int) -> None:
    fake = Fake([make_cycle()])
    r = call(fake.app(), path_info=path_info)
    assert r.status == status
    assert "Traceback" not in r.text
    # Nothing with a path separator or dot segment reaches the lookup.
    assert all("/" not in i and i not in (".", "..") for i in fake.looked_up)


def test_url_with_non_utf8_escape_is_400() -> None:
    assert get(Fake().app(), "/cycles/%ff").status == 400


def test_empty_path_info_is_the_landing_page() -> None:
    r = call(Fake().app(), path_info="", script_name="/pqd")
    assert r.status == 200
    assert "<title>pqd</title>" in r.text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=0x2FF), max_size=40), st.booleans())
def test_any_path_gets_an_answer_below_500(tail: str, under_cycles: bool) -> None:
    app = Fake().app()
    r = call(app, path_info=("/cycles/" if under_cycles else "/") + tail)
    assert 200 <= r.status < 500


def raising(*_: Any) -> Any:
    raise RuntimeError("secret internals")


@pytest.mark.parametrize(
    "broken", ["state", "recent_cycles", "find_cycle", "render_trace", "reload"]
)
def test_a_raising_callback_is_a_short_500(broken: str, caplog: pytest.LogCaptureFixture) -> None:
    fake = Fake([make_cycle()])
    callbacks: dict[str, Any] = {
        "registry": fake.registry,
        "state": lambda: fake.state,
        "recent_cycles": lambda: fake.cycles,
        "find_cycle": fake.find,
        "render_trace": fake.trace,
        "reload": fake.reload,
    }
    callbacks[broken] = raising
    app = make_app(**callbacks)
    path, method = {
        "state": ("/-/ready", "GET"),
        "recent_cycles": ("/", "GET"),
        "find_cycle": ("/cycles/c1", "GET"),
        "render_trace": ("/cycles/c1", "GET"),
        "reload": ("/-/reload", "POST"),
    }[broken]
    with caplog.at_level(logging.ERROR, logger="pqd.web"):
        r = get(app, path, method=method)
    assert r.status == 500
    assert r.text == "Internal Server Error\n"
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert "secret internals" in caplog.text
    # The app keeps serving afterwards (/-/healthy asks the state callback too, since it
    # reports whether cycles progress).
    assert get(app, "/metrics").status == 200
