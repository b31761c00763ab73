"""The status pages (landing page, /probes/NAME, /config) driven with environ dicts: probe
status first, filters, pages, bad queries, names of any kind, no secret shown."""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib.parse import quote

import pytest

from pqd.results import CycleResult
from pqd.web.app import ProbeView, WebState
from pqd.web.markup import age
from tests.helpers.web import (
    Fake,
    cycle_links,
    get,
    hrefs,
    make_cycle,
    make_state,
    row_classes,
    rows,
    table,
    text_of,
)

# --- status first: the probes table ------------------------------------------------------------


def status_state() -> WebState:
    own = ("python", "CPython 3.11.7 (pqd's own)")
    every_15s = (("schedule", "every 15s"), ("containment", "subreaper"), ("workers", "4"), own)
    py39 = ("python", "CPython 3.9.18 (/usr/bin/python3.9)")
    return make_state(
        probes=(
            ProbeView("a", every_15s),
            ProbeView("b", every_15s),
            ProbeView("c", (("schedule", "every 1m"), ("containment", "subreaper"), py39)),
            ProbeView(
                "d", (("schedule", "cron */5 * * * * (UTC)"), ("containment", "cgroup"), own)
            ),
        )
    )


def status_cycles() -> list[CycleResult]:
    """a: two successes; b: two timeouts; c: nothing yet; d: a success, then a job_error."""

    def cycle(probe: str, n: int, started: float, took: float, **fields: Any) -> CycleResult:
        return make_cycle(
            probe=probe,
            cycle_id=f"{probe}{n}",
            started_at=1_700_000_000.0 + started,
            ended_at=1_700_000_000.0 + started + took,
            duration_seconds=took,
            **fields,
        )

    timeout = {
        "success": False,
        "reason": "timeout",
        "detail": "producer job of round 1 unfinished after 2.1s",
        "cause": "stopped",
        "cause_detail": "pool worker 1 pid 7 was stopped (state T)",
    }
    return [
        cycle("a", 1, 0, 1.25),
        cycle("b", 1, 20, 2.1, **timeout),
        cycle("a", 2, 10, 2.0),
        cycle("b", 2, 30, 2.1, **timeout),
        cycle("d", 1, 40, 1.0),
        cycle("d", 2, 50, 3.0, success=False, reason="job_error", detail="ValueError('<boom>')"),
    ]


def test_status_rows_put_failing_probes_first_with_a_text_label() -> None:
    r = get(Fake(status_cycles(), state=status_state()).app(), "/")
    assert r.status == 200
    assert row_classes(r.text, "status") == ["failing", "failing", "ok", "waiting"]
    assert rows(r.text, "status") == [
        [
            "b",
            "FAILING timeout: producer job of round 1 unfinished after 2.1s; cause stopped: pool "
            "worker 1 pid 7 was stopped (state T)",
            "never",
            "0 ok / 2 failed",
            "2.100 s",
            "2.100 s",
            "every 15s",
            "subreaper",
            "CPython 3.11.7 (pqd's own)",
        ],
        [
            "d",
            "FAILING job_error: ValueError('<boom>')",
            "59 s ago",  # NOW - d1's end
            "1 ok / 1 failed",
            "3.000 s",
            "2.000 s",
            "cron */5 * * * * (UTC)",
            "cgroup",
            "CPython 3.11.7 (pqd's own)",
        ],
        [
            "a",
            "ok (last cycle)",
            "1 min 28 s ago",
            "2 ok / 0 failed",
            "2.000 s",
            "1.625 s",
            "every 15s",
            "subreaper",
            "CPython 3.11.7 (pqd's own)",
        ],
        [
            "c",
            "waiting no cycle yet",
            "never",
            "0 ok / 0 failed",
            "",
            "",
            "every 1m",
            "subreaper",
            "CPython 3.9.18 (/usr/bin/python3.9)",
        ],
    ]
    # The status table comes first, and says how many fail before any table.
    assert r.text.index('<table class="status">') < r.text.index('<table class="cycles">')
    verdict = re.search(r'<p class="verdict failing">(.*?)</p>', r.text)
    assert verdict is not None and text_of(verdict.group(1)) == "FAILING: 2 of 4 probes"
    links = hrefs(table(r.text, "status"))
    assert links[:2] == ["/probes/b", "/cycles/b2"]  # the name, then the failed cycle


