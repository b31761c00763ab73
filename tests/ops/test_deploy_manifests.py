"""deploy/ and grafana/: manifests validate offline, generated files have not drifted, and the
dashboard is wired to the data source variable and the shared selectors.

kubernetes-validate and check-jsonschema are pyproject test extras; both carry their schemas,
so nothing is fetched.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from pqd.results import FAILURE_REASONS
from tests.helpers.ops import (
    ALERTS_FILE,
    CONTRACT_LABELS,
    CONTRACT_METRICS,
    CONTRACT_UNPROBED,
    DASHBOARD_DIR,
    KUBERNETES_DIR,
    RECORDING_FILE,
    ROOT,
    describe,
    grouping_labels,
    load_generator,
    load_yaml,
    load_yaml_documents,
    pqd_metric_names,
    run,
)

GRAFANA_GENERATOR = ROOT / "grafana/generate.py"
KUBERNETES_GENERATOR = KUBERNETES_DIR / "generate.py"
COMPOSE_FILE = ROOT / "deploy/docker-compose.yml"
DOCKERFILE = ROOT / "deploy/Dockerfile"
OVERVIEW = DASHBOARD_DIR / "pqd-overview.json"
DATASOURCE_VARIABLE = {"type": "prometheus", "uid": "${datasource}"}

#: Core kinds, validated against the Kubernetes OpenAPI schemas.
CORE_MANIFESTS = [
    "namespace.yaml",
    "daemonset.yaml",
    "service.yaml",
    "pqd-config.yaml",
    "grafana-dashboard.yaml",
]

generate = load_generator(GRAFANA_GENERATOR, "pqd_grafana_generate")


def python_tool(module: str, *args: str) -> list[str]:
    """Run a Python tool from the interpreter running the tests, failing clearly if it is not
    installed there."""
    try:
        __import__(module)
    except ImportError:
        pytest.fail(f"{module} is not installed: pip install -e '.[test]'", pytrace=False)
    return [sys.executable, "-m", module, *args]


def manifest(name: str) -> dict[str, Any]:
    (doc,) = load_yaml_documents(KUBERNETES_DIR / name)
    return doc


def dashboard() -> dict[str, Any]:
    return json.loads(OVERVIEW.read_text(encoding="utf-8"))


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def targets() -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in panels() for t in p["targets"]]


# --- generated files ------------------------------------------------------------------------


@pytest.mark.parametrize("generator", [GRAFANA_GENERATOR, KUBERNETES_GENERATOR], ids=str)
def test_generated_files_have_not_drifted(generator: Path) -> None:
    result = run([sys.executable, str(generator), "--check"])
    assert result.returncode == 0, describe(result)


def test_dashboard_config_map_embeds_the_dashboard() -> None:
    data = manifest("grafana-dashboard.yaml")["data"]
    files = {p.name: p.read_text(encoding="utf-8") for p in DASHBOARD_DIR.glob("*.json")}
    assert data == files


def test_config_config_map_embeds_the_example_config() -> None:
    data = manifest("pqd-config.yaml")["data"]
    assert data == {"pqd.toml": (ROOT / "systemd/pqd.toml").read_text(encoding="utf-8")}


def test_prometheus_rule_carries_the_rule_files() -> None:
    rule = manifest("prometheusrule.yaml")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    expected = load_yaml(RECORDING_FILE)["groups"] + load_yaml(ALERTS_FILE)["groups"]
    assert rule["spec"]["groups"] == expected


# --- Kubernetes -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", CORE_MANIFESTS)
def test_core_manifest_validates(name: str) -> None:
    result = run(python_tool("kubernetes_validate", "--strict", str(KUBERNETES_DIR / name)))
    assert result.returncode == 0, describe(result)


def test_validator_rejects_a_broken_manifest(tmp_path: Path) -> None:
    # Guards against a validator that passes everything (e.g. a schema it could not load).
    broken = manifest("daemonset.yaml")
    broken["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    path = tmp_path / "broken.yaml"
    path.write_text(json.dumps(broken))
    result = run(python_tool("kubernetes_validate", "--strict", str(path)))
    assert result.returncode != 0, describe(result)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(load_yaml(KUBERNETES_DIR / "kustomization.yaml")["resources"])
    present = {p.name for p in KUBERNETES_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_daemonset_service_and_monitor_fit_together() -> None:
    daemonset = manifest("daemonset.yaml")
    service = manifest("service.yaml")
    monitor = manifest("servicemonitor.yaml")
    pod = daemonset["spec"]["template"]
    spec = pod["spec"]
    assert spec["hostPID"] is True, "the host pid count must be the node's"
    assert not spec.get("hostNetwork"), "pqd needs no host network"
    labels = pod["metadata"]["labels"]
    selector = daemonset["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = spec["containers"]
    assert container["args"][:2] == ["--config", "/etc/pqd/pqd.toml"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 10029}
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/etc/pqd", "/tmp"} <= mounts, "config, and a writable /tmp for multiprocessing"
    config_volume = next(v for v in spec["volumes"] if "configMap" in v)
    assert config_volume["configMap"]["name"] == manifest("pqd-config.yaml")["metadata"]["name"]
    # The Operator names the job after the Service: the alerts and dashboards select job=pqd.
    assert service["metadata"]["name"] == "pqd"
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    namespaces = {m["metadata"]["namespace"] for m in (daemonset, service, monitor)}
    assert namespaces == set(monitor["spec"]["namespaceSelector"]["matchNames"])


def test_dashboard_config_map_is_labelled_for_the_sidecar() -> None:
    assert manifest("grafana-dashboard.yaml")["metadata"]["labels"]["grafana_dashboard"] == "1"


# --- docker-compose and Dockerfile ---------------------------------------------------------


def test_compose_file_validates_against_compose_spec() -> None:
    result = run(
        python_tool(
            "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)
        )
    )
    assert result.returncode == 0, describe(result)


def test_compose_mounts_what_prometheus_and_grafana_read() -> None:
    services = load_yaml(COMPOSE_FILE)["services"]
    assert set(services) == {"pqd", "prometheus", "grafana"}
    assert services["pqd"]["pid"] == "host", "the host pid count must be the host's"

    def mounts(service: str) -> dict[str, Path]:
        pairs = (v.split(":")[:2] for v in services[service]["volumes"] if v.startswith("."))
        return {target: (COMPOSE_FILE.parent / source).resolve() for source, target in pairs}

    assert mounts("prometheus") == {"/etc/prometheus": ROOT / "deploy/prometheus"}
    provider = load_yaml(ROOT / "grafana/provisioning/dashboards/pqd.yaml")["providers"][0]
    assert mounts("grafana") == {
        "/etc/grafana/provisioning": ROOT / "grafana/provisioning",
        provider["options"]["path"]: DASHBOARD_DIR,
    }
    build = services["pqd"]["build"]
    assert (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE


def test_dockerfile_shape() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert stages and all(s == "python:3.11-slim" for s in stages), stages
    final = text.split("\nFROM ")[-1]
    users = re.findall(r"^USER\s+(\S+)", final, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in {"root", "0"}, "must run as non-root"
    assert re.search(r"^EXPOSE\s+10029\b", final, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT\s+\["pqd",\s*"run"\]', final, re.MULTILINE)
    # Every file COPY takes from the build context (the repository root) must exist.
    for sources in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", text, re.MULTILINE):
        for source in sources.split():
            assert (ROOT / source).exists(), f"COPY source {source} is missing"


# --- Grafana provisioning -------------------------------------------------------------------


def test_grafana_provisioning_files() -> None:
    datasources = load_yaml(ROOT / "grafana/provisioning/datasources/prometheus.yaml")
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy"
    scrape = load_yaml(ROOT / "deploy/prometheus/prometheus.yml")["global"]["scrape_interval"]
    assert source["jsonData"]["timeInterval"] == scrape, "$__rate_interval depends on it"
    providers = load_yaml(ROOT / "grafana/provisioning/dashboards/pqd.yaml")
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file"


# --- the dashboard --------------------------------------------------------------------------


def test_dashboard_identity() -> None:
    board = dashboard()
    assert board["uid"] == "pqd-overview"
    assert OVERVIEW.stem == board["uid"]


def test_dashboard_variables() -> None:
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance", "probe"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("job", "instance", "probe"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["multi"] and variable["includeAll"], name
        assert variable["datasource"] == DATASOURCE_VARIABLE
        assert re.fullmatch(rf"label_values\(\w+(\{{.*\}})?, {name}\)", variable["definition"])


def _datasources(node: Any) -> list[Any]:
    if isinstance(node, dict):
        found = [node["datasource"]] if "datasource" in node else []
        return found + [d for v in node.values() for d in _datasources(v)]
    if isinstance(node, list):
        return [d for v in node for d in _datasources(v)]
    return []


def test_no_datasource_is_hardcoded() -> None:
    builtin = {"type": "grafana", "uid": "-- Grafana --"}  # Grafana's own annotations
    sources = _datasources(dashboard())
    assert sources
    for source in sources:
        assert source in (DATASOURCE_VARIABLE, builtin), source


def test_panels_have_targets_ids_and_a_grid() -> None:
    board = dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    for panel in panels():
        assert panel["targets"], f"{panel['title']} has no query"
        assert panel["datasource"] == DATASOURCE_VARIABLE
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]


def _check_expr(expr: str, where: str) -> None:
    selectors = re.findall(r"(?<![\w:])([a-zA-Z_:][\w:]*)(\{[^}]*\})", expr)
    assert selectors, f"{where}: no selector in {expr}"
    for metric, selector in selectors:
        wanted = (
            generate.INSTANCE_SELECTOR
            if metric in CONTRACT_UNPROBED or metric.startswith(("process_", "python_"))
            else generate.SELECTOR
        )
        assert selector == wanted, f"{where}: {metric}{selector} is not the shared selector"
    # Every metric name has a selector right after it: none escapes the variables.
    bare = re.findall(r"(?<![\w:])((?:pqd|process|python)_\w+)(?![\w{])", expr)
    assert not bare, f"{where}: {bare} without the shared selector"
    unknown = pqd_metric_names(expr) - CONTRACT_METRICS
    assert not unknown, f"{where}: not in docs/design.md §2: {sorted(unknown)}"
    assert grouping_labels(expr) <= CONTRACT_LABELS, f"{where}: {grouping_labels(expr)}"


def test_every_query_uses_the_shared_selectors() -> None:
    for title, target in targets():
        _check_expr(target["expr"], title)
    for annotation in dashboard()["annotations"]["list"]:
        if "expr" in annotation:
            _check_expr(annotation["expr"], annotation["name"])


def test_dashboard_answers_the_operator_questions() -> None:
    # What an operator asks of the dashboard, as the metric each answer needs.
    exprs = "\n".join(t["expr"] for _, t in targets())
    for needed in (
        "pqd_last_cycle_success{",
        "time() - (pqd_last_cycle_success_timestamp_seconds{",
        "pqd_cycle_failures_total{",
        "pqd_cycles_skipped_total{",
        "pqd_queue_depth{",
        "pqd_queue_capacity{",
        "pqd_last_cycle_queue_full_events{",
        "pqd_workers_live{",
        "pqd_workers_configured{",
        "pqd_last_cycle_pid_count_delta{",
        "pqd_last_cycle_leaked_processes{",
        "pqd_cycle_duration_seconds_bucket{",
        "pqd_phase_duration_seconds_bucket{",
        "pqd_queue_operation_duration_seconds_bucket{",
        "rate(process_cpu_seconds_total{",
        "process_resident_memory_bytes{",
        # What a cycle costs (docs/design.md §1a and §2): its process tree's CPU and peak RSS.
        "pqd_last_cycle_cpu_seconds{",
        "rate(pqd_cycle_cpu_seconds_total{",
        "pqd_last_cycle_max_rss_bytes{",
    ):
        assert needed in exprs, f"no panel queries {needed}"
    assert exprs.count("histogram_quantile(") >= 3
    annotations = [a for a in dashboard()["annotations"]["list"] if "expr" in a]
    assert any("pqd_cycle_failures_total" in a["expr"] for a in annotations)


def _units(metric: str) -> set[str]:
    """The units of the panels that query `metric`."""
    return {
        p["fieldConfig"]["defaults"].get("unit", "")
        for p in panels()
        if any(f"{metric}{{" in t["expr"] for t in p["targets"])
    }


def test_cost_panels_have_units() -> None:
    # Seconds of CPU per cycle, a share of a core for the rate, bytes for RSS: a bare number
    # in the wrong unit reads 1000x off.
    assert _units("pqd_last_cycle_cpu_seconds") == {"s"}
    assert _units("pqd_last_cycle_max_rss_bytes") == {"bytes"}
    assert _units("pqd_cycle_cpu_seconds_total") <= {"s", "percentunit"}


def test_texts_name_every_failure_reason() -> None:
    # The failures panel's description spells the reasons out; keep it in step with
    # docs/design.md §1.
    (panel,) = [p for p in panels() if p["title"] == "Failures per minute by reason"]
    for reason in FAILURE_REASONS:
        assert reason in panel["description"], f"failures panel does not mention {reason}"
