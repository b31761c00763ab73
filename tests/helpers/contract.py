"""docs/design.md §2's metric names, in one place for every test that checks them: the daemon's
exposition, the metrics writer, and the dashboards' and alerts' queries."""

from __future__ import annotations

#: docs/design.md §2: the metric names are a contract shared by the daemon, dashboards and alerts. A
#: query that names anything else is a typo or an invented metric and would silently be empty.
CONTRACT_GAUGES = frozenset(
    {
        "pqd_queue_depth",
        "pqd_workers_live",
        "pqd_queue_capacity",
        "pqd_workers_configured",
        "pqd_last_cycle_success",
        "pqd_last_cycle_queue_full_events",
        "pqd_last_cycle_jobs_completed",
        "pqd_last_cycle_queue_depth_max",
        "pqd_last_cycle_pid_count_delta",
        "pqd_last_cycle_leaked_processes",
        "pqd_last_cycle_duration_seconds",
        "pqd_last_cycle_cpu_seconds",
        "pqd_last_cycle_max_rss_bytes",
        "pqd_last_cycle_timestamp_seconds",
        "pqd_last_cycle_success_timestamp_seconds",
        "pqd_host_pid_count",
        # Headroom (docs/design.md §2).
        "pqd_shm_size_bytes",
        "pqd_shm_available_bytes",
        "pqd_shm_objects",
        "pqd_shared_memory_bytes",
        "pqd_last_cycle_leaked_shm_objects",
        "pqd_pids_limit",
        "pqd_pids_current",
        "pqd_memory_limit_bytes",
        "pqd_memory_usage_bytes",
        "pqd_open_files_limit",
        "pqd_last_cycle_max_open_files",
        "pqd_cpu_quota_cores",
        "pqd_cpu_count",
        "pqd_tmpdir_usable",
    }
)
CONTRACT_COUNTERS = frozenset(
    {
        "pqd_cycles_total",
        "pqd_cycle_failures_total",
        "pqd_cycles_skipped_total",
        "pqd_jobs_completed_total",
        "pqd_jobs_failed_total",
        "pqd_queue_full_events_total",
        "pqd_cycle_cpu_seconds_total",
        "pqd_cycle_failure_causes_total",
        "pqd_cycle_warnings_total",
    }
)
#: State sets (prometheus_client's Enum): one series per state, the state in a label named
#: after the family.
CONTRACT_STATESETS = frozenset({"pqd_last_cycle_cause"})
CONTRACT_HISTOGRAMS = frozenset(
    {
        "pqd_cycle_duration_seconds",
        "pqd_phase_duration_seconds",
        "pqd_queue_operation_duration_seconds",
    }
)
#: Series without a `probe` label.
CONTRACT_UNPROBED = frozenset(
    {
        "pqd_build_info",
        "pqd_config_last_reload_successful",
        "pqd_config_last_reload_success_timestamp_seconds",
    }
)
#: Every family in docs/design.md §2 (counters as exposed, with _total), in the design's order.
DESIGN_FAMILIES = (
    *sorted(CONTRACT_GAUGES),
    *sorted(CONTRACT_COUNTERS),
    *sorted(CONTRACT_HISTOGRAMS),
    *sorted(CONTRACT_STATESETS),
    "pqd_build_info",
    "pqd_probe_info",
    "pqd_config_last_reload_successful",
    "pqd_config_last_reload_success_timestamp_seconds",
)