def test_each_status_cell_is_labelled_with_its_column_for_a_narrow_screen() -> None:
    """On a phone the rows stack and each cell shows its column's name (markup.CSS); the
    browser test checks the layout, this that every cell carries its own column's name."""
    page = get(Fake(status_cycles(), state=status_state()).app(), "/").text
    status = table(page, "status")
    header = re.findall(r"<th>(.*?)</th>", status)
    for row in re.findall(r'<tr class="[^"]*">(.*?)</tr>', status):
        assert re.findall(r'<td[^>]* data-label="([^"]*)"', row) == header, row
    assert "@media (max-width: 40em)" in page


def test_verdict_when_nothing_fails_and_when_cycles_stall() -> None:
    state = dataclasses.replace(status_state(), unhealthy_reason="no cycle dispatched for 60s")
    ok_only = [c for c in status_cycles() if c.success]
    r = get(Fake(ok_only, state=state).app(), "/")
    verdicts = [text_of(v) for v in re.findall(r'<p class="verdict[^"]*">(.*?)</p>', r.text)]
    assert verdicts == ["NOT HEALTHY: no cycle dispatched for 60s", "2 of 4 probes ok, 2 waiting"]
    assert "FAILING" not in r.text
    assert "failing" not in row_classes(r.text, "status")


@pytest.mark.parametrize(
    ("elapsed", "text"),
    [
        (0, "0 s ago"),
        (-5, "0 s ago"),  # a clock stepped back
        (59.9, "59 s ago"),
        (60, "1 min 0 s ago"),
        (3599, "59 min 59 s ago"),
        (3600 * 5 + 61, "5 h 1 min ago"),
        (86400 * 20788 + 3600 * 21, "20788 d 21 h ago"),
        (float("nan"), "unknown"),
    ],
)
def test_age_reads_in_two_units(elapsed: float, text: str) -> None:
    assert age(elapsed) == text


# --- recent cycles: filters and pages ---------------------------------------------------------


def filter_lines(page: str) -> list[str]:
    return [text_of(line) for line in re.findall(r'<p class="filters">(.*?)</p>', page)]


def test_filter_by_probe_and_by_result_with_plain_links() -> None:
    app = Fake(status_cycles(), state=status_state()).app()
    everything = get(app, "/")
    assert cycle_links(everything.text) == ["d2", "d1", "b2", "b1", "a2", "a1"]
    assert filter_lines(everything.text) == [
        "Probe: all · a · b · c · d",
        "Result: all · failed · succeeded",
    ]
    for url, expected in [
        ("/?probe=b", ["b2", "b1"]),
        ("/?result=failed", ["d2", "b2", "b1"]),
        ("/?result=succeeded", ["d1", "a2", "a1"]),
        ("/?probe=d&result=succeeded", ["d1"]),
        ("/?result=failed&probe=d", ["d2"]),
        ("/?probe=&result=", ["d2", "d1", "b2", "b1", "a2", "a1"]),  # empty: no filter
    ]:
        r = get(app, url)
        assert r.status == 200, url
        assert cycle_links(r.text) == expected, url
    # Each filter link keeps the other filter; the filter in force is text, not a link.
    r = get(app, "/?probe=d&result=failed")
    links = hrefs("".join(re.findall(r'<p class="filters">.*?</p>', r.text)))
    assert links == [
        "/?result=failed",
        "/?probe=a&result=failed",
        "/?probe=b&result=failed",
        "/?probe=c&result=failed",
        "/?probe=d",
        "/?probe=d&result=succeeded",
    ]
    assert re.findall(r'<strong aria-current="true">(.*?)</strong>', r.text) == ["d", "failed"]
    # Following a filter link lists what it says.
    assert cycle_links(get(app, "/?probe=b&result=failed").text) == ["b2", "b1"]


