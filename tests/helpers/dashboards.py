"""Dashboard queries as Grafana sends them: its built-in variables and multi-value variables
filled in the way its Prometheus data source fills them (tests/integration/test_prometheus_*)."""

from __future__ import annotations

import re

#: What Grafana would put in $__rate_interval and friends for a short time range with a 1s
#: scrape interval (at least 4 scrapes per window, as Grafana guarantees).
RANGE = "10s"
GRAFANA_BUILTINS = {
    "__rate_interval": RANGE,
    "__interval": RANGE,
    "__range": "1m",
    "__range_s": "60",
    "__range_ms": "60000",
    "__interval_ms": "10000",
}


def regex_value(values: list[str]) -> str:
    """A multi-value variable as Grafana's Prometheus data source renders it in a =~ matcher:
    regex-escaped values, (a|b) for several, backslashes doubled for the PromQL string."""
    escaped = [re.sub(r"([\\^$*+?.()|\[\]{}])", r"\\\1", v) for v in values]
    joined = escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    return joined.replace("\\", "\\\\")


def interpolate(expr: str, variables: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in GRAFANA_BUILTINS:
            return GRAFANA_BUILTINS[name]
        if name in variables:
            return variables[name]
        raise AssertionError(f"unknown variable ${name} in {expr}")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, expr)
