"""The operations bundle against the real thing: a `pqd run` process scraped by a real
Prometheus (Debian's `prometheus` package) that loads deploy/prometheus's rules.

Every query of every panel of every dashboard in grafana/dashboards/ is run through Prometheus'
HTTP API, with the dashboard variables filled in the way Grafana fills them, and must parse and
return data for every configured probe. The rules must load and evaluate without error, and a
healthy pqd must not make any pqd alert even pending.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.configs import quick_probe
from tests.helpers.dashboards import interpolate, regex_value
from tests.helpers.net import free_port
from tests.helpers.prometheus_process import (
    PROMETHEUS_DIR,
    ROOT,
    Prometheus,
    running_prometheus,
    start,
    stop,
    tail,
    wait_ready,
)
from tests.helpers.waiting import wait_until

pytestmark = pytest.mark.slow

DASHBOARD_DIR = ROOT / "grafana/dashboards"

#: Two probes, so that multi-value variables and per-probe results are really exercised, with
#: the start methods that matter most (the daemon's default and the portable one). interval 1s
#: gives a few cycles within seconds; job_pause 0 keeps cycles short on a 2-core CI machine.
PROBES = ("fs", "sp")
PQD_CONFIG = (
    'log_format = "logfmt"\nlog_level = "info"\n\n'
    + quick_probe("fs", "forkserver")
    + "\n"
    + quick_probe("sp", "spawn")
)

#: Cycles per probe before queries are judged: enough for rate() over RANGE to see increases.
MIN_CYCLES = 3
DATA_SECONDS = 90.0


# --- plumbing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stack:
    pqd_instance: str
    pqd_log: Path
    prometheus: Prometheus

    def api(self, path: str, **params: str) -> Any:
        return self.prometheus.api(path, **params)

    def query(self, expr: str) -> dict[str, Any]:
        return self.prometheus.query(expr)


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pqd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("pqd")
    config = tmp / "pqd.toml"
    config.write_text(PQD_CONFIG)
    address = f"127.0.0.1:{free_port()}"
    log = tmp / "pqd.log"
    proc = start(
        [sys.executable, "-m", "pqd", "run", "--config", str(config), "--listen-address", address],
        log,
    )
    try:
        wait_ready(proc, f"http://{address}/-/ready", "pqd", log)
        yield address, log
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def stack(pqd: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    address, pqd_log = pqd
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), address) as prometheus:
        yield Stack(address, pqd_log, prometheus)


@pytest.fixture(scope="module")
def cycled(stack: Stack) -> Stack:
    """The stack once Prometheus has scraped MIN_CYCLES cycles of every probe."""

    def enough() -> bool:
        result = stack.query(f'pqd_cycles_total{{job="pqd", instance="{stack.pqd_instance}"}}')
        seen = {s["metric"]["probe"]: float(s["value"][1]) for s in result["data"]["result"]}
        return set(seen) == set(PROBES) and min(seen.values()) >= MIN_CYCLES

    try:
        wait_until(enough, f"{MIN_CYCLES} cycles of each probe in Prometheus", DATA_SECONDS)
    except AssertionError as exc:
        targets = stack.api("targets")
        raise AssertionError(
            f"{exc}\ntargets: {json.dumps(targets)[:2000]}\n--- pqd log\n{tail(stack.pqd_log)}"
        ) from None
    return stack


# --- dashboard queries as Grafana sends them ------------------------------------------------


def variable_sets(all_values: dict[str, str], instance: str) -> dict[str, dict[str, str]]:
    return {
        # The operator picked the job, the host and both probes.
        "selected": {
            "job": regex_value(["pqd"]),
            "instance": regex_value([instance]),
            "probe": regex_value(list(PROBES)),
        },
        # The dashboard's default: "All" everywhere, which Grafana sends as the variable's
        # allValue (not as the list of values).
        "all": all_values,
    }


@dataclass(frozen=True)
class Query:
    where: str
    expr: str
    must_have_data: bool
    all_values: dict[str, str]


def dashboard_queries() -> list[Query]:
    queries = []
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        board = json.loads(path.read_text())
        all_values = {
            v["name"]: v["allValue"] for v in board["templating"]["list"] if v["type"] == "query"
        }
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                where = f"{path.name} / {panel['title']} / {target['refId']}"
                queries.append(Query(where, target["expr"], True, all_values))
        for annotation in board["annotations"]["list"]:
            if "expr" in annotation:
                # Failed cycles: a healthy run has none, so this one only has to parse.
                where = f"{path.name} / annotation {annotation['name']}"
                queries.append(Query(where, annotation["expr"], False, all_values))
    assert queries, f"no dashboards in {DASHBOARD_DIR}"
    return queries


def judge(stack: Stack, query: Query, expr: str) -> str | None:
    """None if the query is fine, else what is wrong with it."""
    answer = stack.query(expr)
    if answer.get("status") != "success":
        return f"error {answer.get('errorType')}: {answer.get('error')}"
    if not query.must_have_data:
        return None
    result = answer["data"]["result"]
    if not result:
        return "no data"
    values = [float(s["value"][1]) for s in result]
    if not any(math.isfinite(v) for v in values):
        return f"only NaN/Inf: {result}"
    probes = {s["metric"]["probe"] for s in result if "probe" in s["metric"]}
    if probes and probes != set(PROBES):
        return f"probes {sorted(probes)}, expected {sorted(PROBES)}"
    return None


def test_every_dashboard_query_returns_data(cycled: Stack) -> None:
    cases = [
        (query, mode, interpolate(query.expr, variables))
        for query in dashboard_queries()
        for mode, variables in variable_sets(query.all_values, cycled.pqd_instance).items()
    ]
    problems: dict[str, str] = {}

    def all_fine() -> bool:
        # Parse errors will not heal, but data may still be arriving (e.g. a rate() window not
        # yet full): retry everything until the deadline, then report what is still wrong.
        problems.clear()
        for query, mode, expr in cases:
            problem = judge(cycled, query, expr)
            if problem:
                problems[f"{query.where} [{mode}]: {expr}"] = problem
        return not problems

    with contextlib.suppress(AssertionError):
        wait_until(all_fine, "every dashboard query to return data", DATA_SECONDS)
    assert not problems, "\n".join(f"{where}\n    -> {why}" for where, why in problems.items())


def test_variable_queries_list_the_real_values(cycled: Stack) -> None:
    expected = {"job": {"pqd"}, "instance": {cycled.pqd_instance}, "probe": set(PROBES)}
    variables = variable_sets({}, cycled.pqd_instance)["selected"]
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        for variable in json.loads(path.read_text())["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["definition"])
            assert match, variable["definition"]
            selector, label = interpolate(match.group(1), variables), match.group(2)
            answer = cycled.api(f"label/{label}/values", **{"match[]": selector})
            assert answer["status"] == "success", answer
            assert set(answer["data"]) == expected[variable["name"]], (variable, answer)


# --- rules ----------------------------------------------------------------------------------


def rule_names() -> dict[str, str]:
    names = {}
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    for file_name in config["rule_files"]:
        for group in yaml.safe_load((PROMETHEUS_DIR / file_name).read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    names[rule["alert"]] = "alerting"
                else:
                    names[rule["record"]] = "recording"
    return names


def test_every_rule_is_loaded_and_evaluates(cycled: Stack) -> None:
    expected = rule_names()
    assert "PqdDown" in expected

    def loaded() -> dict[str, dict[str, Any]]:
        answer = cycled.api("rules")
        assert answer["status"] == "success", answer
        rules = {r["name"]: r for g in answer["data"]["groups"] for r in g["rules"]}
        # A rule reads "unknown" until its first evaluation.
        if set(rules) >= set(expected) and all(rules[n]["health"] != "unknown" for n in expected):
            return rules
        return {}

    rules = wait_until(loaded, "every rule to be evaluated", DATA_SECONDS)
    for name, kind in expected.items():
        assert rules[name]["type"] == kind, rules[name]
        assert rules[name]["health"] == "ok", rules[name]
        assert not rules[name].get("lastError"), rules[name]


def test_a_healthy_pqd_trips_no_alert(cycled: Stack) -> None:
    # The alerts guard against pqd's start-up values (0 timestamps, success=0 before the first
    # cycle): none may even be pending while pqd is healthy.
    alerts = cycled.api("alerts")["data"]["alerts"]
    pqd_alerts = [a for a in alerts if a["labels"]["alertname"] in rule_names()]
    assert not pqd_alerts, json.dumps(pqd_alerts, indent=2)


def test_prometheus_scrapes_pqd_cleanly(cycled: Stack) -> None:
    (target,) = cycled.api("targets")["data"]["activeTargets"]
    assert target["labels"]["job"] == "pqd"
    assert target["health"] == "up", target
    assert not target["lastError"], target