def test_a_filter_that_matches_nothing_says_so() -> None:
    r = get(Fake(status_cycles(), state=status_state()).app(), "/?probe=c")
    assert r.status == 200
    assert "No kept cycle matches these filters; see all cycles." in text_of(r.text)
    assert '<table class="cycles">' not in r.text
    assert "/" in hrefs(r.text[r.text.index("No kept cycle") :])


def test_the_jobs_column_says_how_many_completed_and_how_many_failed() -> None:
    cycles = [
        make_cycle(cycle_id="f", jobs_completed=1, jobs_failed=1, success=False, reason="timeout"),
        make_cycle(cycle_id="ok", started_at=1_700_000_010.0, jobs_completed=10, jobs_failed=0),
    ]
    listed = rows(get(Fake(cycles).app(), "/").text, "cycles")
    # "1 (1 failed)" read as one job in all: it is one completed and one more that failed.
    assert [row[4] for row in listed] == ["10 completed", "1 completed, 1 failed"]


def paging_cycles() -> list[CycleResult]:
    """51 successes of probe a (a0 oldest .. a50 newest) and 2 failures of probe b."""
    a = [make_cycle(probe="a", cycle_id=f"a{i}", started_at=1_700_000_000.0 + i) for i in range(51)]
    b = [
        make_cycle(
            probe="b",
            cycle_id=f"b{i}",
            started_at=1_699_999_000.0 + i,
            success=False,
            reason="leak",
        )
        for i in range(2)
    ]
    return a + b


def pager(page: str) -> str:
    pagers = re.findall(r'<p class="pager">(.*?)</p>', page)
    # Above the table, and below it too when there is another page to go to.
    assert pagers and all(p == pagers[0] for p in pagers)
    assert len(pagers) == (2 if "page 1 of 1" not in pagers[0] else 1), pagers
    return pagers[0]


def test_cycles_are_paged_50_a_page_and_page_links_keep_the_filters() -> None:
    state = make_state(probes=(ProbeView("a", ()), ProbeView("b", ())))
    app = Fake(paging_cycles(), state=state).app()

    first = get(app, "/?probe=a")
    assert cycle_links(first.text) == [f"a{i}" for i in range(50, 0, -1)]
    assert text_of(pager(first.text)) == "Cycles 1 to 50 of 51, page 1 of 2 · next page →"
    assert hrefs(pager(first.text)) == ["/?probe=a&page=2"]

    second = get(app, "/?probe=a&page=2")
    assert cycle_links(second.text) == ["a0"]
    assert text_of(pager(second.text)) == "Cycles 51 to 51 of 51, page 2 of 2 · ← previous page"
    assert hrefs(pager(second.text)) == ["/?probe=a"]
    # The filter links start again at page 1.
    assert all("page=" not in h for h in hrefs(" ".join(filter_lines(second.text))))

    both = get(app, "/?page=2&result=succeeded&probe=a")
    assert cycle_links(both.text) == ["a0"]
    assert hrefs(pager(both.text)) == ["/?probe=a&result=succeeded"]

    unfiltered = get(app, "/?page=2")
    assert cycle_links(unfiltered.text) == ["a0", "b1", "b0"]
    assert hrefs(pager(unfiltered.text)) == ["/"]

    only_b = get(app, "/?probe=b")
    assert text_of(pager(only_b.text)) == "Cycles 1 to 2 of 2, page 1 of 1"


