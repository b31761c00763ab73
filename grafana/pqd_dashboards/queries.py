"""The selectors and PromQL helpers every panel's query is built from.

Kept in one place so that each query filters by the dashboard's variables in the same way, and
tests/ops/test_deploy_manifests.py can check every expression against SELECTOR and
INSTANCE_SELECTOR. Metric names are docs/design.md §2's contract.
"""

from __future__ import annotations

#: The selectors. pqd_* series carry `probe`; process_*, pqd_build_info and the config reload
#: metrics do not (docs/design.md §2), and a `probe` matcher would drop them.
SELECTOR = '{job=~"$job", instance=~"$instance", probe=~"$probe"}'
INSTANCE_SELECTOR = '{job=~"$job", instance=~"$instance"}'
JOB_SELECTOR = '{job=~"$job"}'

#: At least 4 scrapes (Grafana computes it from the data source's scrape interval), so a
#: rate() window never holds fewer than 2 samples.
RATE_INTERVAL = "$__rate_interval"

#: Legend for per-probe series: several hosts can run the same probe name.
PROBE_LEGEND = "{{probe}} @ {{instance}}"

#: Legend for series without `probe`: one per pqd process.
INSTANCE_LEGEND = "{{instance}}"


def probe_metric(name: str) -> str:
    """A pqd_ series that carries `probe`, selected by the dashboard's variables."""
    return name + SELECTOR


def instance_metric(name: str) -> str:
    """A series without `probe` (process_*, build info, config reload)."""
    return name + INSTANCE_SELECTOR


def probe_rate(counter: str, by: str = "instance, probe") -> str:
    """A per-probe counter's per-second rate over the rate window, summed `by` the labels."""
    return f"sum by ({by}) (rate({probe_metric(counter)}[{RATE_INTERVAL}]))"


def per_minute(counter: str, by: str = "instance, probe") -> str:
    """Counter increase per minute: cycles run every few seconds to hours, per-second rates of
    a probe would read as tiny fractions."""
    return f"60 * {probe_rate(counter, by)}"


def per_cycle(counter: str) -> str:
    """A counter's mean increase per cycle over the rate window (the counter's rate over the
    rate of pqd_cycles_total): a per-cycle figure that does not depend on the schedule."""
    return f"{probe_rate(counter)}\n/\n{probe_rate('pqd_cycles_total')}"


def quantile(q: float, histogram: str, by: str = "instance, probe") -> str:
    """A quantile from a histogram's buckets over the rate window."""
    return (
        f"histogram_quantile({q}, sum by ({by}, le) "
        f"(rate({probe_metric(histogram + '_bucket')}[{RATE_INTERVAL}])))"
    )


def percentile_legend(q: float, legend: str) -> str:
    """`p50 <legend>` for the quantile 0.5."""
    return f"p{round(q * 100)} {legend}"


def increase_last_hour(counter: str, by: str) -> str:
    """How much a per-probe counter grew over the last hour, summed `by` the labels."""
    return f"sum by ({by}) (increase({probe_metric(counter)}[1h]))"


#: Seconds since the last successful cycle, or -1 (shown as "never") for a probe that has not
#: succeeded since pqd started: it exports 0 then, which would read as 56 years.
SINCE_SUCCESS_OR_NEVER = (
    f"time() - ({probe_metric('pqd_last_cycle_success_timestamp_seconds')} > 0)\nor\n"
    f"({probe_metric('pqd_last_cycle_success_timestamp_seconds')} == 0) - 1"
)

#: Seconds since the last successful cycle; no value before the first one (pqd exports 0 until
#: a cycle has succeeded, and "55 years ago" would bury the point).
SINCE_SUCCESS = f"time() - ({probe_metric('pqd_last_cycle_success_timestamp_seconds')} > 0)"

#: Failed cycles as annotations: one per (instance, probe, reason) whose failures grew within
#: the rate window.
FAILED_CYCLES = (
    "sum by (instance, probe, reason) "
    f"(increase({probe_metric('pqd_cycle_failures_total')}[{RATE_INTERVAL}])) > 0"
)

#: The fleet table's rows: one per instance and probe.
FLEET_BY = "job, instance, probe"
