"""deploy/prometheus: the scrape config, the rules and their promtool unit tests.

promtool comes with Debian's `prometheus` package; `make test` installs it.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from pqd.results import FAILURE_CAUSES, FAILURE_REASONS
from tests.helpers.ops import (
    ALERT_TESTS_FILE,
    ALERTS_FILE,
    CONTRACT_LABELS,
    CONTRACT_METRICS,
    RECORDING_FILE,
    RUNBOOK,
    SCRAPE_CONFIG,
    alert_rules,
    all_rules,
    describe,
    grouping_labels,
    load_yaml,
    parse_duration,
    pqd_metric_names,
    require_tool,
    run,
    runbook_anchors,
)

PROMTOOL_HINT = "apt-get install -y prometheus (Debian's package ships promtool)"
SEVERITIES = {"critical", "warning", "info"}
ALERT_NAMES = sorted(alert_rules())

#: The alerts operators page on (docs/runbook.md has a section each); more may be added, none of
#: these may go.
REQUIRED_ALERTS = {
    "PqdDown",
    "PqdCyclesFailing",
    "PqdNoSuccessfulCycle",
    "PqdProcessesLeaking",
    "PqdQueueSaturated",
    "PqdCyclesSlow",
    "PqdConfigReloadFailed",
    # Multi-window, multi-burn-rate alerts on the success objective (the SRE workbook's).
    "PqdErrorBudgetBurnFast",
    "PqdErrorBudgetBurnSlow",
    # Headroom: before the failure (docs/design.md §2).
    "PqdSharedMemoryLow",
    "PqdSharedMemoryObjectsGrowing",
    "PqdPidsNearLimit",
    "PqdMemoryNearLimit",
    "PqdOpenFilesNearLimit",
    "PqdPoolOversubscribed",
    "PqdTmpdirUnusable",
}

#: Recording rules other files (dashboards) may query by name; more may be added.
REQUIRED_RECORDS = {
    "pqd:cycle_success:objective",
    "probe:pqd_cycle_success:ratio_rate5m",
    "probe:pqd_cycle_success:ratio_rate1h",
    "probe:pqd_cycle_success:ratio_rate6h",
}

#: Every alert's `link` annotation starts with this, and nothing else in the rules does, so that
#: the one rewrite docs/runbook.md#links gives switches every link to https and a path prefix.
LINK_BASE = "http://{{ $labels.instance }}/"
PROBE_PAGE = LINK_BASE + "probes/{{ $labels.probe | urlquery }}"
#: The rewrite as docs/runbook.md gives it (pqd behind a reverse proxy at https://HOST/pqd/).
LINK_REWRITE = "s|http://{{ $labels.instance }}/|https://{{ $labels.instance }}/pqd/|"


def assert_promtool_passes(*args: str) -> None:
    result = run([require_tool("promtool", PROMTOOL_HINT), *args])
    assert result.returncode == 0, describe(result)


def test_promtool_check_config() -> None:
    # Also checks the rule files it references.
    assert_promtool_passes("check", "config", str(SCRAPE_CONFIG))


def test_promtool_check_rules() -> None:
    assert_promtool_passes("check", "rules", str(RECORDING_FILE), str(ALERTS_FILE))


def test_promtool_test_rules() -> None:
    assert_promtool_passes("test", "rules", str(ALERT_TESTS_FILE))


def test_scrape_config_shape() -> None:
    config = load_yaml(SCRAPE_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert "pqd" in jobs, "the alerts and dashboards select job=pqd"
    targets = [t for sc in jobs["pqd"]["static_configs"] for t in sc["targets"]]
    assert targets == ["localhost:10029"], "pqd listens on 10029 (docs/design.md §3)"
    rule_files = {SCRAPE_CONFIG.parent / name for name in config["rule_files"]}
    assert rule_files == {RECORDING_FILE, ALERTS_FILE}


def test_required_alerts_exist() -> None:
    assert set(ALERT_NAMES) >= REQUIRED_ALERTS


def _record_names() -> list[str]:
    return [rule["record"] for rule in all_rules() if "record" in rule]


def test_required_recording_rules_exist() -> None:
    assert set(_record_names()) >= REQUIRED_RECORDS


def test_every_recording_rule_is_tested() -> None:
    # A promql_expr_test that queries the rule by name pins what it records.
    tested = {
        re.split(r"[^a-zA-Z0-9_:]", expr_test["expr"], maxsplit=1)[0]
        for group in load_yaml(ALERT_TESTS_FILE)["tests"]
        for expr_test in group.get("promql_expr_test", [])
    }
    assert not set(_record_names()) - tested, sorted(set(_record_names()) - tested)


def test_the_objective_is_one_number() -> None:
    # Alerts read the objective from its recording rule; none carries its own copy.
    (objective,) = (r for r in all_rules() if r.get("record") == "pqd:cycle_success:objective")
    assert re.fullmatch(r"vector\(0\.\d+\)", objective["expr"].strip()), objective["expr"]
    for name in ("PqdErrorBudgetBurnFast", "PqdErrorBudgetBurnSlow"):
        rule = alert_rules()[name]
        assert "scalar(pqd:cycle_success:objective)" in rule["expr"], name
        assert "0.99" not in rule["expr"] and "99%" not in rule["annotations"]["description"]


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_alert_links_to_its_evidence(name: str) -> None:
    # A probe's alert leads to that probe's page on the instance; an alert about pqd as a whole
    # (no probe label) to its landing page.
    rule = alert_rules()[name]
    assert rule["annotations"].get("link") == _expected_link(rule)


def _expected_link(rule: dict[str, Any]) -> str:
    return PROBE_PAGE if "probe" in grouping_labels(rule["expr"]) else LINK_BASE


def test_links_share_one_rewritable_base() -> None:
    text = ALERTS_FILE.read_text(encoding="utf-8")
    assert text.count(LINK_BASE) == len(ALERT_NAMES), "one link per alert, nothing else"
    assert f"sed -i '{LINK_REWRITE}' deploy/prometheus/pqd-alerts.yml" in RUNBOOK.read_text(
        encoding="utf-8"
    ), "docs/runbook.md#links should give the rewrite this test makes"


def test_rewritten_links_render_with_https_and_prefix(tmp_path: Path) -> None:
    # The documented rewrite, applied to a copy: the rules still load and every promtool test
    # passes with each expected link moved to https://INSTANCE/pqd/.
    for path in (RECORDING_FILE, ALERTS_FILE, ALERT_TESTS_FILE):
        shutil.copy(path, tmp_path / path.name)
    sed = require_tool("sed", "apt-get install -y sed")
    result = run([sed, "-i", LINK_REWRITE, str(tmp_path / ALERTS_FILE.name)])
    assert result.returncode == 0, describe(result)
    rewritten = (tmp_path / ALERTS_FILE.name).read_text(encoding="utf-8")
    assert LINK_BASE not in rewritten
    probe_alerts = [r for r in alert_rules().values() if _expected_link(r) == PROBE_PAGE]
    assert rewritten.count("https://{{ $labels.instance }}/pqd/probes/") == len(probe_alerts)
    tests = tmp_path / ALERT_TESTS_FILE.name
    expected, moved = re.subn(
        r"^(\s+link: )http://([^/\s]+)/",
        r"\1https://\2/pqd/",
        tests.read_text(encoding="utf-8"),
        flags=re.MULTILINE,
    )
    assert moved >= len(ALERT_NAMES)
    tests.write_text(expected, encoding="utf-8")
    assert_promtool_passes("test", "rules", str(tests))


@pytest.mark.parametrize("name", ALERT_NAMES)
def test_alert_has_metadata_and_runbook(name: str) -> None:
    rule = alert_rules()[name]
    assert parse_duration(rule.get("for", "0s")) > 0, f"{name}: needs a for: window"
    assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity label"
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert str(annotations.get(key, "")).strip(), f"{name}: {key} annotation"
    url = urlsplit(annotations["runbook_url"])
    assert url.scheme == "https" and url.path.endswith("/docs/runbook.md"), url
    assert url.fragment == name.lower(), f"{name}: anchor should be #{name.lower()}"
    assert url.fragment in runbook_anchors(), f"{RUNBOOK} has no section #{url.fragment}"


def test_every_runbook_alert_section_is_an_alert() -> None:
    # A section for a renamed or removed alert would be a dead end for whoever follows a link.
    sections = set(re.findall(r"^## (Pqd\w+)\s*$", RUNBOOK.read_text(), re.MULTILINE))
    assert sections == set(ALERT_NAMES)


def test_runbook_explains_every_failure_reason() -> None:
    # The reason table is where an alert's reader learns what pqd_cycle_failures_total{reason}
    # means; a reason added to docs/design.md §1 needs its row.
    text = RUNBOOK.read_text(encoding="utf-8")
    for reason in FAILURE_REASONS:
        assert re.search(rf"^\| `{reason}` \|", text, re.MULTILINE), f"{RUNBOOK}: no {reason} row"


def test_runbook_has_a_section_for_every_cause() -> None:
    # The alert's description and the cycle's page name a cause; its section says what to do.
    text = RUNBOOK.read_text(encoding="utf-8")
    for cause in FAILURE_CAUSES:
        assert re.search(rf"^### `{cause}`$", text, re.MULTILINE), f"{RUNBOOK}: no {cause}"


@pytest.mark.parametrize("rule", all_rules(), ids=lambda r: r.get("alert") or r["record"])
def test_rule_uses_contract_names_and_job(rule: dict[str, Any]) -> None:
    expr = rule["expr"]
    unknown = pqd_metric_names(expr) - CONTRACT_METRICS
    assert not unknown, f"not in docs/design.md §2: {sorted(unknown)}"
    assert grouping_labels(expr) <= CONTRACT_LABELS, grouping_labels(expr)
    # Every selector names the scrape job, so pqd rules never match another exporter's series.
    for selector in re.findall(r"(?<![\w:])[a-zA-Z0-9_:]+\{([^}]*)\}", expr):
        assert 'job="pqd"' in selector, f"selector without job=pqd: {{{selector}}}"


# --- each alert pinned just before and just after its for: window ------------------------


def _labels(series: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', series))


def _alert_label_sets(test: dict[str, Any]) -> list[dict[str, str]]:
    return [{str(k): str(v) for k, v in a["exp_labels"].items()} for a in test["exp_alerts"]]


def _pins(tests_file: dict[str, Any]) -> dict[str, list[str]]:
    """alertname -> descriptions of proven before/after pairs (see pqd-alerts.test.yml's
    header): ALERTS_FOR_STATE at B says when the alert became pending (activeAt); at B it must
    not fire, at the next evaluation it must, and that evaluation is activeAt + for."""
    rules = alert_rules()
    interval = parse_duration(tests_file.get("evaluation_interval", "1m"))
    pins: dict[str, list[str]] = {}
    for group in tests_file["tests"]:
        alert_tests: dict[tuple[str, float], list[dict[str, str]]] = {}
        for test in group.get("alert_rule_test", []):
            key = (test["alertname"], parse_duration(test["eval_time"]))
            alert_tests[key] = _alert_label_sets(test)
        for expr_test in group.get("promql_expr_test", []):
            if not expr_test["expr"].startswith("ALERTS_FOR_STATE"):
                continue
            before = parse_duration(expr_test["eval_time"])
            for sample in expr_test["exp_samples"]:
                labels = _labels(sample["labels"])
                name = labels.pop("alertname")
                labels.pop("__name__", None)
                active_at = float(sample["value"])
                window = parse_duration(rules[name]["for"])
                where = f"{name} {labels} pending since {active_at:g}s"
                assert before == active_at + window - interval, (
                    f"{where}: the 'before' check at {before:g}s is not the last evaluation "
                    f"inside the {window:g}s window"
                )
                assert (name, before) in alert_tests, f"{where}: no alert_rule_test at {before:g}s"
                assert labels not in alert_tests[(name, before)], f"{where}: fires too early"
                after = before + interval
                assert (name, after) in alert_tests, f"{where}: no alert_rule_test at {after:g}s"
                assert labels in alert_tests[(name, after)], f"{where}: does not fire at {after:g}s"
                pins.setdefault(name, []).append(where)
    return pins


def test_every_alert_is_tested_at_both_edges_of_its_for_window() -> None:
    pins = _pins(load_yaml(ALERT_TESTS_FILE))
    missing = set(ALERT_NAMES) - set(pins)
    assert not missing, f"alerts without a before/after test: {sorted(missing)}"
