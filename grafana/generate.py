#!/usr/bin/env python3
"""Generate pqd's Grafana dashboards (stdlib only).

    python3 grafana/generate.py          # rewrite grafana/dashboards/*.json
    python3 grafana/generate.py --check  # exit 1 if a committed file differs (tests run this)

The dashboard is code so that every query is built from the same selectors below and the
tests can run each one against a real Prometheus (tests/integration/test_prometheus_dashboards.py).
Metric names are design §2's contract. Edit this file, never the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"

#: Every panel and variable queries through the data source the `datasource` variable picks,
#: so the dashboard works with any Prometheus data source name or uid.
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

#: The selectors, in one place. pqd_* series carry `probe`; process_*, pqd_build_info and the
#: config reload metrics do not (design §2), and a `probe` matcher would drop them.
SELECTOR = '{job=~"$job", instance=~"$instance", probe=~"$probe"}'
INSTANCE_SELECTOR = '{job=~"$job", instance=~"$instance"}'
JOB_SELECTOR = '{job=~"$job"}'

#: At least 4 scrapes (Grafana computes it from the data source's scrape interval), so a
#: rate() window never holds fewer than 2 samples.
RATE_INTERVAL = "$__rate_interval"

#: Legend for per-probe series: several hosts can run the same probe name.
PROBE_LEGEND = "{{probe}} @ {{instance}}"


def probe_metric(name: str) -> str:
    """A pqd_ series that carries `probe`, selected by the dashboard's variables."""
    return name + SELECTOR


def instance_metric(name: str) -> str:
    """A series without `probe` (process_*, build info, config reload)."""
    return name + INSTANCE_SELECTOR


def per_minute(counter: str, by: str = "instance, probe") -> str:
    """Counter increase per minute: cycles run every few seconds to hours, per-second rates of
    a probe would read as tiny fractions."""
    return f"60 * sum by ({by}) (rate({probe_metric(counter)}[{RATE_INTERVAL}]))"


def per_cycle(counter: str) -> str:
    """A counter's mean increase per cycle over the rate window (the counter's rate over the
    rate of pqd_cycles_total): a per-cycle figure that does not depend on the schedule."""
    return (
        f"sum by (instance, probe) (rate({probe_metric(counter)}[{RATE_INTERVAL}]))\n/\n"
        f"sum by (instance, probe) (rate({probe_metric('pqd_cycles_total')}[{RATE_INTERVAL}]))"
    )


def quantile(q: float, histogram: str, by: str = "instance, probe") -> str:
    """A quantile from a histogram's buckets over the rate window."""
    return (
        f"histogram_quantile({q}, sum by ({by}, le) "
        f"(rate({probe_metric(histogram + '_bucket')}[{RATE_INTERVAL}])))"
    )


def target(expr: str, legend: str = PROBE_LEGEND, **extra: Any) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, **extra}


def table_target(expr: str) -> dict[str, Any]:
    """An instant query shown as a table (info metrics: the labels are the data)."""
    return target(expr, legend="__auto", format="table", instant=True, range=False)


def thresholds(*steps: tuple[str, float | None]) -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


OK_FAILED = [
    {
        "type": "value",
        "options": {
            "0": {"text": "FAILED", "color": "red", "index": 0},
            "1": {"text": "OK", "color": "green", "index": 1},
        },
    }
]


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str = "short",
    *,
    decimals: int | None = None,
    stack: bool = False,
    min_zero: bool = True,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 10,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
        "color": {"mode": "palette-classic"},
    }
    if min_zero:
        defaults["min"] = 0
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "showLegend": True,
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["lastNotNull", "max"],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets,
    }


def stat(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str = "short",
    *,
    mappings: list[dict[str, Any]] | None = None,
    steps: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "mappings": mappings or [],
                "thresholds": steps or thresholds(("green", None)),
                "color": {"mode": "thresholds"},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
            "justifyMode": "auto",
            "orientation": "auto",
        },
        "targets": targets,
    }


def state_timeline(title: str, description: str, targets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "state-timeline",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {
                "mappings": OK_FAILED,
                "thresholds": thresholds(("red", None), ("green", 1)),
                "color": {"mode": "thresholds"},
                "custom": {"fillOpacity": 80, "lineWidth": 0},
            },
            "overrides": [],
        },
        "options": {
            "showValue": "never",
            "mergeValues": True,
            "rowHeight": 0.9,
            "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "single", "sort": "none"},
        },
        "targets": targets,
    }


