"""Shared helpers for the operations-bundle tests (tests/ops/): where the deploy files are,
and running the tools that check them.

A plain module rather than conftest.py, so the tests import names explicitly and a reader can
find where they come from.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.helpers.contract import (
    CONTRACT_COUNTERS,
    CONTRACT_GAUGES,
    CONTRACT_HISTOGRAMS,
    CONTRACT_STATESETS,
    CONTRACT_UNPROBED,
)

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy/prometheus"
ALERTS_FILE = PROMETHEUS_DIR / "pqd-alerts.yml"
RECORDING_FILE = PROMETHEUS_DIR / "pqd-rules.yml"
ALERT_TESTS_FILE = PROMETHEUS_DIR / "pqd-alerts.test.yml"
SCRAPE_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RUNBOOK = ROOT / "docs/runbook.md"
DASHBOARD_DIR = ROOT / "grafana/dashboards"
KUBERNETES_DIR = ROOT / "deploy/kubernetes"


CONTRACT_METRICS = (
    CONTRACT_GAUGES
    | CONTRACT_COUNTERS
    | CONTRACT_UNPROBED
    | CONTRACT_STATESETS
    | {"pqd_probe_info"}
    | {h + suffix for h in CONTRACT_HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)
#: Labels a query may aggregate by: the target's, pqd's (docs/design.md §2), and the histogram's.
CONTRACT_LABELS = frozenset(
    {
        "job",
        "instance",
        "probe",
        "reason",
        "phase",
        "operation",
        "le",
        "cause",
        "category",
        *CONTRACT_STATESETS,  # a state set's state label is named after the family
    }
)

#: A pqd_ name standing alone, not part of a recording rule name such as level:pqd_x:op.
_PQD_NAME = re.compile(r"(?<![\w:])(pqd_[a-z0-9_]+)(?![\w:])")
_BY_CLAUSE = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def pqd_metric_names(expr: str) -> set[str]:
    return set(_PQD_NAME.findall(expr))


def grouping_labels(expr: str) -> set[str]:
    return {
        label.strip()
        for clause in _BY_CLAUSE.findall(expr)
        for label in clause.split(",")
        if label.strip()
    }


def require_tool(name: str, install_hint: str) -> str:
    """The tool's path, or a test failure saying how to install it: a missing tool must not
    turn into a silently skipped check."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH; install it: {install_hint}", pytrace=False)
    return path


def run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return (
        f"$ {' '.join(map(str, result.args))}\nexit {result.returncode}\n"
        f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    )


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_yaml_documents(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def alert_rules() -> dict[str, dict[str, Any]]:
    rules: dict[str, dict[str, Any]] = {}
    for group in load_yaml(ALERTS_FILE)["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["alert"] not in rules, f"alert {rule['alert']} defined twice"
                rules[rule["alert"]] = rule
    return rules


def all_rules() -> list[dict[str, Any]]:
    return [
        rule
        for path in (RECORDING_FILE, ALERTS_FILE)
        for group in load_yaml(path)["groups"]
        for rule in group["rules"]
    ]


_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
    "y": 31536000,
}


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as 90s, 5m or 1h30m."""
    text = str(text)
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _DURATION_UNITS[u] for n, u in parts)


def github_anchor(heading: str) -> str:
    """The fragment GitHub (and most Markdown renderers) give a heading."""
    slug = heading.strip().lower()
    slug = re.sub(r"[^\w\- ]", "", slug)
    return slug.replace(" ", "-")


def runbook_anchors() -> set[str]:
    text = RUNBOOK.read_text(encoding="utf-8")
    return {github_anchor(m) for m in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, re.MULTILINE)}


def load_generator(path: Path, name: str) -> ModuleType:
    """Import a generator script by path (grafana/ and deploy/ are not packages)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
