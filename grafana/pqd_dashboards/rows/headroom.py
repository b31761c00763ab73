"""Headroom: how close each probe is to the limits that break multiprocessing, as its runner
reads them when a cycle begins (docs/design.md §2, "Headroom"), worst first."""

from __future__ import annotations

from grafana_foundation_sdk.builders import table, timeseries
from grafana_foundation_sdk.models.dashboard import ValueMap, ValueMappingResult

from pqd_dashboards.layout import DashboardRow, Line
from pqd_dashboards.panels import FleetColumn, fleet_table, query, thresholds, timeseries_panel
from pqd_dashboards.queries import FLEET_BY, PROBE_LEGEND, probe_metric


def _ratio(used: str, limit: str) -> str:
    """used / limit per probe; a limit of 0 (start-up, before any reading) gives no value."""
    return (
        f"max by ({FLEET_BY}) ({probe_metric(used)})\n/ on ({FLEET_BY})\n"
        f"max by ({FLEET_BY}) ({probe_metric(limit)} > 0)"
    )


#: Each resource as used / limit, by the `resource` label the worst-first column compares.
USE = {
    "shm": f"1 - ({_ratio('pqd_shm_available_bytes', 'pqd_shm_size_bytes')})",
    "pids": _ratio("pqd_pids_current", "pqd_pids_limit"),
    "memory": _ratio("pqd_memory_usage_bytes", "pqd_memory_limit_bytes"),
    "open files": _ratio("pqd_last_cycle_max_open_files", "pqd_open_files_limit"),
}
WORKERS_PER_CPU = _ratio("pqd_cpu_count", "pqd_cpu_quota_cores")

#: The alerts' thresholds (deploy/prometheus/pqd-alerts.yml): orange a little before, red at.
NEAR = thresholds(("green", None), ("orange", 0.8), ("red", 0.9)).build()
USABLE = ValueMap(
    {
        "0": ValueMappingResult(text="NOT usable", color="red", index=0),
        "1": ValueMappingResult(text="usable", color="green", index=1),
    }
)


def worst_use() -> str:
    tagged = "\nor\n".join(
        f'label_replace({expr}, "resource", "{name}", "", "")' for name, expr in USE.items()
    )
    return f"max by ({FLEET_BY}) (\n{tagged}\n)"


def headroom_table() -> table.Panel:
    percent = {"unit": "percentunit", "decimals": 1, "thresholds": NEAR}
    columns = [
        FleetColumn("Worst use", worst_use(), percent),
        *(FleetColumn(name, expr, percent) for name, expr in USE.items()),
        FleetColumn(
            "Pool() workers per CPU",
            WORKERS_PER_CPU,
            {"decimals": 1, "thresholds": thresholds(("green", None), ("orange", 2.01)).build()},
        ),
        FleetColumn(
            "temp dir",
            f"max by ({FLEET_BY}) ({probe_metric('pqd_tmpdir_usable')})",
            {"mappings": [USABLE], "thresholds": thresholds(("red", None), ("green", 1)).build()},
        ),
        FleetColumn(
            "left in /dev/shm",
            f"max by ({FLEET_BY}) ({probe_metric('pqd_last_cycle_leaked_shm_objects')})",
            {"decimals": 0, "thresholds": thresholds(("green", None), ("red", 1)).build()},
        ),
    ]
    return fleet_table(
        "Headroom, worst first",
        "How much of each limit a probe uses, as its runner reads it when a cycle begins, from "
        "the probe's own cgroup, rlimits and /dev/shm: /dev/shm used of its size, tasks of the "
        "pids limit, memory of the memory limit, the most descriptors one process of the last "
        "cycle held of RLIMIT_NOFILE. Where nothing sets a limit it is the kernel's or the "
        "host's. Also the workers Pool() would start per CPU of the quota (over 2: "
        "oversubscribed), whether multiprocessing's sockets fit the temp dir, and the /dev/shm "
        "objects the last cycle left. The probe's page shows where each limit comes from.",
        columns,
        descending=True,
    )


def use_over_time() -> timeseries.Panel:
    return timeseries_panel(
        "Use of each limit",
        "used / limit of /dev/shm, pids, memory and open files per probe, read as each cycle "
        "begins. The alerts fire at 90% (pids, memory), 80% (open files) and 10% free "
        "(/dev/shm).",
        [query(expr, legend=f"{name} {PROBE_LEGEND}") for name, expr in USE.items()],
        unit="percentunit",
    )


def shm_objects() -> timeseries.Panel:
    return timeseries_panel(
        "/dev/shm entries",
        "Entries in /dev/shm as the probe sees it (pqd_shm_objects), and the named semaphores "
        "and shared-memory blocks the last cycle left there (pqd_last_cycle_leaked_shm_objects)."
        " Entries that only grow fill it up.",
        [
            query(probe_metric(metric), legend=f"{what} {PROBE_LEGEND}")
            for metric, what in (
                ("pqd_shm_objects", "entries"),
                ("pqd_last_cycle_leaked_shm_objects", "left by the last cycle"),
            )
        ],
        decimals=0,
    )


def pool_size() -> timeseries.Panel:
    return timeseries_panel(
        "Pool() size and CPU quota",
        "What Pool() without a size would start in the probe's interpreter (pqd_cpu_count: "
        "os.process_cpu_count() from Python 3.13, os.cpu_count() before) and the CPUs its "
        "cgroup quota allows (pqd_cpu_quota_cores; the runner's CPUs without a quota).",
        [
            query(probe_metric("pqd_cpu_count"), legend="Pool() workers " + PROBE_LEGEND),
            query(probe_metric("pqd_cpu_quota_cores"), legend="CPU quota " + PROBE_LEGEND),
        ],
    )


def headroom_row() -> DashboardRow:
    return DashboardRow(
        "Headroom: how close is each probe to the limits that break multiprocessing?",
        [
            Line(9, [headroom_table().span(24)]),
            Line(8, [use_over_time().span(10), shm_objects().span(7), pool_size().span(7)]),
        ],
    )