def table(title: str, description: str, targets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {"showHeader": True, "cellHeight": "sm"},
        # Info metrics: only the labels matter; drop the constant value and the timestamp.
        "transformations": [
            {
                "id": "organize",
                "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}},
            }
        ],
        "targets": targets,
    }


def fleet_table(
    title: str, description: str, columns: list[tuple[str, str, dict[str, Any]]]
) -> dict[str, Any]:
    """One row per (job, instance, probe): each column is (header, instant query grouped by
    those labels, field config). The queries' frames are merged on the labels; Grafana names
    each value field "Value #<refId>", and place() gives the targets refIds A, B, C..."""
    values = [f"Value #{chr(ord('A') + index)}" for index in range(len(columns))]
    overrides = [
        {
            "matcher": {"id": "byName", "options": value},
            "properties": [
                {"id": key, "value": setting}
                for key, setting in {
                    "displayName": header,
                    "color": {"mode": "thresholds"},
                    "custom.cellOptions": {"type": "color-text"},
                    **config,
                }.items()
            ],
        }
        for value, (header, _, config) in zip(values, columns, strict=True)
    ]
    order = ["instance", "probe", *values, "job"]
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {}, "overrides": overrides},
        "options": {
            "showHeader": True,
            "cellHeight": "sm",
            "sortBy": [{"displayName": columns[0][0], "desc": False}],
        },
        "transformations": [
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "indexByName": {name: index for index, name in enumerate(order)},
                },
            },
        ],
        "targets": [table_target(expr) for _, expr, _ in columns],
    }


