"""Exemplars end to end: a real `pqd run` scraped by a real Prometheus (Debian's) started with
exemplar storage. Every cycle's duration observation carries its cycle id as an OpenMetrics
exemplar; Prometheus stores it, /api/v1/query_exemplars returns it, and /cycles/ID on that pqd
serves the cycle, also through the link Grafana's provisioned data source builds from it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.helpers.configs import quick_probe
from tests.helpers.dashboards import interpolate
from tests.helpers.pqd_process import PqdProcess, running_pqd
from tests.helpers.prometheus_process import ROOT, Prometheus, running_prometheus
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

PROBE = "ex"
PQD_CONFIG = 'log_format = "logfmt"\n\n' + quick_probe(PROBE)
OPENMETRICS = "application/openmetrics-text; version=1.0.0"
DATASOURCE_FILE = ROOT / "grafana/provisioning/datasources/prometheus.yaml"
DASHBOARD_DIR = ROOT / "grafana/dashboards"
#: Distinct cycle ids Prometheus must have stored before the tests judge them.
MIN_IDS = 3
DATA_SECONDS = 90.0


@pytest.fixture(scope="module")
def pqd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PqdProcess]:
    with running_pqd(tmp_path_factory.mktemp("pqd"), PQD_CONFIG) as pqd:
        yield pqd


@pytest.fixture(scope="module")
def prometheus(pqd: PqdProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with running_prometheus(
        tmp_path_factory.mktemp("prometheus"),
        f"127.0.0.1:{pqd.port}",
        features=("exemplar-storage",),
    ) as prometheus:
        yield prometheus


def query_exemplars(prometheus: Prometheus, expr: str) -> list[dict[str, Any]]:
    now = time.time()
    answer = prometheus.api("query_exemplars", query=expr, start=str(now - 3600), end=str(now + 60))
    assert answer["status"] == "success", answer
    return answer["data"]  # type: ignore[no-any-return]


def cycle_ids(series: list[dict[str, Any]]) -> set[str]:
    return {e["labels"]["cycle_id"] for s in series for e in s["exemplars"]}


@pytest.fixture(scope="module")
def stored(pqd: PqdProcess, prometheus: Prometheus) -> list[dict[str, Any]]:
    """The exemplars of pqd_cycle_duration_seconds once Prometheus holds MIN_IDS cycle ids."""
    expr = f'pqd_cycle_duration_seconds_bucket{{job="pqd", probe="{PROBE}"}}'

    def enough() -> list[dict[str, Any]] | None:
        series = query_exemplars(prometheus, expr)
        return series if len(cycle_ids(series)) >= MIN_IDS else None

    try:
        return wait_until(enough, f"{MIN_IDS} cycle ids in Prometheus' exemplars", DATA_SECONDS)
    except AssertionError as exc:
        targets = json.dumps(prometheus.api("targets"))[:2000]
        raise AssertionError(f"{exc}\ntargets: {targets}\n--- pqd log\n{pqd.log_text()}") from None


def get(url: str, accept: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_exemplars_are_in_openmetrics_only_and_the_text_format_stays_clean(
    pqd: PqdProcess,
) -> None:
    exemplar = re.compile(
        rf'^pqd_cycle_duration_seconds_bucket\{{le="[^"]+",probe="{PROBE}"\}} \S+ '
        r'# \{cycle_id="([0-9a-f]{12})"\} \S+ \S+$',
        re.MULTILINE,
    )

    def exemplar_scrape() -> str | None:
        status, body = get(pqd.url("/metrics"), OPENMETRICS)
        assert status == 200, (status, body[:500])
        return body if exemplar.search(body) else None

    openmetrics = wait_until(exemplar_scrape, "an exemplar in the OpenMetrics exposition", 60)
    (cycle_id, *_) = exemplar.findall(openmetrics)
    assert get(pqd.url(f"/cycles/{cycle_id}"))[0] == 200
    # The plain text format has no exemplars, and promtool's linter accepts it as it was.
    text = pqd.scrape()
    assert "cycle_id" not in text
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found on PATH; install it: apt-get install -y prometheus"
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert lint.returncode == 0 and not lint.stdout.strip(), lint


def test_prometheus_returns_cycle_ids_that_pqd_serves(
    pqd: PqdProcess, stored: list[dict[str, Any]]
) -> None:
    for series in stored:
        labels = series["seriesLabels"]
        assert labels["__name__"] == "pqd_cycle_duration_seconds_bucket", labels
        assert labels["job"] == "pqd" and labels["probe"] == PROBE, labels
        assert labels["instance"] == f"127.0.0.1:{pqd.port}", labels
        for exemplar in series["exemplars"]:
            assert set(exemplar["labels"]) == {"cycle_id"}, exemplar
            # The exemplar's value is that cycle's duration, which lies in its bucket.
            assert 0 < float(exemplar["value"]) <= float(labels["le"]), (labels, exemplar)
    for cycle_id in sorted(cycle_ids(stored)):
        status, page = get(pqd.url(f"/cycles/{cycle_id}"))
        assert status == 200, (cycle_id, status, page[:500])
        assert cycle_id in page and PROBE in page, page[:500]


def provisioned(value: str) -> str:
    """A provisioning file's string value as Grafana reads it: environment variables expanded
    ($NAME or ${NAME}, empty when unset, as Go's os.ExpandEnv does) and `$$` a literal `$`."""
    variable = re.compile(r"\$\{([^}]*)\}|\$(\w+)")
    return "$".join(
        variable.sub(lambda m: os.environ.get(m.group(1) or m.group(2), ""), part)
        for part in value.split("$$")
    )


def grafana_link(template: str, fields: dict[str, str], value: str) -> str:
    """A data link as Grafana builds it for an exemplar: ${__value.raw} is the linked field's
    value, ${__data.fields.NAME} another field of the same exemplar (its own labels and its
    series' labels)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "__value.raw":
            return value
        if name.startswith("__data.fields."):
            return fields[name.removeprefix("__data.fields.")]
        raise AssertionError(f"unexpected variable ${{{name}}} in {template}")

    return re.sub(r"\$\{([^}]+)\}", replace, template)


def exemplar_queries() -> list[tuple[str, str]]:
    """(panel title, expression with the dashboard's default variables) of every target that
    asks Grafana for exemplars."""
    found = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        board = json.loads(path.read_text())
        defaults = {
            v["name"]: v["allValue"] for v in board["templating"]["list"] if v["type"] == "query"
        }
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                if target.get("exemplar"):
                    found.append((panel["title"], interpolate(target["expr"], defaults)))
    return found


def test_the_dashboard_exemplars_link_to_the_cycle_page(
    pqd: PqdProcess, prometheus: Prometheus, stored: list[dict[str, Any]]
) -> None:
    queries = exemplar_queries()
    assert [title for title, _ in queries] == ["Cycle duration"]
    (datasource,) = yaml.safe_load(DATASOURCE_FILE.read_text())["datasources"]
    (destination,) = datasource["jsonData"]["exemplarTraceIdDestinations"]
    assert destination["name"] == "cycle_id"
    for title, expr in queries:
        # Grafana sends the panel's query itself; Prometheus answers with the exemplars of
        # every series the query selects.
        series = wait_until(
            lambda expr=expr: query_exemplars(prometheus, expr), f"exemplars of {title}", 30
        )
        assert cycle_ids(series), series
        for one in series:
            for exemplar in one["exemplars"]:
                cycle_id = exemplar["labels"]["cycle_id"]
                fields = {**one["seriesLabels"], **exemplar["labels"]}
                url = grafana_link(provisioned(destination["url"]), fields, cycle_id)
                assert url == pqd.url(f"/cycles/{cycle_id}"), url
                status, page = get(url)
                assert status == 200 and cycle_id in page, (url, status, page[:500])