def test_a_page_past_the_end_is_an_empty_list_that_says_so() -> None:
    state = make_state(probes=(ProbeView("a", ()), ProbeView("b", ())))
    r = get(Fake(paging_cycles(), state=state).app(), "/?probe=a&page=3")
    assert r.status == 200
    assert "There is no page 3: the matching cycles fill 2 pages. Go to the first page." in (
        text_of(r.text)
    )
    assert "/?probe=a" in hrefs(r.text)
    assert '<table class="cycles">' not in r.text


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("/?result=bogus", "result must be failed or succeeded, not 'bogus'"),
        ("/?result=FAILED", "result must be failed or succeeded, not 'FAILED'"),
        ("/?page=abc", "page must be a whole number from 1, not 'abc'"),
        ("/?page=0", "page must be a whole number from 1, not '0'"),
        ("/?page=-1", "page must be a whole number from 1, not '-1'"),
        ("/?page=1.5", "page must be a whole number from 1, not '1.5'"),
        ("/?page=%EF%BC%91", "page must be a whole number from 1, not '\uff11'"),
        ("/?page=1234567890", "page must be a whole number from 1, not '1234567890'"),
        ("/?probe=nope", "no probe is named 'nope'"),
        ("/?probe=%3Cb%3Ex", "no probe is named '<b>x'"),
        ("/?probe=a&probe=b", "probe is given more than once"),
        ("/?result=%FF", "the query string is not UTF-8 text"),
        ("/?probe=" + "x" * 5000, "the query string is longer than 4096 characters"),
        ("/probes/a?result=bogus", "result must be failed or succeeded, not 'bogus'"),
        ("/probes/a?page=x", "page must be a whole number from 1, not 'x'"),
    ],
)
def test_bad_query_values_are_a_one_line_400(url: str, message: str) -> None:
    state = make_state(probes=(ProbeView("a", ()), ProbeView("b", ())))
    r = get(Fake(paging_cycles(), state=state).app(), url)
    assert (r.status, r.text) == (400, f"Bad Request: {message}\n")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"


def test_other_query_parameters_are_ignored() -> None:
    r = get(Fake(status_cycles(), state=status_state()).app(), "/?utm_source=mail&x&probe=a")
    assert r.status == 200
    assert cycle_links(r.text) == ["a2", "a1"]


# --- /probes/NAME --------------------------------------------------------------------------------

# Names a probe may have: spaces, "+", HTML, a "/", "?", "#", "%", any printable Unicode.
ODD_NAMES = ("a b", "c++", "x+y z", "<b>x</b>", "ü/é?#%", "put in q\uff1aA")


def odd_names_fake() -> Fake:
    state = make_state(probes=tuple(ProbeView(n, (("workers", "2"),)) for n in ODD_NAMES))
    cycles = [make_cycle(probe=n, cycle_id=f"id{i}") for i, n in enumerate(ODD_NAMES)]
    return Fake(cycles, state=state)


def probe_heading(page: str) -> str:
    found = re.search(r"<h2>(.*?)</h2>", page)
    assert found is not None
    return text_of(found.group(1))


def test_probe_links_round_trip_any_name() -> None:
    fake = odd_names_fake()
    landing = get(fake.app(), "/")
    links = [h for h in hrefs(table(landing.text, "status")) if h.startswith("/probes/")]
    assert links == ["/probes/" + quote(n, safe="") for n in ODD_NAMES]
    for name, link in zip(ODD_NAMES, links, strict=True):
        r = get(fake.app(), link)
        assert r.status == 200, name
        assert probe_heading(r.text) == f"Probe {name}"
        assert cycle_links(r.text) == [f"id{ODD_NAMES.index(name)}"]
    assert "<b>x</b>" not in landing.text
    assert "&lt;b&gt;x&lt;/b&gt;" in landing.text


def test_probe_filter_links_round_trip_any_name() -> None:
    fake = odd_names_fake()
    landing = get(fake.app(), "/")
    filters = re.findall(r'<p class="filters">(.*?)</p>', landing.text)[0]
    for i, name in enumerate(ODD_NAMES):
        link = f"/?probe={quote(name, safe='')}"
        assert link in hrefs(filters)
        assert cycle_links(get(fake.app(), link).text) == [f"id{i}"]


def go_urlquery(name: str) -> str:
    """Go's url.QueryEscape, as `urlquery` in a Prometheus alert template: " " as "+"."""
    from urllib.parse import quote_plus

    return quote_plus(name, safe="")