def bar_gauge(title: str, description: str, targets: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "fieldConfig": {
            "defaults": {
                "unit": "short",
                "decimals": 0,
                "min": 0,
                "thresholds": thresholds(("green", None), ("red", 1)),
                "color": {"mode": "thresholds"},
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "orientation": "horizontal",
            "displayMode": "basic",
            "showUnfilled": True,
        },
        "targets": targets,
    }


#: Rows of the fleet table: one per instance and probe.
FLEET_BY = "job, instance, probe"

#: Seconds since the last successful cycle, or -1 (shown as "never") for a probe that has not
#: succeeded since pqd started: it exports 0 then, which would read as 56 years.
SINCE_SUCCESS = (
    f"time() - ({probe_metric('pqd_last_cycle_success_timestamp_seconds')} > 0)\nor\n"
    f"({probe_metric('pqd_last_cycle_success_timestamp_seconds')} == 0) - 1"
)


def fleet_line() -> tuple[int, list[tuple[dict[str, Any], int]]]:
    """The Fleet row: which instance and probe is failing, for many hosts at once."""
    never = [{"type": "value", "options": {"-1": {"text": "never", "color": "red", "index": 0}}}]
    status = fleet_table(
        "Instances and probes",
        "One row per instance and probe, failing ones first: the last cycle's result "
        "(pqd_last_cycle_success), how long ago the last successful cycle ended (never: none "
        "since pqd started) and the failed cycles of the last hour.",
        [
            (
                "Last cycle",
                f"max by ({FLEET_BY}) ({probe_metric('pqd_last_cycle_success')})",
                {
                    "mappings": OK_FAILED,
                    "thresholds": thresholds(("red", None), ("green", 1)),
                    "custom.cellOptions": {"type": "color-background"},
                },
            ),
            (
                "Since last success",
                SINCE_SUCCESS,
                {
                    "unit": "s",
                    "mappings": never,
                    "thresholds": thresholds(("green", None), ("orange", 300), ("red", 3600)),
                },
            ),
            (
                "Failed cycles (1h)",
                f"sum by ({FLEET_BY}) (increase({probe_metric('pqd_cycle_failures_total')}[1h]))",
                {"decimals": 0, "thresholds": thresholds(("green", None), ("red", 1))},
            ),
        ],
    )
    top = bar_gauge(
        "Top 10 failing instances (1h)",
        "The instances with the most failed cycles over the last hour, all probes together "
        "(pqd_cycle_failures_total).",
        [
            target(
                "sort_desc(topk(10, sum by (instance) "
                f"(increase({probe_metric('pqd_cycle_failures_total')}[1h]))))",
                legend="{{instance}}",
                instant=True,
                range=False,
            )
        ],
    )
    return (10, [(status, 16), (top, 8)])


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


# Each entry: a row title, then lines of (panel, width); a line's panels share one height.
Layout = list[tuple[str, list[tuple[int, list[tuple[dict[str, Any], int]]]]]]


def overview_layout() -> Layout:
    return [
        ("Fleet: which instance and probe is failing?", [fleet_line()]),
        (
            "Are cycles succeeding?",
            [
                (
                    5,
                    [
                        (
                            stat(
                                "Last cycle",
                                "pqd_last_cycle_success of the most recent completed cycle of "
                                "each probe.",
                                [target(probe_metric("pqd_last_cycle_success"))],
                                mappings=OK_FAILED,
                                steps=thresholds(("red", None), ("green", 1)),
                            ),
                            6,
                        ),
                        (
                            stat(
                                "Since last successful cycle",
                                "How long ago the last successful cycle ended. Compare with the "
                                "probe's interval; PqdNoSuccessfulCycle fires at 3 intervals.",
                                # pqd exports 0 until a cycle has succeeded; "55 years ago"
                                # would bury the point, so that shows as no value instead.
                                [
                                    target(
                                        "time() - ("
                                        + probe_metric("pqd_last_cycle_success_timestamp_seconds")
                                        + " > 0)"
                                    )
                                ],
                                unit="s",
                                steps=thresholds(("green", None), ("orange", 300), ("red", 3600)),
                            ),
                            6,
                        ),
                        (
                            state_timeline(
                                "Cycle outcome over time",
                                "pqd_last_cycle_success as Prometheus scraped it: red stretches "
                                "are failed last cycles.",
                                [target(probe_metric("pqd_last_cycle_success"))],
                            ),
                            12,
                        ),
                    ],
                ),
                (
                    8,
                    [
                        (
                            timeseries(
                                "Failures per minute by reason",
                                "Why cycles fail (pqd_cycle_failures_total). timeout, "
                                "worker_died, manager_died, spawn_failed, job_error, leak, "
                                "helper_died (the probe's forkserver or resource tracker died "
                                "or stopped answering).",
                                [
                                    target(
                                        per_minute(
                                            "pqd_cycle_failures_total",
                                            by="instance, probe, reason",
                                        ),
                                        legend="{{reason}} {{probe}} @ {{instance}}",
                                    )
                                ],
                                unit="cpm",
                            ),
                            12,
                        ),
                        (
                            timeseries(
                                "Skipped cycles per minute by reason",
                                "overlap: a cycle was due while the previous one still ran; "
                                "missed: the scheduler was too late to run it.",
                                [
                                    target(
                                        per_minute(
                                            "pqd_cycles_skipped_total",
                                            by="instance, probe, reason",
                                        ),
                                        legend="{{reason}} {{probe}} @ {{instance}}",
                                    )
                                ],
                                unit="cpm",
                            ),
                            12,
                        ),
                    ],
                ),
                (
                    8,
                    [
                        (
                            timeseries(
                                "Cycles and jobs per minute",
                                "Cycles run, producer/consumer jobs completed and failed.",
                                [
                                    target(
                                        per_minute("pqd_cycles_total"),
                                        legend="cycles " + PROBE_LEGEND,
                                    ),
                                    target(
                                        per_minute("pqd_jobs_completed_total"),
                                        legend="jobs completed " + PROBE_LEGEND,
                                    ),
                                    target(
                                        per_minute("pqd_jobs_failed_total"),
                                        legend="jobs failed " + PROBE_LEGEND,
                                    ),
                                ],
                                unit="cpm",
                            ),
                            12,
                        ),
                        (
                            timeseries(
                                "Jobs completed in the last cycle",
                                "The job counter at the end of the last cycle: 2 x rounds when "
                                "every job finished (10 for the seed's probe).",
                                [target(probe_metric("pqd_last_cycle_jobs_completed"))],
                                decimals=0,
                            ),
                            12,
                        ),
                    ],
                ),
            ],
        ),
        (
            "Is the queue saturating?",
            [
                (
                    8,
                    [
                        (
                            timeseries(
                                "Queue depth vs capacity",
                                "Live depth (0 between cycles), the deepest it got in the last "
                                "cycle, and the queue's maxsize. PqdQueueSaturated fires when the "
                                "live depth averages over 80% of capacity for 10 minutes.",
                                [
                                    target(
                                        probe_metric("pqd_queue_depth"),
                                        legend="depth " + PROBE_LEGEND,
                                    ),
                                    target(
                                        probe_metric("pqd_last_cycle_queue_depth_max"),
                                        legend="max in last cycle " + PROBE_LEGEND,
                                    ),
                                    target(
                                        probe_metric("pqd_queue_capacity"),
                                        legend="capacity " + PROBE_LEGEND,
                                    ),
                                ],
                                decimals=0,
                            ),
                            8,
                        ),
                        (
                            timeseries(
                                "Full-queue events per cycle",
                                "queue.Full raised by producers: in the last cycle, and the mean "
                                "per cycle over the rate window. The seed's probe makes 10 by "
                                "design; a change means the probe or the host changed.",
                                [
                                    target(
                                        probe_metric("pqd_last_cycle_queue_full_events"),
                                        legend="last cycle " + PROBE_LEGEND,
                                    ),
                                    target(
                                        per_cycle("pqd_queue_full_events_total"),
                                        legend="mean per cycle " + PROBE_LEGEND,
                                    ),
                                ],
                            ),
                            8,
                        ),
                        (
                            timeseries(
                                "Queue operation latency",
                                "put_nowait/get_nowait durations measured in the workers: "
                                "p50 and p99 over the rate window.",
                                [
                                    target(
                                        quantile(
                                            q,
                                            "pqd_queue_operation_duration_seconds",
                                            by="instance, probe, operation",
                                        ),
                                        legend=f"p{round(q * 100)} {{{{operation}}}} "
                                        + PROBE_LEGEND,
                                    )
                                    for q in (0.5, 0.99)
                                ],
                                unit="s",
                            ),
                            8,
                        ),
                    ],
                ),
            ],
        ),
        (
            "Are workers coming up, are processes leaking?",
            [
                (
                    8,
                    [
                        (
                            timeseries(
                                "Pool workers: live vs configured",
                                "Pool worker processes alive now (0 between cycles) against the "
                                "pool size.",
                                [
                                    target(
                                        probe_metric("pqd_workers_live"),
                                        legend="live " + PROBE_LEGEND,
                                    ),
                                    target(
                                        probe_metric("pqd_workers_configured"),
                                        legend="configured " + PROBE_LEGEND,
                                    ),
                                ],
                                decimals=0,
                            ),
                            8,
                        ),
                        (
                            timeseries(
                                "Pid count delta and leaked processes per cycle",
                                "Host pid count after minus before the last cycle (other "
                                "processes on the host move it too) and pqd's own descendants "
                                "the cycle left behind (should be 0).",
                                [
                                    target(
                                        probe_metric("pqd_last_cycle_pid_count_delta"),
                                        legend="pid delta " + PROBE_LEGEND,
                                    ),
                                    target(
                                        probe_metric("pqd_last_cycle_leaked_processes"),
                                        legend="leaked " + PROBE_LEGEND,
                                    ),
                                ],
                                decimals=0,
                                min_zero=False,
                            ),
                            8,
                        ),
                        (
                            timeseries(
                                "Host pid count",
                                "Processes on the host at pqd's last sample.",
                                [target(probe_metric("pqd_host_pid_count"))],
                                decimals=0,
                            ),
                            8,
                        ),
                    ],
                ),
            ],
        ),
        (
            "How long do cycles take, and what do they cost?",
            [
                (
                    8,
                    [
                        (
                            timeseries(
                                "Cycle duration",
                                "Percentiles of pqd_cycle_duration_seconds over the rate window, "
                                "and the last cycle's wall time. The points are exemplars: single "
                                "cycles, each with its cycle_id and a link to its page on its pqd "
                                "(Prometheus needs --enable-feature=exemplar-storage).",
                                [
                                    *(
                                        target(
                                            quantile(q, "pqd_cycle_duration_seconds"),
                                            legend=f"p{round(q * 100)} {PROBE_LEGEND}",
                                            # Once: every percentile reads the same buckets.
                                            **({"exemplar": True} if q == 0.5 else {}),
                                        )
                                        for q in (0.5, 0.9, 0.99)
                                    ),
                                    target(
                                        probe_metric("pqd_last_cycle_duration_seconds"),
                                        legend="last " + PROBE_LEGEND,
                                    ),
                                ],
                                unit="s",
                            ),
                            12,
                        ),
                        (
                            timeseries(
                                "Phase duration",
                                "p50 and p90 of pool_start, jobs and teardown.",
                                [
                                    target(
                                        quantile(
                                            q,
                                            "pqd_phase_duration_seconds",
                                            by="instance, probe, phase",
                                        ),
                                        legend=f"p{round(q * 100)} {{{{phase}}}} " + PROBE_LEGEND,
                                    )
                                    for q in (0.5, 0.9)
                                ],
                                unit="s",
                            ),
                            12,
                        ),
                    ],
                ),
                (
                    8,
                    [
                        (
                            timeseries(
                                "Cycle cost: CPU per cycle",
                                "CPU time (user + system) of the probe's whole process tree in "
                                "a cycle: runner, Manager, pool workers and helpers. The last "
                                "cycle's, and the mean per cycle over the rate window.",
                                [
                                    target(
                                        probe_metric("pqd_last_cycle_cpu_seconds"),
                                        legend="last cycle " + PROBE_LEGEND,
                                    ),
                                    target(
                                        per_cycle("pqd_cycle_cpu_seconds_total"),
                                        legend="mean per cycle " + PROBE_LEGEND,
                                    ),
                                ],
                                unit="s",
                            ),
                            8,
                        ),
                        (
                            timeseries(
                                "Cycle cost: CPU share",
                                "CPU the probe's process trees use, averaged over time "
                                "(rate of pqd_cycle_cpu_seconds_total): what probing costs the "
                                "host. 100% is one core.",
                                [
                                    target(
                                        "sum by (instance, probe) "
                                        f"(rate({probe_metric('pqd_cycle_cpu_seconds_total')}"
                                        f"[{RATE_INTERVAL}]))"
                                    )
                                ],
                                unit="percentunit",
                            ),
                            8,
                        ),
                        (
                            timeseries(
                                "Cycle cost: peak RSS",
                                "Peak resident memory of the largest process of the last cycle "
                                "(pqd_last_cycle_max_rss_bytes).",
                                [target(probe_metric("pqd_last_cycle_max_rss_bytes"))],
                                unit="bytes",
                            ),
                            8,
                        ),
                    ],
                ),
            ],
        ),
        (
            "pqd itself",
            [
                (
                    7,
                    [
                        (
                            timeseries(
                                "CPU",
                                "CPU time of pqd's main process; 100% is one core. The probes' "
                                "runners and pools are separate processes: see Cycle cost.",
                                [
                                    target(
                                        f"rate({instance_metric('process_cpu_seconds_total')}"
                                        f"[{RATE_INTERVAL}])",
                                        legend="{{instance}}",
                                    )
                                ],
                                unit="percentunit",
                            ),
                            6,
                        ),
                        (
                            timeseries(
                                "Memory",
                                "Resident memory of pqd's main process. The probes' processes "
                                "are separate: see Cycle cost: peak RSS.",
                                [
                                    target(
                                        instance_metric("process_resident_memory_bytes"),
                                        legend="{{instance}}",
                                    )
                                ],
                                unit="bytes",
                            ),
                            6,
                        ),
                        (
                            timeseries(
                                "Open file descriptors",
                                "A failed cycle must leave no file descriptor behind: this "
                                "should stay flat.",
                                [
                                    target(
                                        instance_metric("process_open_fds"),
                                        legend="{{instance}}",
                                    )
                                ],
                                decimals=0,
                            ),
                            6,
                        ),
                        (
                            stat(
                                "Last config reload",
                                "Whether the last reload (SIGHUP or POST /-/reload) was "
                                "accepted. A refused one keeps the old config running.",
                                [
                                    target(
                                        instance_metric("pqd_config_last_reload_successful"),
                                        legend="{{instance}}",
                                    )
                                ],
                                mappings=OK_FAILED,
                                steps=thresholds(("red", None), ("green", 1)),
                            ),
                            3,
                        ),
                        (
                            stat(
                                "Last successful reload",
                                "When the configuration was last loaded successfully.",
                                [
                                    target(
                                        instance_metric(
                                            "pqd_config_last_reload_success_timestamp_seconds"
                                        )
                                        + " * 1000",
                                        legend="{{instance}}",
                                    )
                                ],
                                unit="dateTimeFromNow",
                            ),
                            3,
                        ),
                    ],
                ),
                (
                    6,
                    [
                        (
                            table(
                                "Build",
                                "pqd and Python versions per instance.",
                                [table_target(instance_metric("pqd_build_info"))],
                            ),
                            12,
                        ),
                        (
                            table(
                                "Probes",
                                "Configured probes: start method, and containment: cgroup (each "
                                "probe's runner in its own child cgroup of pqd's) or subreaper "
                                "(no writable cgroup; the runner collects its orphans).",
                                [table_target(probe_metric("pqd_probe_info"))],
                            ),
                            12,
                        ),
                    ],
                ),
            ],
        ),
    ]


def place(layout: Layout) -> list[dict[str, Any]]:
    """Give every panel an id, a gridPos and refIds, top to bottom."""
    panels: list[dict[str, Any]] = []
    y = 0
    for title, lines in layout:
        panels.append({**row(title), "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}})
        y += 1
        for height, line in lines:
            x = 0
            for panel, width in line:
                for index, tgt in enumerate(panel.get("targets", [])):
                    tgt["refId"] = chr(ord("A") + index)
                panels.append({**panel, "gridPos": {"h": height, "w": width, "x": x, "y": y}})
                x += width
            if x != 24:
                raise ValueError(f"row {title!r}: a line is {x} columns wide, not 24")
            y += height
    for panel_id, panel in enumerate(panels, start=1):
        panel["id"] = panel_id
    return panels


def query_variable(name: str, label: str, metric: str, selector: str) -> dict[str, Any]:
    """A multi-value variable from label_values(); "All" becomes the regex .+ rather than a
    list of every value, which keeps queries short on a big fleet."""
    definition = f"label_values({metric}{selector}, {name})"
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "definition": definition,
        "query": {"query": definition, "refId": f"{name}-variable"},
        "refresh": 2,
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".+",
        "current": {},
        "options": [],
        "hide": 0,
    }


def overview() -> dict[str, Any]:
    return {
        "uid": "pqd-overview",
        "title": "pqd / Overview",
        "description": (
            "Python multiprocessing health as pqd's probe cycles see it: outcomes, queue, "
            "workers, leaks, durations, and pqd itself."
        ),
        "tags": ["pqd", "multiprocessing"],
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "schemaVersion": 39,
        "version": 1,
        "links": [],
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                },
                {
                    "name": "Failed cycles",
                    "datasource": DATASOURCE,
                    "enable": True,
                    "hide": False,
                    "iconColor": "red",
                    "expr": (
                        "sum by (instance, probe, reason) "
                        f"(increase({probe_metric('pqd_cycle_failures_total')}"
                        f"[{RATE_INTERVAL}])) > 0"
                    ),
                    "step": "1m",
                    "titleFormat": "Cycle failed: {{reason}}",
                    "textFormat": "probe {{probe}} on {{instance}}",
                    "tagKeys": "probe,reason",
                    "useValueForTime": False,
                },
            ]
        },
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Data source",
                    "query": "prometheus",
                    "regex": "",
                    "current": {},
                    "options": [],
                    "refresh": 1,
                    "hide": 0,
                },
                query_variable("job", "Job", "pqd_build_info", ""),
                query_variable("instance", "Instance", "pqd_build_info", JOB_SELECTOR),
                query_variable("probe", "Probe", "pqd_probe_info", INSTANCE_SELECTOR),
            ]
        },
        "panels": place(overview_layout()),
    }


#: File name -> dashboard. The file name is the uid, so both stay stable together.
DASHBOARDS = {"pqd-overview.json": overview}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if a committed dashboard differs"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = DASHBOARD_DIR / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        for path in stale:
            print(f"{path} differs from what grafana/generate.py produces", file=sys.stderr)
        print("run: python3 grafana/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
