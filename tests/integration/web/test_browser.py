"""The pages in a real browser (Debian's headless Chromium): rendered, escaped, laid out."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import html
import json
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.helpers.pqd_process import PqdProcess, running_pqd, sample
from tests.helpers.waiting import wait_until

HOSTILE = "<script>alert(1)</script>"
CONFIG = f"""
[probes.'{HOSTILE}']
interval = "1s"
workers = 2
"""


def chromium(tmp_path: Path, *args: str) -> str:
    binary = shutil.which("chromium")
    assert binary, "chromium is installed by `make test` (Debian package chromium)"
    done = subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_landing_and_trace_pages_render_and_escape(tmp_path: Path) -> None:
    with running_pqd(tmp_path, CONFIG) as pqd:
        pqd.scrape_until(
            lambda t: (sample(t, "pqd_cycles_total", probe=HOSTILE) or 0) >= 2, "two cycles"
        )
        landing = chromium(tmp_path, "--dump-dom", pqd.url("/"))
        links = re.findall(r'href="(/cycles/[^"]+)"', landing)
        assert links, landing
        trace = chromium(tmp_path, "--dump-dom", pqd.url(html.unescape(links[0])))
        chromium(
            tmp_path,
            f"--screenshot={tmp_path / 'landing.png'}",
            "--window-size=1280,900",
            pqd.url("/"),
        )

    # The hostile probe name is text in the rendered DOM, never an element.
    assert html.escape(HOSTILE, quote=False) in landing
    assert HOSTILE not in landing
    assert "<script" not in landing.lower()
    assert len(links) >= 2  # the recent cycles, each linking to its trace
    assert "Recent cycles" in landing
    assert "count(10)" in trace
    assert "Full q !!!" in trace
    assert "<script" not in trace.lower()
    assert (tmp_path / "landing.png").stat().st_size > 10_000


# --- status first, in a browser driven over the DevTools protocol -----------------------------

FAILING = "slow probe+1"
HTML_NAME = "<b>x</b>"
# Two healthy probes and one that always times out: its two jobs sleep 400 ms each, one after the
# other, and its timeout is 801 ms, the least the config accepts, with the runner and pool still
# to start. 200 cycles of each outcome are kept, so the successes fill more than one page.
STATUS_CONFIG = f"""
history_limit = 200

[probes.alpha]
interval = "250ms"
workers = 2

[probes."{HTML_NAME}"]
interval = "250ms"
workers = 2