@pytest.mark.parametrize("name", ODD_NAMES)
def test_probe_links_built_by_alert_templates_reach_the_probe(name: str) -> None:
    r = get(odd_names_fake().app(), "/probes/" + go_urlquery(name))
    assert r.status == 200
    assert probe_heading(r.text) == f"Probe {name}"


def test_a_plus_matches_a_space_only_when_no_name_matches_exactly() -> None:
    state = make_state(probes=(ProbeView("a b", ()), ProbeView("a+b", ())))
    app = Fake(state=state).app()
    assert probe_heading(get(app, "/probes/a%20b").text) == "Probe a b"
    assert probe_heading(get(app, "/probes/a%2Bb").text) == "Probe a+b"
    # The server decodes %2B before the app sees the path: a "+" then means the probe named so.
    assert probe_heading(get(app, "/probes/a+b").text) == "Probe a+b"


def test_probe_page_shows_its_status_settings_and_only_its_cycles() -> None:
    app = Fake(status_cycles(), state=status_state()).app()
    r = get(app, "/probes/d")
    assert r.status == 200
    assert [row[:2] for row in rows(r.text, "status")] == [
        ["d", "FAILING job_error: ValueError('<boom>')"]
    ]
    assert cycle_links(r.text) == ["d2", "d1"]
    assert filter_lines(r.text) == ["Result: all · failed · succeeded"]  # no probe filter here
    assert cycle_links(get(app, "/probes/d?result=failed").text) == ["d2"]
    assert cycle_links(get(app, "/probes/d?probe=a").text) == ["d2", "d1"]  # the path decides
    assert "/probes/d?result=succeeded" in hrefs(r.text)


def test_probe_page_is_paged() -> None:
    state = make_state(probes=(ProbeView("a", ()), ProbeView("b", ())))
    app = Fake(paging_cycles(), state=state).app()
    first = get(app, "/probes/a")
    assert hrefs(pager(first.text)) == ["/probes/a?page=2"]
    second = get(app, "/probes/a?page=2")
    assert cycle_links(second.text) == ["a0"]
    assert hrefs(pager(second.text)) == ["/probes/a"]


def test_unknown_probe_is_a_404_with_a_plain_message() -> None:
    r = get(odd_names_fake().app(), "/probes/%3Cb%3Enope")
    assert r.status == 404
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    main = r.text[r.text.index("<main>") : r.text.index("</main>")]
    assert text_of(main).strip() == (
        "No probe named <b>nope is configured. See the probes and the configuration."
    )
    assert "<b>nope" not in r.text


# --- /config -------------------------------------------------------------------------------------


def test_config_page_shows_settings_but_never_a_secret() -> None:
    state = make_state(
        global_settings=(
            ("listen_address", ":10029"),
            ("web_config_file", "/etc/pqd/web.yml"),
            ("basic_auth_password", "hunter2"),
            ("api_token", "tok-123"),
        ),
        probes=(ProbeView("<b>p</b>", (("workers", "4"), ("client_secret", "s3cr3t"))),),
    )
    app = Fake(state=state).app()
    r = get(app, "/config")
    assert r.status == 200
    pairs = [
        (text_of(k), text_of(v))
        for k, v in re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", r.text)
    ]
    hidden = "(not shown: may be a secret)"
    assert pairs == [
        ("listen_address", ":10029"),
        ("web_config_file", "/etc/pqd/web.yml"),  # a path, not a secret
        ("basic_auth_password", hidden),
        ("api_token", hidden),
        ("workers", "4"),
        ("client_secret", hidden),
    ]
    for page in (r.text, get(app, "/probes/%3Cb%3Ep%3C%2Fb%3E").text):
        assert "hunter2" not in page and "tok-123" not in page and "s3cr3t" not in page
    assert "/probes/%3Cb%3Ep%3C%2Fb%3E" in hrefs(r.text)
    assert "<b>p</b>" not in r.text
