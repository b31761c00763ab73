"""The WSGI app driven directly with environ dicts: no server, no sockets, no threads."""

from __future__ import annotations

import gzip
import logging
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import Gauge
from prometheus_client.registry import Collector

from pqd.web.app import ProbeView, make_app
from tests.helpers.web import (
    XSS,
    XSS_ESCAPED,
    XSS_ID,
    Fake,
    call,
    cycle_links,
    get,
    hrefs,
    make_cycle,
    make_job,
    make_state,
    table,
)

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
    assert cycle_links(r.text) == ["newest", "middle", "oldest"]
    assert {"/metrics", "/-/healthy", "/-/ready", "/config"} <= set(hrefs(r.text))
    assert "<title>pqd</title>" in r.text
    assert "1.2.3" in r.text and "3.11.9" in r.text
    assert "2023-11-14T22:16:40.000Z" in r.text  # oldest's start, in UTC
    assert "failed: timeout" in r.text
    assert "7 completed, 1 failed" in r.text
    assert ">-1<" in r.text  # pid delta 299 - 300
    assert ">+2<" in r.text  # the successful cycles' pid delta 302 - 300
    assert "1.250 s" in r.text


def test_probe_settings_are_on_the_probe_page_not_the_landing_page() -> None:
    state = make_state(
        probes=(
            ProbeView("default", (("start_method", "forkserver"), ("workers", "4"))),
            ProbeView("spawny", (("start_method", "spawn"), ("schedule", "*/5 * * * *"))),
        )
    )
    app = Fake(state=state).app()
    assert ">workers<" not in get(app, "/").text
    r = get(app, "/probes/spawny")
    assert r.status == 200
    settings = r.text[r.text.index("<h3>Settings</h3>") : r.text.index('<h3 id="cycles">')]
    assert re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", settings) == [
        ("start_method", "spawn"),
        ("schedule", "*/5 * * * *"),
    ]


def test_landing_page_without_cycles_or_probes() -> None:
    r = get(Fake(state=make_state(probes=())).app(), "/")
    assert r.status == 200
    assert "No cycle has completed yet." in r.text
    assert "No probes are configured." in r.text


def test_html_pages_carry_type_nosniff_and_csp() -> None:
    fake = Fake([make_cycle()])
    for path in ("/", "/cycles/c1", "/cycles/unknown", "/probes/default", "/probes/x", "/config"):
        r = get(fake.app(), path)
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"] == (
            "default-src 'none'; style-src 'unsafe-inline'"
        )
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
    link = next(h for h in hrefs(table(get(fake.app(), "/").text, "cycles")) if "/cycles/" in h)
    # A "/" in an id is percent-encoded too, but a server decodes %2F before PATH_INFO, so such an
    # id cannot round-trip; the daemon's ids never contain one. Everything else must.
    assert link == "/cycles/probe%20%C3%A9%2F20%2030%3F%23%25"
    cycle = make_cycle(cycle_id="probe é 20 30?#%")
    fake = Fake([cycle])
    link = next(h for h in hrefs(table(get(fake.app(), "/").text, "cycles")) if "/cycles/" in h)
    r = get(fake.app(), link)
    assert r.status == 200
    assert fake.looked_up == ["probe é 20 30?#%"]


def test_links_respect_script_name() -> None:
    fake = Fake([make_cycle()])
    r = call(fake.app(), path_info="/", script_name="/pqd")
    assert r.status == 200
    assert {
        "/pqd/",
        "/pqd/metrics",
        "/pqd/config",
        "/pqd/-/healthy",
        "/pqd/cycles/c1",
        "/pqd/probes/default",
        "/pqd/?result=failed",
    } <= set(hrefs(r.text))
    r = call(fake.app(), path_info="/probes/default", script_name="/pqd")
    assert {"/pqd/probes/default?result=failed", "/pqd/cycles/c1"} <= set(hrefs(r.text))


def test_head_is_answered_like_get() -> None:
    """The server drops the body and sets Content-Length (tests/unit/http/test_parse.py)."""
    app = Fake([make_cycle()]).app()
    for path in (
        "/",
        "/cycles/c1",
        "/probes/default",
        "/config",
        "/-/healthy",
        "/-/ready",
        "/metrics",
    ):
        full = get(app, path)
        head = get(app, path, method="HEAD")
        assert head.status == full.status == 200
        assert head.headers == full.headers
        assert head.body == full.body


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
    assert (r.status, r.text) == (422, "probes.default.workers: must be >= 1, got 0\n")
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
        ("POST", "/config", "GET, HEAD"),
        ("DELETE", "/probes/default", "GET, HEAD"),
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
        ("/probes/", 404),
        ("/probes", 404),
        ("/probes/nope", 404),
        ("/probes/" + "a" * 100_000, 404),
        ("/probes/\xff", 400),
        ("/config/", 404),
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
@given(
    st.text(alphabet=st.characters(max_codepoint=0x2FF), max_size=40),
    st.sampled_from(["/", "/cycles/", "/probes/"]),
)
def test_any_path_gets_an_answer_below_500(tail: str, prefix: str) -> None:
    app = Fake().app()
    r = call(app, path_info=prefix + tail)
    assert 200 <= r.status < 500


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=60),
    st.sampled_from(["/", "/probes/default"]),
)
def test_any_query_gets_a_page_or_a_400(query: str, path: str) -> None:
    app = Fake([make_cycle()]).app()
    r = call(app, path_info=path, query=query)
    assert r.status in (200, 400)
    if r.status == 400:
        assert r.text.startswith("Bad Request: ") and r.text.count("\n") == 1


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