[probes."{FAILING}"]
interval = "1s"
workers = 2
rounds = 1
job_pause = "400ms"
timeout = "801ms"
"""
SCREENS = Path("/tmp/pqd-screens")
DESKTOP = (1280, 900)
PHONE = (390, 844)


class DevToolsError(AssertionError):
    pass


class Browser:
    """Headless Chromium with --remote-debugging-pipe: it reads NUL-terminated JSON commands on
    its fd 3 and writes NUL-terminated replies and events on its fd 4."""

    def __init__(self, tmp_path: Path) -> None:
        binary = shutil.which("chromium")
        assert binary, "chromium is installed by `make test` (Debian package chromium)"
        commands_read, self._commands = os.pipe()
        self._replies, replies_write = os.pipe()

        def onto_fds_3_and_4() -> None:
            # Both ends go above 10 first, so that neither dup2 closes the other one.
            into = fcntl.fcntl(commands_read, fcntl.F_DUPFD, 10)
            out = fcntl.fcntl(replies_write, fcntl.F_DUPFD, 10)
            os.dup2(into, 3)
            os.dup2(out, 4)

        self._log = (tmp_path / "chromium.log").open("w")
        self.proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
                f"--user-data-dir={tmp_path / 'chromium-devtools-profile'}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            close_fds=False,  # fds 3 and 4 must survive; Python's own fds are not inheritable
            preexec_fn=onto_fds_3_and_4,
        )
        os.close(commands_read)
        os.close(replies_write)
        self._buffer = b""
        self._next_id = 0

    def send(self, method: str, session: str | None = None, **params: object) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, object] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._commands, data) :]
        return self._reply(self._next_id, method)

    def _reply(self, wanted: int, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while True:
            while b"\0" in self._buffer:
                raw, _, self._buffer = self._buffer.partition(b"\0")
                message = json.loads(raw)
                if message.get("id") == wanted:  # anything else is an event: not needed
                    if "error" in message:
                        raise DevToolsError(f"{method}: {message['error']}")
                    return dict(message["result"])
            left = deadline - time.monotonic()
            assert left > 0, f"no reply to {method} within 20 s"
            if select.select([self._replies], [], [], left)[0]:
                chunk = os.read(self._replies, 1 << 20)
                assert chunk, f"chromium closed its pipe:\n{self.proc.poll()}"
                self._buffer += chunk

    def tab(self, width: int, height: int) -> Tab:
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.send(
            "Emulation.setDeviceMetricsOverride",
            session,
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=width < 600,
        )
        return Tab(self, session)

    def close(self) -> None:
        with contextlib.suppress(OSError, AssertionError, DevToolsError):
            self.send("Browser.close")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self._commands)
        os.close(self._replies)
        self._log.close()


class Tab:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session

    def evaluate(self, expression: str) -> Any:
        # Runs in the DevTools context: the page's CSP, which forbids scripts, does not apply.
        reply = self.browser.send(
            "Runtime.evaluate", self.session, expression=expression, returnByValue=True
        )
        if "exceptionDetails" in reply:
            raise DevToolsError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def _new_document(self, start: Callable[[], object]) -> None:
        """Run ``start`` and wait until another document has loaded (the mark set on the old
        document's window is gone)."""
        self.evaluate("window.pqdOldDocument = true")
        start()
        wait_until(self._next_document_loaded, "the next page to load")

    def _next_document_loaded(self) -> bool:
        try:
            return bool(
                self.evaluate(
                    "window.pqdOldDocument === undefined && document.readyState === 'complete'"
                )
            )
        except DevToolsError as err:
            # The evaluation raced the navigation (its context went away): ask again.
            if "navigated or closed" in str(err) or "Cannot find context" in str(err):
                return False
            raise

    def open(self, url: str) -> None:
        self._new_document(lambda: self.browser.send("Page.navigate", self.session, url=url))

    def follow(self, selector: str) -> None:
        """Click the link ``selector`` picks, as a user would."""
        self._new_document(lambda: self.evaluate(f"document.querySelector({selector!r}).click()"))

    def screenshot(self, path: Path, *, full_page: bool = False) -> None:
        params: dict[str, object] = {"format": "png"}
        if full_page:
            size = self.browser.send("Page.getLayoutMetrics", self.session)["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            params |= {"clip": clip, "captureBeyondViewport": True}
        data = self.browser.send("Page.captureScreenshot", self.session, **params)["data"]
        path.write_bytes(base64.b64decode(data))
        SCREENS.mkdir(exist_ok=True)
        shutil.copy(path, SCREENS / path.name)

    def font_families(self, selector: str) -> set[str]:
        """The fonts Chromium drew the text of ``selector`` with, as the platform names them."""
        self.browser.send("DOM.enable", self.session)
        self.browser.send("CSS.enable", self.session)
        root = self.browser.send("DOM.getDocument", self.session, depth=0)["root"]["nodeId"]
        node = self.browser.send("DOM.querySelector", self.session, nodeId=root, selector=selector)[
            "nodeId"
        ]
        fonts = self.browser.send("CSS.getPlatformFontsForNode", self.session, nodeId=node)
        return {font["familyName"] for font in fonts["fonts"]}


@contextlib.contextmanager
def browser(tmp_path: Path) -> Iterator[Browser]:
    chromium_browser = Browser(tmp_path)
    try:
        yield chromium_browser
    finally:
        chromium_browser.close()


# What the pages' tables say, read in the browser: one list of cell texts per row.
ROWS_JS = """[...document.querySelectorAll('table.%s tr')].slice(1)
    .map(tr => [...tr.querySelectorAll('td')].map(td => td.textContent))"""
# Fails when the page itself is wider than the window: only table boxes may scroll sideways.
FITS_JS = "document.documentElement.scrollWidth <= window.innerWidth"


def red_enough(css_colour: str) -> bool:
    red, green, blue = (int(v) for v in re.findall(r"\d+", css_colour)[:3])
    return red >= 200 and red - green >= 50 and red - blue >= 50


def failing_row(tab: Tab) -> dict[str, Any]:
    row: dict[str, Any] = tab.evaluate(
        """(() => { const row = document.querySelector('table.status tr.failing');
        const box = row.getBoundingClientRect();
        return {top: box.top, bottom: box.bottom, text: row.textContent,
                background: getComputedStyle(row).backgroundColor,
                first: row === document.querySelector('table.status tr:nth-child(2)')}; })()"""
    )
    return row


def fonts_with_fullwidth_colon() -> set[str]:
    listed = subprocess.run(
        ["fc-list", ":charset=ff1a", "family"], capture_output=True, text=True, check=True
    ).stdout
    return {family for line in listed.splitlines() for family in line.split(",")}


def test_status_first_filters_pages_and_phone_width(tmp_path: Path) -> None:
    with running_pqd(tmp_path, STATUS_CONFIG) as pqd, browser(tmp_path) as chromium_browser:
        pqd.scrape_until(
            lambda t: (
                (sample(t, "pqd_cycle_failures_total", probe=FAILING, reason="timeout") or 0) >= 1
                and sum(sample(t, "pqd_cycles_total", probe=p) or 0 for p in ("alpha", HTML_NAME))
                >= 60
            ),
            "a timeout of the failing probe and 60 cycles of the healthy ones",
            seconds=45,
        )
        desktop = chromium_browser.tab(*DESKTOP)
        check_status_first(desktop, pqd.url("/"), tmp_path)
        check_filter_and_pages(desktop, pqd.url("/"))
        check_probe_and_cycle_pages(desktop, pqd.url("/probes/slow+probe%2B1"), tmp_path)
        check_phone_width(chromium_browser.tab(*PHONE), pqd.url("/"), tmp_path)
        check_config_page(desktop, pqd.url("/config"), tmp_path)


def check_status_first(tab: Tab, url: str, tmp_path: Path) -> None:
    tab.open(url)
    tab.screenshot(tmp_path / "landing-1280.png")
    tab.screenshot(tmp_path / "landing-1280-full.png", full_page=True)
    row = failing_row(tab)
    assert row["first"], row  # listed last in the config, shown first
    assert row["bottom"] <= 600, row
    assert red_enough(row["background"]), row
    assert "FAILING" in row["text"] and FAILING in row["text"], row
    statuses = tab.evaluate(ROWS_JS % "status")
    assert [r[0] for r in statuses] == [FAILING, "alpha", HTML_NAME], statuses
    assert [r[1].split()[0] for r in statuses] == ["FAILING", "ok", "ok"], statuses
    # The probe named with HTML is text: no <b> element anywhere.
    assert tab.evaluate("document.querySelectorAll('main b').length") == 0
    assert tab.evaluate(FITS_JS)


def check_filter_and_pages(tab: Tab, url: str) -> None:
    tab.open(url)
    tab.follow(f"p.filters a[href='/?probe={quote(FAILING, safe='')}']")
    cycles = tab.evaluate(ROWS_JS % "cycles")
    assert cycles, "no cycle of the failing probe listed"
    # Only the failing probe's, every one failed, timeouts among them. Under load a fresh runner
    # can also miss its start-up deadline (spawn_failed): the filter is the point here.
    assert {c[1] for c in cycles} == {FAILING}, cycles
    assert all(c[2].startswith("failed: ") for c in cycles), cycles
    assert "failed: timeout" in {c[2] for c in cycles}, cycles

    tab.open(url)
    tab.follow("p.filters a[href='/?result=succeeded']")
    first_page = tab.evaluate(ROWS_JS % "cycles")
    assert len(first_page) == 50, first_page
    tab.follow("p.pager a[rel=next]")
    assert tab.evaluate("location.search") == "?result=succeeded&page=2"
    second_page = tab.evaluate(ROWS_JS % "cycles")
    assert second_page, "page 2 is empty"
    assert {c[2] for c in first_page + second_page} == {"ok"}
    assert {c[1] for c in first_page + second_page} == {"alpha", HTML_NAME}
    # Newest first across pages: a cycle on page 2 is older than page 1's, or was on page 1
    # and has been pushed down by the cycles that ended since.
    oldest_on_first = min(c[0] for c in first_page)
    assert all(c in first_page or c[0] <= oldest_on_first for c in second_page), second_page
    tab.follow("p.pager a[rel=prev]")
    assert tab.evaluate("location.search") == "?result=succeeded"


def check_probe_and_cycle_pages(tab: Tab, go_style_url: str, tmp_path: Path) -> None:
    # As an alert template's urlquery writes the name: "+" for the space, %2B for the plus.
    tab.open(go_style_url)
    assert tab.evaluate("document.querySelector('h2').textContent") == f"Probe {FAILING}"
    results = {c[2] for c in tab.evaluate(ROWS_JS % "cycles")}
    assert "failed: timeout" in results and all(r.startswith("failed: ") for r in results), results
    tab.screenshot(tmp_path / "probe-1280.png", full_page=True)
    tab.follow("table.cycles td a[href^='/cycles/']")
    headings = tab.evaluate("[...document.querySelectorAll('h3')].map(h => h.textContent)")
    assert "Where it was stuck" in headings, headings
    tab.screenshot(tmp_path / "cycle-failed-1280.png", full_page=True)

    tab.open(go_style_url.replace("/probes/slow+probe%2B1", "/probes/alpha"))
    tab.follow("table.cycles td a[href^='/cycles/']")
    assert "put in q\uff1aA" in tab.evaluate("document.querySelector('pre.trace').textContent")
    wide = fonts_with_fullwidth_colon()
    assert wide, "no font has U+FF1A: install the fonts in the Makefile's APT_PACKAGES"
    used = tab.font_families("pre.trace")
    assert used & wide, (used, wide)
    tab.evaluate("document.querySelector('pre.trace').scrollIntoView()")
    tab.screenshot(tmp_path / "trace-1280.png")


def check_phone_width(tab: Tab, url: str, tmp_path: Path) -> None:
    tab.open(url)
    tab.screenshot(tmp_path / "landing-390.png")
    tab.screenshot(tmp_path / "landing-390-full.png", full_page=True)
    assert tab.evaluate("window.innerWidth") == PHONE[0]
    assert tab.evaluate(FITS_JS), tab.evaluate("document.documentElement.scrollWidth")
    row = failing_row(tab)
    assert row["first"] and row["top"] < PHONE[1], row
    tab.follow("table.status tr.failing td.detail a")
    assert tab.evaluate("location.pathname").startswith("/cycles/")
    assert tab.evaluate(FITS_JS), tab.evaluate("document.documentElement.scrollWidth")
    tab.screenshot(tmp_path / "cycle-390-full.png", full_page=True)


def check_config_page(tab: Tab, url: str, tmp_path: Path) -> None:
    tab.open(url)
    tab.screenshot(tmp_path / "config-1280.png", full_page=True)
    rows = tab.evaluate(
        "[...document.querySelectorAll('tr')].map(tr => [...tr.cells].map(c => c.textContent))"
    )
    assert ["history_limit", "200"] in rows, rows  # from the file
    assert ["listen_address", "127.0.0.1:0"] in rows, rows  # from the flag
    assert ["timeout", "801ms"] in rows, rows  # the failing probe's
    names = tab.evaluate("[...document.querySelectorAll('h4')].map(h => h.textContent)")
    assert names == ["alpha", HTML_NAME, FAILING], names


# --- a failed cycle's page reads from the top; the status table fits a phone ------------------

# One healthy probe and one that always times out (as STATUS_CONFIG's failing probe does).
READING_CONFIG = """
[probes.fine]
interval = "500ms"
workers = 2

[probes.slow]
interval = "1s"
workers = 2
rounds = 1
job_pause = "400ms"
timeout = "801ms"
"""

# Where the rows headed "result" and "cause", the stuck section's heading and the first table
# of the page lie, and the fold (the window's height) with nothing scrolled.
FOLD_JS = """(() => {
    const box = el => { if (!el) return null; const b = el.getBoundingClientRect();
                        return {top: b.top, bottom: b.bottom}; };
    const row = name => [...document.querySelectorAll('main th')]
        .find(th => th.textContent === name)?.closest('tr');
    return {result: box(row('result')), cause: box(row('cause')),
            stuck: box(document.querySelector('h3#stuck')),
            reason: row('result')?.textContent, cause_text: row('cause')?.textContent,
            first_row: document.querySelector('main table th')?.textContent,
            headings: [...document.querySelectorAll('main h3')].map(h => h.textContent),
            fold: window.innerHeight, scrolled: window.scrollY}; })()"""


def wait_for_a_timeout_and_a_success(pqd: PqdProcess) -> None:
    pqd.scrape_until(
        lambda t: (
            (sample(t, "pqd_cycle_failures_total", probe="slow", reason="timeout") or 0) >= 1
            and (sample(t, "pqd_cycles_total", probe="fine") or 0) >= 1
        ),
        "a timeout of the slow probe and a cycle of the fine one",
        seconds=45,
    )


TIMEOUT_LINK_JS = """[...document.querySelectorAll('table.cycles tr')]
    .find(tr => tr.cells[2].textContent === 'failed: timeout')
    .querySelector('a').getAttribute('href')"""


def test_a_failed_cycle_page_shows_reason_cause_and_where_it_was_stuck_above_the_fold(
    tmp_path: Path,
) -> None:
    with running_pqd(tmp_path, READING_CONFIG) as pqd, browser(tmp_path) as chromium_browser:
        wait_for_a_timeout_and_a_success(pqd)
        tab = chromium_browser.tab(*DESKTOP)
        tab.open(pqd.url("/probes/slow"))
        # A timeout's page, the one with stacks: on a loaded machine a fresh runner can also
        # miss its start-up deadline (spawn_failed), and the newest cycle may be that one.
        tab.open(pqd.url(tab.evaluate(TIMEOUT_LINK_JS)))
        tab.screenshot(tmp_path / "cycle-failed-fold-1280.png")
        failed = tab.evaluate(FOLD_JS)
        tab.open(pqd.url("/probes/fine"))
        tab.follow("table.cycles td a[href^='/cycles/']")
        succeeded = tab.evaluate(FOLD_JS)

    assert failed["fold"] == DESKTOP[1] and failed["scrolled"] == 0, failed
    assert failed["reason"] == "resultfailed: timeout", failed
    assert failed["cause_text"].startswith("cause"), failed
    for part in ("result", "cause", "stuck"):
        assert failed[part] is not None and failed[part]["bottom"] <= failed["fold"], (part, failed)
    assert failed["result"]["top"] < failed["cause"]["top"] < failed["stuck"]["top"], failed
    # A successful cycle's page keeps its order: the summary first, then phases, jobs, trace.
    assert succeeded["first_row"] == "cycle id", succeeded
    assert succeeded["stuck"] is None and succeeded["cause"] is None, succeeded
    assert [h for h in succeeded["headings"] if h != "Stderr of the tree"] == [
        "Phases",
        "Jobs",
        "Trace",
    ], succeeded


# Each status row's cells for its probe, reason, last success and schedule: their boxes, the
# box they scroll in, and the page's own width.
STATUS_CELLS_JS = """[...document.querySelectorAll('table.status tr')].slice(1).map(tr => {
    const scroller = tr.closest('.scroll').getBoundingClientRect();
    return {scroller: {left: scroller.left, right: scroller.right},
            cells: [0, 1, 2, 6].map(i => { const td = tr.querySelectorAll('td')[i];
                const b = td.getBoundingClientRect();
                return {text: td.textContent, left: b.left, right: b.right, width: b.width,
                        height: b.height}; })}; })"""


def test_each_probe_s_status_reads_on_a_phone_without_scrolling_sideways(tmp_path: Path) -> None:
    with running_pqd(tmp_path, READING_CONFIG) as pqd, browser(tmp_path) as chromium_browser:
        wait_for_a_timeout_and_a_success(pqd)
        phone = chromium_browser.tab(*PHONE)
        phone.open(pqd.url("/"))
        phone.screenshot(tmp_path / "status-390.png")
        rows = phone.evaluate(STATUS_CELLS_JS)
        width = phone.evaluate("window.innerWidth")
        fits = phone.evaluate(FITS_JS)
        desktop = chromium_browser.tab(*DESKTOP)
        desktop.open(pqd.url("/"))
        wide = desktop.evaluate(ROWS_JS % "status")

    assert width == PHONE[0]
    assert fits, "the page is wider than the phone"
    assert [r["cells"][0]["text"] for r in rows] == ["slow", "fine"], rows
    slow_status = rows[0]["cells"][1]["text"]
    assert slow_status.startswith("FAILING") and "cause" in slow_status, rows[0]
    for row in rows:
        for cell in row["cells"]:
            assert cell["width"] > 0 and cell["height"] > 0, (cell, row)
            assert cell["left"] >= 0 and cell["right"] <= width, (cell, width)
            assert row["scroller"]["left"] <= cell["left"], (cell, row["scroller"])
            assert cell["right"] <= row["scroller"]["right"], (cell, row["scroller"])
    # The desktop keeps one row a probe, a cell a column.
    assert [len(r) for r in wide] == [9, 9], wide
