"""Unit tests for pqd.metrics.writer: exact exposition text on a fresh registry, no processes."""

# The expected exposition below is compared byte for byte, and some HELP lines are longer than
# the line limit; wrapping them would change the text under test.
# ruff: noqa: E501

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import threading
from collections import Counter as Tally
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.parser import text_string_to_metric_families

from pqd.bounds import OPERATION_BUCKETS
from pqd.metrics.series import DURATION_BUCKETS, SKIP_REASONS, ProbeFacts
from pqd.metrics.writer import PqdMetrics, write_textfile
from pqd.results import FAILURE_REASONS, PHASES, CycleResult, LiveSample
from tests.helpers.contract import DESIGN_FAMILIES
from tests.helpers.factories import PUT_SECONDS, START, job, seed_jobs, seed_shaped_result
from tests.helpers.waiting import run_threads

DEFAULT = ProbeFacts(
    name="default",
    start_method="forkserver",
    workers=4,
    queue_maxsize=3,
    python_implementation="cpython",
    python_version="3.11.7",
)


# --- factories --------------------------------------------------------------------------------


def cycle(**overrides: Any) -> CycleResult:
    """The default probe's successful cycle: 10 jobs, 10 full events, max depth 3, no leak."""
    fields: dict[str, Any] = dict(
        started_at=START + 99.125,
        ended_at=START + 100.0,
        duration_seconds=0.875,
        jobs=seed_jobs(),
    )
    return seed_shaped_result(**{**fields, **overrides})


def worker_died(**overrides: Any) -> CycleResult:
    """A cycle in which a pool worker died during round 2's consumer: teardown never timed."""
    fields: dict[str, Any] = dict(
        cycle_id="c-0002",
        ended_at=START + 200.0,
        started_at=START + 198.0,
        duration_seconds=2.0,
        success=False,
        reason="worker_died",
        detail="pool worker 1004 died (SIGKILL) during consumer round 2",
        cause="killed",
        cause_detail="pool worker pid 1004 was killed by signal 9 with no OOM kill recorded",
        warnings={"tracker_relaunched": 1, "other": 0},
        jobs_completed=3,
        jobs_failed=1,
        queue_full_events=4,
        items_put=6,
        items_got=3,
        host_pid_count_after=203,
        phase_seconds={"pool_start": 0.125, "jobs": 1.75},
        jobs=seed_jobs(2)[:3],
    )
    fields.update(overrides)
    return cycle(**fields)


def make(
    *probes: ProbeFacts, registry: CollectorRegistry | None = None
) -> tuple[PqdMetrics, CollectorRegistry]:
    registry = CollectorRegistry() if registry is None else registry
    metrics = PqdMetrics(
        registry, version="1.2.3", probes=probes or (DEFAULT,), clock=lambda: START
    )
    return metrics, registry


# --- exposition helpers -----------------------------------------------------------------------


def family_name(line: str) -> str:
    if line.startswith("#"):
        return line.split()[2]
    return re.split(r"[{ ]", line, maxsplit=1)[0]


def pqd_text(registry: CollectorRegistry) -> str:
    """The pqd_ part of the exposition, without the _created series (wall-clock values)."""
    lines = generate_latest(registry).decode().splitlines()
    kept = [
        line
        for line in lines
        if family_name(line).startswith("pqd_") and not family_name(line).endswith("_created")
    ]
    return "\n".join(kept) + "\n"


def with_values(text: str, changes: dict[str, str]) -> str:
    """``text`` with the value of each named sample replaced; every sample must exist once."""
    lines = text.splitlines()
    for series, value in changes.items():
        hits = [i for i, line in enumerate(lines) if line.rsplit(" ", 1)[0] == series]
        assert len(hits) == 1, f"{series} occurs {len(hits)} times"
        lines[hits[0]] = f"{series} {value}"
    return "\n".join(lines) + "\n"


def exposed_name(family: Metric) -> str:
    """The name as written in the exposition: the parser drops a counter's _total."""
    return family.name + "_total" if family.type == "counter" else family.name


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


STARTUP = """\
# HELP pqd_build_info pqd build information; the value is always 1.
# TYPE pqd_build_info gauge
pqd_build_info{python_version="{PY}",version="1.2.3"} 1.0
# HELP pqd_probe_info Configuration of a probe; the value is always 1.
# TYPE pqd_probe_info gauge
pqd_probe_info{containment="subreaper",probe="default",python_implementation="cpython",python_version="3.11.7",start_method="forkserver"} 1.0
# HELP pqd_queue_depth Items in the probe's queue now, sampled after each job (0 between cycles).
# TYPE pqd_queue_depth gauge
pqd_queue_depth{probe="default"} 0.0
# HELP pqd_workers_live Pool worker processes alive now, sampled after each job (0 between cycles).
# TYPE pqd_workers_live gauge
pqd_workers_live{probe="default"} 0.0
# HELP pqd_queue_capacity Maxsize of the probe's queue in the running configuration
# TYPE pqd_queue_capacity gauge
pqd_queue_capacity{probe="default"} 3.0
# HELP pqd_workers_configured Pool size of the probe in the running configuration
# TYPE pqd_workers_configured gauge
pqd_workers_configured{probe="default"} 4.0
# HELP pqd_last_cycle_success 1 if the cycle succeeded, 0 if it failed or none has completed yet (value from the most recent completed cycle)
# TYPE pqd_last_cycle_success gauge
pqd_last_cycle_success{probe="default"} 0.0
# HELP pqd_last_cycle_queue_full_events Full-queue events (queue.Full from put_nowait) in the cycle (value from the most recent completed cycle)
# TYPE pqd_last_cycle_queue_full_events gauge
pqd_last_cycle_queue_full_events{probe="default"} 0.0
# HELP pqd_last_cycle_jobs_completed The job counter at the end of the cycle (value from the most recent completed cycle)
# TYPE pqd_last_cycle_jobs_completed gauge
pqd_last_cycle_jobs_completed{probe="default"} 0.0
# HELP pqd_last_cycle_queue_depth_max Deepest the probe's queue got during the cycle (value from the most recent completed cycle)
# TYPE pqd_last_cycle_queue_depth_max gauge
pqd_last_cycle_queue_depth_max{probe="default"} 0.0
# HELP pqd_last_cycle_pid_count_delta Host pid count after the cycle minus before it (value from the most recent completed cycle)
# TYPE pqd_last_cycle_pid_count_delta gauge
pqd_last_cycle_pid_count_delta{probe="default"} 0.0
# HELP pqd_last_cycle_leaked_processes Descendant processes the cycle left behind (value from the most recent completed cycle)
# TYPE pqd_last_cycle_leaked_processes gauge
pqd_last_cycle_leaked_processes{probe="default"} 0.0
# HELP pqd_last_cycle_duration_seconds Wall time of the cycle in seconds (value from the most recent completed cycle)
# TYPE pqd_last_cycle_duration_seconds gauge
pqd_last_cycle_duration_seconds{probe="default"} 0.0
# HELP pqd_last_cycle_cpu_seconds CPU time (user + system) of the probe's whole process tree in the cycle, in seconds (value from the most recent completed cycle)
# TYPE pqd_last_cycle_cpu_seconds gauge
pqd_last_cycle_cpu_seconds{probe="default"} 0.0
# HELP pqd_last_cycle_max_rss_bytes Peak resident set size of the largest process of the cycle, in bytes (value from the most recent completed cycle)
# TYPE pqd_last_cycle_max_rss_bytes gauge
pqd_last_cycle_max_rss_bytes{probe="default"} 0.0
# HELP pqd_last_cycle_timestamp_seconds Unix time the cycle ended, 0 before the first (value from the most recent completed cycle)
# TYPE pqd_last_cycle_timestamp_seconds gauge
pqd_last_cycle_timestamp_seconds{probe="default"} 0.0
# HELP pqd_last_cycle_success_timestamp_seconds Unix time the last successful cycle ended, 0 before the first (value from the most recent successful cycle)
# TYPE pqd_last_cycle_success_timestamp_seconds gauge
pqd_last_cycle_success_timestamp_seconds{probe="default"} 0.0
# HELP pqd_last_cycle_cause What on the host made the cycle fail; none if it succeeded (value from the most recent completed cycle)
# TYPE pqd_last_cycle_cause gauge
pqd_last_cycle_cause{pqd_last_cycle_cause="none",probe="default"} 1.0
pqd_last_cycle_cause{pqd_last_cycle_cause="shm_full",probe="default"} 0.0
pqd_last_cycle_cause{pqd_last_cycle_cause="shm_unavailable",probe="default"} 0.0
pqd_last_cycle_cause{pqd_last_cycle_cause="semaphore_removed",probe="default"} 0.0
pqd_last_cycle_cause{pqd_last_cycle_cause="process_limit",probe="default"} 0.0
pqd_last_cycle_cause{pqd_last_cycle_cause="open_files_limit",probe="default"} 0.0
pqd_last_cycle_cause{pqd_last_cycle_cause="memory_limit",probe="default"} 0.0
pqd_last_cycle_cause{pqd_last_cycle_cause="tmpdir_unusable",probe="default"} 0.0
pqd_last_cycle_cause{pqd_last_cycle_cause="unpicklable",probe="default"} 0.0
pqd_last_cycle_cause{pqd_last_cycle_cause="crashed",probe="default"} 0.0
pqd_last_cycle_cause{pqd_last_cycle_cause="killed",probe="default"} 0.0
pqd_last_cycle_cause{pqd_last_cycle_cause="stopped",probe="default"} 0.0
pqd_last_cycle_cause{pqd_last_cycle_cause="uninterruptible",probe="default"} 0.0
pqd_last_cycle_cause{pqd_last_cycle_cause="unknown",probe="default"} 0.0
# HELP pqd_host_pid_count Host pid count sampled at the end of the cycle (value from the most recent completed cycle)
# TYPE pqd_host_pid_count untyped
pqd_host_pid_count{probe="default"} 0.0
# HELP pqd_shm_size_bytes Size of /dev/shm in the probe's mount namespace in bytes, 0 if absent (read by the probe's runner as the most recent completed cycle began)
# TYPE pqd_shm_size_bytes gauge
pqd_shm_size_bytes{probe="default"} 0.0
# HELP pqd_shm_available_bytes Bytes of /dev/shm the probe can still write, 0 if absent, read-only or not writable (read by the probe's runner as the most recent completed cycle began)
# TYPE pqd_shm_available_bytes gauge
pqd_shm_available_bytes{probe="default"} 0.0
# HELP pqd_shm_objects Entries in /dev/shm (read by the probe's runner as the most recent completed cycle began)
# TYPE pqd_shm_objects gauge
pqd_shm_objects{probe="default"} 0.0
# HELP pqd_shared_memory_bytes Size of the probe's shared-memory block in bytes, 0 without a shared-memory phase, in the running configuration
# TYPE pqd_shared_memory_bytes gauge
pqd_shared_memory_bytes{probe="default"} 0.0
# HELP pqd_last_cycle_leaked_shm_objects Named semaphores and shared-memory blocks the cycle left in /dev/shm (value from the most recent completed cycle)
# TYPE pqd_last_cycle_leaked_shm_objects gauge
pqd_last_cycle_leaked_shm_objects{probe="default"} 0.0
# HELP pqd_pids_limit Tightest pids limit of the probe's cgroup ancestry, else the kernel's (min of kernel.pid_max and kernel.threads-max) (read by the probe's runner as the most recent completed cycle began)
# TYPE pqd_pids_limit gauge
pqd_pids_limit{probe="default"} 0.0
# HELP pqd_pids_current Tasks counted against pqd_pids_limit: that cgroup's pids.current, else every task on the host (read by the probe's runner as the most recent completed cycle began)
# TYPE pqd_pids_current gauge
pqd_pids_current{probe="default"} 0.0
# HELP pqd_memory_limit_bytes Tightest memory limit of the probe's cgroup ancestry in bytes, else the host's MemTotal (read by the probe's runner as the most recent completed cycle began)
# TYPE pqd_memory_limit_bytes gauge
pqd_memory_limit_bytes{probe="default"} 0.0
# HELP pqd_memory_usage_bytes Memory counted against pqd_memory_limit_bytes in bytes: that cgroup's usage, else the host's MemTotal - MemAvailable (read by the probe's runner as the most recent completed cycle began)
# TYPE pqd_memory_usage_bytes gauge
pqd_memory_usage_bytes{probe="default"} 0.0
# HELP pqd_open_files_limit Soft RLIMIT_NOFILE of the probe's runner (fs.nr_open if unlimited) (read by the probe's runner as the most recent completed cycle began)
# TYPE pqd_open_files_limit gauge
pqd_open_files_limit{probe="default"} 0.0
# HELP pqd_last_cycle_max_open_files Most file descriptors one process of the cycle held (value from the most recent completed cycle)
# TYPE pqd_last_cycle_max_open_files gauge
pqd_last_cycle_max_open_files{probe="default"} 0.0
# HELP pqd_cpu_quota_cores CPUs the probe may use: the tightest CPU quota of its cgroup ancestry, else the CPUs of its runner's affinity mask (read by the probe's runner as the most recent completed cycle began)
# TYPE pqd_cpu_quota_cores gauge
pqd_cpu_quota_cores{probe="default"} 0.0
# HELP pqd_cpu_count Workers Pool() starts without a size in the probe's interpreter (os.process_cpu_count() from Python 3.13, os.cpu_count() before) (read by the probe's runner as the most recent completed cycle began)
# TYPE pqd_cpu_count untyped
pqd_cpu_count{probe="default"} 0.0
# HELP pqd_tmpdir_usable 1 if multiprocessing's AF_UNIX sockets can be created in the probe's temp dir, else 0 (read by the probe's runner as the most recent completed cycle began)
# TYPE pqd_tmpdir_usable gauge
pqd_tmpdir_usable{probe="default"} 0.0
# HELP pqd_cycles_total Cycles completed, successful or not.
# TYPE pqd_cycles_total counter
pqd_cycles_total{probe="default"} 0.0
# HELP pqd_cycle_failures_total Cycles that failed, by reason.
# TYPE pqd_cycle_failures_total counter
pqd_cycle_failures_total{probe="default",reason="timeout"} 0.0
pqd_cycle_failures_total{probe="default",reason="worker_died"} 0.0
pqd_cycle_failures_total{probe="default",reason="manager_died"} 0.0
pqd_cycle_failures_total{probe="default",reason="spawn_failed"} 0.0
pqd_cycle_failures_total{probe="default",reason="job_error"} 0.0
pqd_cycle_failures_total{probe="default",reason="leak"} 0.0
pqd_cycle_failures_total{probe="default",reason="helper_died"} 0.0
# HELP pqd_cycle_failure_causes_total Cycles that failed, by cause: what on the host made them fail (docs/design.md §1).
# TYPE pqd_cycle_failure_causes_total counter
pqd_cycle_failure_causes_total{cause="shm_full",probe="default"} 0.0
pqd_cycle_failure_causes_total{cause="shm_unavailable",probe="default"} 0.0
pqd_cycle_failure_causes_total{cause="semaphore_removed",probe="default"} 0.0
pqd_cycle_failure_causes_total{cause="process_limit",probe="default"} 0.0
pqd_cycle_failure_causes_total{cause="open_files_limit",probe="default"} 0.0
pqd_cycle_failure_causes_total{cause="memory_limit",probe="default"} 0.0
pqd_cycle_failure_causes_total{cause="tmpdir_unusable",probe="default"} 0.0
pqd_cycle_failure_causes_total{cause="unpicklable",probe="default"} 0.0
pqd_cycle_failure_causes_total{cause="crashed",probe="default"} 0.0
pqd_cycle_failure_causes_total{cause="killed",probe="default"} 0.0
pqd_cycle_failure_causes_total{cause="stopped",probe="default"} 0.0
pqd_cycle_failure_causes_total{cause="uninterruptible",probe="default"} 0.0
pqd_cycle_failure_causes_total{cause="unknown",probe="default"} 0.0
# HELP pqd_cycle_warnings_total Warnings raised in the probe's process tree during cycles, by category.
# TYPE pqd_cycle_warnings_total counter
pqd_cycle_warnings_total{category="leaked_objects",probe="default"} 0.0
pqd_cycle_warnings_total{category="tracker_relaunched",probe="default"} 0.0
pqd_cycle_warnings_total{category="fork_with_threads",probe="default"} 0.0
pqd_cycle_warnings_total{category="resource_warning",probe="default"} 0.0
pqd_cycle_warnings_total{category="semaphore_removed",probe="default"} 0.0
pqd_cycle_warnings_total{category="other",probe="default"} 0.0
# HELP pqd_cycles_skipped_total Due cycles that did not run, by reason: overlap (the previous cycle of the probe still ran) or missed (the scheduler missed the run time).
# TYPE pqd_cycles_skipped_total counter
pqd_cycles_skipped_total{probe="default",reason="overlap"} 0.0
pqd_cycles_skipped_total{probe="default",reason="missed"} 0.0
# HELP pqd_jobs_completed_total Producer and consumer jobs completed.
# TYPE pqd_jobs_completed_total counter
pqd_jobs_completed_total{probe="default"} 0.0
# HELP pqd_jobs_failed_total Producer and consumer jobs failed.
# TYPE pqd_jobs_failed_total counter
pqd_jobs_failed_total{probe="default"} 0.0
# HELP pqd_queue_full_events_total Full-queue events (queue.Full from put_nowait).
# TYPE pqd_queue_full_events_total counter
pqd_queue_full_events_total{probe="default"} 0.0
# HELP pqd_cycle_cpu_seconds_total CPU time (user + system) of the probe's whole process tree, summed over cycles, in seconds.
# TYPE pqd_cycle_cpu_seconds_total counter
pqd_cycle_cpu_seconds_total{probe="default"} 0.0
# HELP pqd_cycle_duration_seconds Wall time of cycles in seconds.
# TYPE pqd_cycle_duration_seconds histogram
pqd_cycle_duration_seconds_bucket{le="0.05",probe="default"} 0.0
pqd_cycle_duration_seconds_bucket{le="0.1",probe="default"} 0.0
pqd_cycle_duration_seconds_bucket{le="0.25",probe="default"} 0.0
pqd_cycle_duration_seconds_bucket{le="0.5",probe="default"} 0.0
pqd_cycle_duration_seconds_bucket{le="1.0",probe="default"} 0.0
pqd_cycle_duration_seconds_bucket{le="2.5",probe="default"} 0.0
pqd_cycle_duration_seconds_bucket{le="5.0",probe="default"} 0.0
pqd_cycle_duration_seconds_bucket{le="10.0",probe="default"} 0.0
pqd_cycle_duration_seconds_bucket{le="30.0",probe="default"} 0.0
pqd_cycle_duration_seconds_bucket{le="60.0",probe="default"} 0.0
pqd_cycle_duration_seconds_bucket{le="120.0",probe="default"} 0.0
pqd_cycle_duration_seconds_bucket{le="+Inf",probe="default"} 0.0
pqd_cycle_duration_seconds_count{probe="default"} 0.0
pqd_cycle_duration_seconds_sum{probe="default"} 0.0
# HELP pqd_phase_duration_seconds Time spent in each phase of a cycle, in seconds.
# TYPE pqd_phase_duration_seconds histogram
pqd_phase_duration_seconds_bucket{le="0.05",phase="pool_start",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="0.1",phase="pool_start",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="0.25",phase="pool_start",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="0.5",phase="pool_start",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="1.0",phase="pool_start",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="2.5",phase="pool_start",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="5.0",phase="pool_start",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="10.0",phase="pool_start",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="30.0",phase="pool_start",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="60.0",phase="pool_start",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="120.0",phase="pool_start",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="+Inf",phase="pool_start",probe="default"} 0.0
pqd_phase_duration_seconds_count{phase="pool_start",probe="default"} 0.0
pqd_phase_duration_seconds_sum{phase="pool_start",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="0.05",phase="jobs",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="0.1",phase="jobs",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="0.25",phase="jobs",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="0.5",phase="jobs",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="1.0",phase="jobs",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="2.5",phase="jobs",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="5.0",phase="jobs",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="10.0",phase="jobs",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="30.0",phase="jobs",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="60.0",phase="jobs",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="120.0",phase="jobs",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="+Inf",phase="jobs",probe="default"} 0.0
pqd_phase_duration_seconds_count{phase="jobs",probe="default"} 0.0
pqd_phase_duration_seconds_sum{phase="jobs",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="0.05",phase="shared_memory",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="0.1",phase="shared_memory",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="0.25",phase="shared_memory",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="0.5",phase="shared_memory",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="1.0",phase="shared_memory",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="2.5",phase="shared_memory",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="5.0",phase="shared_memory",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="10.0",phase="shared_memory",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="30.0",phase="shared_memory",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="60.0",phase="shared_memory",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="120.0",phase="shared_memory",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="+Inf",phase="shared_memory",probe="default"} 0.0
pqd_phase_duration_seconds_count{phase="shared_memory",probe="default"} 0.0
pqd_phase_duration_seconds_sum{phase="shared_memory",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="0.05",phase="teardown",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="0.1",phase="teardown",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="0.25",phase="teardown",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="0.5",phase="teardown",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="1.0",phase="teardown",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="2.5",phase="teardown",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="5.0",phase="teardown",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="10.0",phase="teardown",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="30.0",phase="teardown",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="60.0",phase="teardown",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="120.0",phase="teardown",probe="default"} 0.0
pqd_phase_duration_seconds_bucket{le="+Inf",phase="teardown",probe="default"} 0.0
pqd_phase_duration_seconds_count{phase="teardown",probe="default"} 0.0
pqd_phase_duration_seconds_sum{phase="teardown",probe="default"} 0.0
# HELP pqd_queue_operation_duration_seconds Duration of each queue put_nowait/get_nowait, measured in the workers, in seconds.
# TYPE pqd_queue_operation_duration_seconds histogram
pqd_queue_operation_duration_seconds_bucket{le="1e-05",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="2.5e-05",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="5e-05",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.0001",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.00025",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.0005",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.001",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.0025",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.005",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.01",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.025",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.05",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.1",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.25",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="1.0",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="+Inf",operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_count{operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_sum{operation="put",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="1e-05",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="2.5e-05",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="5e-05",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.0001",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.00025",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.0005",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.001",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.0025",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.005",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.01",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.025",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.05",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.1",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="0.25",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="1.0",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_bucket{le="+Inf",operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_count{operation="get",probe="default"} 0.0
pqd_queue_operation_duration_seconds_sum{operation="get",probe="default"} 0.0
# HELP pqd_config_last_reload_successful 1 if the last configuration (re)load succeeded, 0 if it failed.
# TYPE pqd_config_last_reload_successful gauge
pqd_config_last_reload_successful 1.0
# HELP pqd_config_last_reload_success_timestamp_seconds Unix time of the last successful configuration (re)load; start-up counts as one.
# TYPE pqd_config_last_reload_success_timestamp_seconds gauge
pqd_config_last_reload_success_timestamp_seconds 1.7e+09
""".replace("{PY}", platform.python_version())

#: The queue-operation histogram's buckets from 25 µs up, as the exposition writes them: every
#: put in these fake cycles took PUT_SECONDS (~15 µs), so each of them counts all the puts.
OPERATION_LES_FROM_25US = (
    "2.5e-05",
    "5e-05",
    "0.0001",
    "0.00025",
    "0.0005",
    "0.001",
    "0.0025",
    "0.005",
    "0.01",
    "0.025",
    "0.05",
    "0.1",
    "0.25",
    "1.0",
    "+Inf",
)

#: Every metric name in design §2, as exposed (counters with _total).
DESIGN_NAMES = DESIGN_FAMILIES

#: The only labels design §2 allows on each family (beyond a histogram's "le").
EXTRA_LABELS = {
    "pqd_cycle_failures_total": {"reason"},
    "pqd_cycles_skipped_total": {"reason"},
    "pqd_cycle_failure_causes_total": {"cause"},
    "pqd_cycle_warnings_total": {"category"},
    "pqd_last_cycle_cause": {"pqd_last_cycle_cause"},
    "pqd_phase_duration_seconds": {"phase"},
    "pqd_queue_operation_duration_seconds": {"operation"},
    "pqd_probe_info": {"start_method", "containment", "python_version", "python_implementation"},
}
WITHOUT_PROBE = {
    "pqd_build_info": {"version", "python_version"},
    "pqd_config_last_reload_successful": set(),
    "pqd_config_last_reload_success_timestamp_seconds": set(),
}

# The series a successful default cycle changes, and their new values. Everything else in the
# exposition must stay exactly as it was at start-up.
AFTER_SUCCESS = {
    'pqd_last_cycle_success{probe="default"}': "1.0",
    'pqd_last_cycle_queue_full_events{probe="default"}': "10.0",
    'pqd_last_cycle_jobs_completed{probe="default"}': "10.0",
    'pqd_last_cycle_queue_depth_max{probe="default"}': "3.0",
    'pqd_last_cycle_duration_seconds{probe="default"}': "0.875",
    'pqd_last_cycle_timestamp_seconds{probe="default"}': "1.7000001e+09",
    'pqd_last_cycle_success_timestamp_seconds{probe="default"}': "1.7000001e+09",
    'pqd_host_pid_count{probe="default"}': "200.0",
    'pqd_cycles_total{probe="default"}': "1.0",
    'pqd_jobs_completed_total{probe="default"}': "10.0",
    'pqd_queue_full_events_total{probe="default"}': "10.0",
    **{
        f'pqd_cycle_duration_seconds_bucket{{le="{le}",probe="default"}}': "1.0"
        for le in ("1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "120.0", "+Inf")
    },
    'pqd_cycle_duration_seconds_count{probe="default"}': "1.0",
    'pqd_cycle_duration_seconds_sum{probe="default"}': "0.875",
    **{
        f'pqd_phase_duration_seconds_bucket{{le="{le}",phase="{phase}",probe="default"}}': "1.0"
        for phase, first in (("pool_start", 2), ("jobs", 3), ("teardown", 2))
        for le in (
            "0.05",
            "0.1",
            "0.25",
            "0.5",
            "1.0",
            "2.5",
            "5.0",
            "10.0",
            "30.0",
            "60.0",
            "120.0",
            "+Inf",
        )[first:]
    },
    'pqd_phase_duration_seconds_count{phase="pool_start",probe="default"}': "1.0",
    'pqd_phase_duration_seconds_sum{phase="pool_start",probe="default"}': "0.125",
    'pqd_phase_duration_seconds_count{phase="jobs",probe="default"}': "1.0",
    'pqd_phase_duration_seconds_sum{phase="jobs",probe="default"}': "0.5",
    'pqd_phase_duration_seconds_count{phase="teardown",probe="default"}': "1.0",
    'pqd_phase_duration_seconds_sum{phase="teardown",probe="default"}': "0.25",
    # 25 put_nowait calls (5 per producer), 15 get_nowait calls (3 per consumer).
    **{
        f'pqd_queue_operation_duration_seconds_bucket{{le="{le}",operation="put",probe="default"}}': "25.0"
        for le in OPERATION_LES_FROM_25US
    },
    'pqd_queue_operation_duration_seconds_count{operation="put",probe="default"}': "25.0",
    'pqd_queue_operation_duration_seconds_sum{operation="put",probe="default"}': "0.0003814697265625",
    **{
        f'pqd_queue_operation_duration_seconds_bucket{{le="{le}",operation="get",probe="default"}}': "15.0"
        for le in (
            "0.00025",
            "0.0005",
            "0.001",
            "0.0025",
            "0.005",
            "0.01",
            "0.025",
            "0.05",
            "0.1",
            "0.25",
            "1.0",
            "+Inf",
        )
    },
    'pqd_queue_operation_duration_seconds_count{operation="get",probe="default"}': "15.0",
    'pqd_queue_operation_duration_seconds_sum{operation="get",probe="default"}': "0.003662109375",
}

AFTER_WORKER_DIED = {
    'pqd_last_cycle_queue_full_events{probe="default"}': "4.0",
    'pqd_last_cycle_jobs_completed{probe="default"}': "3.0",
    'pqd_last_cycle_queue_depth_max{probe="default"}': "3.0",
    'pqd_last_cycle_pid_count_delta{probe="default"}': "3.0",
    'pqd_last_cycle_duration_seconds{probe="default"}': "2.0",
    'pqd_last_cycle_timestamp_seconds{probe="default"}': "1.7000002e+09",
    'pqd_host_pid_count{probe="default"}': "203.0",
    'pqd_cycles_total{probe="default"}': "1.0",
    'pqd_cycle_failures_total{probe="default",reason="worker_died"}': "1.0",
    'pqd_cycle_failure_causes_total{cause="killed",probe="default"}': "1.0",
    'pqd_cycle_warnings_total{category="tracker_relaunched",probe="default"}': "1.0",
    'pqd_last_cycle_cause{pqd_last_cycle_cause="none",probe="default"}': "0.0",
    'pqd_last_cycle_cause{pqd_last_cycle_cause="killed",probe="default"}': "1.0",
    'pqd_jobs_completed_total{probe="default"}': "3.0",
    'pqd_jobs_failed_total{probe="default"}': "1.0",
    'pqd_queue_full_events_total{probe="default"}': "4.0",
    **{
        f'pqd_cycle_duration_seconds_bucket{{le="{le}",probe="default"}}': "1.0"
        for le in ("2.5", "5.0", "10.0", "30.0", "60.0", "120.0", "+Inf")
    },
    'pqd_cycle_duration_seconds_count{probe="default"}': "1.0",
    'pqd_cycle_duration_seconds_sum{probe="default"}': "2.0",
    **{
        f'pqd_phase_duration_seconds_bucket{{le="{le}",phase="pool_start",probe="default"}}': "1.0"
        for le in ("0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0", "120.0", "+Inf")
    },
    'pqd_phase_duration_seconds_count{phase="pool_start",probe="default"}': "1.0",
    'pqd_phase_duration_seconds_sum{phase="pool_start",probe="default"}': "0.125",
    **{
        f'pqd_phase_duration_seconds_bucket{{le="{le}",phase="jobs",probe="default"}}': "1.0"
        for le in ("2.5", "5.0", "10.0", "30.0", "60.0", "120.0", "+Inf")
    },
    'pqd_phase_duration_seconds_count{phase="jobs",probe="default"}': "1.0",
    'pqd_phase_duration_seconds_sum{phase="jobs",probe="default"}': "1.75",
    # Two producers (10 puts) and one consumer (3 gets) reported before the worker died.
    **{
        f'pqd_queue_operation_duration_seconds_bucket{{le="{le}",operation="put",probe="default"}}': "10.0"
        for le in OPERATION_LES_FROM_25US
    },
    'pqd_queue_operation_duration_seconds_count{operation="put",probe="default"}': "10.0",
    'pqd_queue_operation_duration_seconds_sum{operation="put",probe="default"}': "0.000152587890625",
    **{
        f'pqd_queue_operation_duration_seconds_bucket{{le="{le}",operation="get",probe="default"}}': "3.0"
        for le in (
            "0.00025",
            "0.0005",
            "0.001",
            "0.0025",
            "0.005",
            "0.01",
            "0.025",
            "0.05",
            "0.1",
            "0.25",
            "1.0",
            "+Inf",
        )
    },
    'pqd_queue_operation_duration_seconds_count{operation="get",probe="default"}': "3.0",
    'pqd_queue_operation_duration_seconds_sum{operation="get",probe="default"}': "0.000732421875",
}


# --- exact exposition -------------------------------------------------------------------------


def test_startup_zero_state_is_exact() -> None:
    _, registry = make()
    assert pqd_text(registry) == STARTUP


def test_successful_default_cycle_is_exact() -> None:
    metrics, registry = make()
    metrics.observe_cycle(cycle())
    assert pqd_text(registry) == with_values(STARTUP, AFTER_SUCCESS)


def test_failed_cycle_worker_died_is_exact() -> None:
    metrics, registry = make()
    metrics.observe_cycle(worker_died())
    # Success gauge and success timestamp stay 0; teardown was never reached, so not observed.
    assert pqd_text(registry) == with_values(STARTUP, AFTER_WORKER_DIED)


def test_skip_counting_is_exact() -> None:
    metrics, registry = make()
    metrics.observe_skip("default", "overlap")
    metrics.observe_skip("default", "overlap")
    metrics.observe_skip("default", "missed")
    assert pqd_text(registry) == with_values(
        STARTUP,
        {
            'pqd_cycles_skipped_total{probe="default",reason="overlap"}': "2.0",
            'pqd_cycles_skipped_total{probe="default",reason="missed"}': "1.0",
        },
    )


def test_set_probes_removing_a_probe_leaves_exactly_the_remaining_probes_series() -> None:
    other = ProbeFacts("spawny", "spawn", workers=2, queue_maxsize=10, containment="cgroup")
    metrics, registry = make(DEFAULT, other)
    metrics.observe_cycle(
        cycle(probe="spawny", start_method="spawn", cpu_seconds=0.25, max_rss_bytes=1000)
    )
    metrics.observe_skip("spawny", "missed")
    assert 'probe="spawny"' in pqd_text(registry)

    metrics.set_probes([DEFAULT])

    assert pqd_text(registry) == STARTUP
    assert "spawny" not in generate_latest(registry).decode()  # _created series gone too


# --- behaviour --------------------------------------------------------------------------------


def test_every_design_metric_name_is_exposed_and_nothing_else() -> None:
    _, registry = make()
    families = text_string_to_metric_families(pqd_text(registry))
    assert {exposed_name(f) for f in families} == set(DESIGN_NAMES)


def test_runtime_collectors_are_registered() -> None:
    _, registry = make()
    names = {f.name for f in registry.collect()}
    assert "process_cpu_seconds" in names  # ProcessCollector (Linux /proc)
    assert "python_info" in names  # PlatformCollector
    assert "python_gc_objects_collected" in names  # GCCollector


def test_process_collectors_can_be_left_out() -> None:
    registry = CollectorRegistry()
    PqdMetrics(registry, version="1", probes=[DEFAULT], process_collectors=False)
    names = {f.name for f in registry.collect()}
    assert not {n for n in names if n.startswith(("process_", "python_"))}
    assert "pqd_cycles" in names


def test_labels_and_uniqueness_follow_the_design() -> None:
    metrics, registry = make(DEFAULT, ProbeFacts("b", "spawn", 2, 5))
    metrics.observe_cycle(cycle())
    metrics.observe_cycle(worker_died(probe="b"))
    metrics.observe_skip("b", "overlap")
    text = generate_latest(registry).decode()

    seen: Tally[tuple[str, frozenset[tuple[str, str]]]] = Tally()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            seen[(sample.name, frozenset(sample.labels.items()))] += 1
            name = exposed_name(family)
            if not name.startswith("pqd_") or name.endswith("_created"):
                continue
            labels = set(sample.labels) - {"le"}
            if name in WITHOUT_PROBE:
                assert labels == WITHOUT_PROBE[name], sample
            else:
                assert labels == {"probe"} | EXTRA_LABELS.get(name, set()), sample
    assert [k for k, n in seen.items() if n > 1] == []

    if shutil.which("promtool"):
        # design §2: `promtool check metrics` prints nothing on our exposition.
        out = subprocess.run(
            ["promtool", "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_success_timestamp_only_moves_on_success() -> None:
    metrics, registry = make()
    metrics.observe_cycle(cycle())
    metrics.observe_cycle(worker_died())
    assert (
        value(registry, "pqd_last_cycle_success_timestamp_seconds", probe="default") == START + 100
    )
    assert value(registry, "pqd_last_cycle_timestamp_seconds", probe="default") == START + 200
    assert value(registry, "pqd_last_cycle_success", probe="default") == 0
    assert value(registry, "pqd_cycles_total", probe="default") == 2
    metrics.observe_cycle(cycle(ended_at=START + 300))
    assert (
        value(registry, "pqd_last_cycle_success_timestamp_seconds", probe="default") == START + 300
    )
    assert value(registry, "pqd_last_cycle_success", probe="default") == 1


@pytest.mark.parametrize("reason", FAILURE_REASONS)
def test_each_failure_reason_is_counted_on_its_own_series(reason: str) -> None:
    metrics, registry = make()
    metrics.observe_cycle(worker_died(reason=reason))
    for other in FAILURE_REASONS:
        expected = 1 if other == reason else 0
        got = value(registry, "pqd_cycle_failures_total", probe="default", reason=other)
        assert got == expected, other


def test_live_gauges_follow_samples_and_reset_when_the_cycle_completes() -> None:
    metrics, registry = make()
    metrics.observe_live(LiveSample(probe="default", queue_depth=3, workers_live=4))
    assert value(registry, "pqd_queue_depth", probe="default") == 3
    assert value(registry, "pqd_workers_live", probe="default") == 4
    # -1: the depth could not be sampled; the last real value stays.
    metrics.observe_live(LiveSample(probe="default", queue_depth=-1, workers_live=3))
    assert value(registry, "pqd_queue_depth", probe="default") == 3
    assert value(registry, "pqd_workers_live", probe="default") == 3
    metrics.observe_cycle(cycle())
    assert value(registry, "pqd_queue_depth", probe="default") == 0
    assert value(registry, "pqd_workers_live", probe="default") == 0


def test_observations_for_an_unknown_or_removed_probe_create_no_series() -> None:
    other = ProbeFacts("gone", "fork", 1, 1)
    metrics, registry = make(DEFAULT, other)
    metrics.set_probes([DEFAULT])
    # A cycle of "gone" that was still running during the reload finishes afterwards.
    metrics.observe_cycle(cycle(probe="gone"))
    metrics.observe_live(LiveSample(probe="gone", queue_depth=1, workers_live=1))
    metrics.observe_skip("gone", "overlap")
    metrics.observe_cycle(cycle(probe="never-configured"))
    assert pqd_text(registry) == STARTUP


def test_set_probes_updates_config_series_and_keeps_counters() -> None:
    metrics, registry = make()
    metrics.observe_cycle(cycle())
    metrics.set_probes([ProbeFacts("default", "spawn", workers=8, queue_maxsize=16)])
    assert value(registry, "pqd_queue_capacity", probe="default") == 16
    assert value(registry, "pqd_workers_configured", probe="default") == 8
    assert info_series(registry) == {("default", "spawn", "subreaper")}
    assert value(registry, "pqd_cycles_total", probe="default") == 1
    assert value(registry, "pqd_jobs_completed_total", probe="default") == 10


def test_set_probes_adds_a_new_probe_at_zero() -> None:
    metrics, registry = make()
    metrics.observe_cycle(cycle())
    metrics.set_probes([DEFAULT, ProbeFacts("new", "fork", 2, 7)])
    assert value(registry, "pqd_cycles_total", probe="new") == 0
    assert value(registry, "pqd_queue_capacity", probe="new") == 7
    info = {"start_method": "fork", "containment": "subreaper"}
    # Facts that do not say which interpreter (its path is not one): empty labels.
    info |= {"python_version": "", "python_implementation": ""}
    assert value(registry, "pqd_probe_info", probe="new", **info) == 1
    for reason in FAILURE_REASONS:
        assert value(registry, "pqd_cycle_failures_total", probe="new", reason=reason) == 0
    for reason in SKIP_REASONS:
        assert value(registry, "pqd_cycles_skipped_total", probe="new", reason=reason) == 0
    for phase in PHASES:
        assert value(registry, "pqd_phase_duration_seconds_count", probe="new", phase=phase) == 0
    for op in ("put", "get"):
        got = value(
            registry, "pqd_queue_operation_duration_seconds_count", probe="new", operation=op
        )
        assert got == 0
    assert value(registry, "pqd_cycles_total", probe="default") == 1  # untouched


def info_series(registry: CollectorRegistry) -> set[tuple[str, str, str]]:
    """Every pqd_probe_info series as (probe, start_method, containment); each must be 1."""
    found = set()
    for family in registry.collect():
        for s in family.samples if family.name == "pqd_probe_info" else ():
            assert s.value == 1, s
            found.add((s.labels["probe"], s.labels["start_method"], s.labels["containment"]))
    return found


def test_probe_info_carries_the_interpreter_and_replaces_the_series_when_it_changes() -> None:
    metrics, registry = make(DEFAULT)
    labels = {"start_method": "forkserver", "containment": "subreaper"}
    own = {"python_version": "3.11.7", "python_implementation": "cpython"}
    assert value(registry, "pqd_probe_info", probe="default", **labels, **own) == 1
    metrics.set_probes([replace(DEFAULT, python_version="3.9.18")])
    py39 = {"python_version": "3.9.18", "python_implementation": "cpython"}
    assert value(registry, "pqd_probe_info", probe="default", **labels, **py39) == 1
    assert value(registry, "pqd_probe_info", probe="default", **labels, **own) is None


def test_probe_info_carries_containment_and_replaces_the_series_when_it_changes() -> None:
    metrics, registry = make(DEFAULT, ProbeFacts("cg", "spawn", 2, 5, containment="cgroup"))
    assert info_series(registry) == {
        ("default", "forkserver", "subreaper"),
        ("cg", "spawn", "cgroup"),
    }
    metrics.observe_cycle(cycle())
    # Containment alone changes (pqd got a delegated cgroup after a restart of its unit).
    metrics.set_probes([replace(DEFAULT, containment="cgroup"), ProbeFacts("cg", "spawn", 2, 5)])
    assert info_series(registry) == {
        ("default", "forkserver", "cgroup"),
        ("cg", "spawn", "subreaper"),
    }
    # Both change at once: still exactly one series per probe.
    metrics.set_probes([replace(DEFAULT, start_method="fork", containment="subreaper")])
    assert info_series(registry) == {("default", "fork", "subreaper")}
    assert value(registry, "pqd_cycles_total", probe="default") == 1  # counters kept


def test_probe_spec_containment_is_validated_and_defaults_to_subreaper() -> None:
    assert DEFAULT.containment == "subreaper"
    assert ProbeFacts("p", "fork", 1, 1, "cgroup").containment == "cgroup"
    with pytest.raises(ValueError, match="containment"):
        ProbeFacts("p", "fork", 1, 1, containment="chroot")


def test_cpu_and_rss_gauges_and_the_cpu_counter_after_two_cycles() -> None:
    metrics, registry = make()
    metrics.observe_cycle(cycle(cpu_seconds=0.75, max_rss_bytes=40_000_000))
    metrics.observe_cycle(cycle(cpu_seconds=0.5, max_rss_bytes=30_000_000))
    assert value(registry, "pqd_last_cycle_cpu_seconds", probe="default") == 0.5
    assert value(registry, "pqd_last_cycle_max_rss_bytes", probe="default") == 30_000_000
    assert value(registry, "pqd_cycle_cpu_seconds_total", probe="default") == 1.25
    # And nothing else differs from two plain successful cycles.
    plain, plain_registry = make()
    plain.observe_cycle(cycle())
    plain.observe_cycle(cycle())
    assert pqd_text(registry) == with_values(
        pqd_text(plain_registry),
        {
            'pqd_last_cycle_cpu_seconds{probe="default"}': "0.5",
            'pqd_last_cycle_max_rss_bytes{probe="default"}': "3e+07",
            'pqd_cycle_cpu_seconds_total{probe="default"}': "1.25",
        },
    )


def test_unmeasured_cpu_and_rss_leave_the_series_untouched() -> None:
    metrics, registry = make()
    metrics.observe_cycle(cycle(cpu_seconds=0.75, max_rss_bytes=40_000_000))
    metrics.observe_cycle(worker_died(cpu_seconds=None, max_rss_bytes=None))
    assert value(registry, "pqd_last_cycle_cpu_seconds", probe="default") == 0.75
    assert value(registry, "pqd_last_cycle_max_rss_bytes", probe="default") == 40_000_000
    assert value(registry, "pqd_cycle_cpu_seconds_total", probe="default") == 0.75
    # One measured, the other not: each is handled on its own.
    metrics.observe_cycle(cycle(cpu_seconds=None, max_rss_bytes=1024))
    assert value(registry, "pqd_last_cycle_cpu_seconds", probe="default") == 0.75
    assert value(registry, "pqd_last_cycle_max_rss_bytes", probe="default") == 1024
    assert value(registry, "pqd_cycle_cpu_seconds_total", probe="default") == 0.75
    # A measured zero is a value, not "not measured".
    metrics.observe_cycle(cycle(cpu_seconds=0.0, max_rss_bytes=0))
    assert value(registry, "pqd_last_cycle_cpu_seconds", probe="default") == 0
    assert value(registry, "pqd_last_cycle_max_rss_bytes", probe="default") == 0


def test_helper_died_is_pre_initialised_and_counted() -> None:
    metrics, registry = make(DEFAULT, ProbeFacts("other", "spawn", 1, 1))
    for probe in ("default", "other"):
        assert value(registry, "pqd_cycle_failures_total", probe=probe, reason="helper_died") == 0
    metrics.observe_cycle(worker_died(reason="helper_died", detail="forkserver 1999 died"))
    assert value(registry, "pqd_cycle_failures_total", probe="default", reason="helper_died") == 1
    assert value(registry, "pqd_cycle_failures_total", probe="other", reason="helper_died") == 0
    metrics.set_probes([DEFAULT])
    assert value(registry, "pqd_cycle_failures_total", probe="other", reason="helper_died") is None


CONFIGURED = ("pqd_queue_capacity", "pqd_workers_configured", "pqd_shared_memory_bytes")


def test_configured_gauges_show_the_running_configuration_not_a_finished_cycles() -> None:
    """A cycle that began before a reload finishes after it: it flipped the configured gauges
    back to the old values until the next cycle completed."""
    metrics, registry = make()
    metrics.set_probes([replace(DEFAULT, workers=2, queue_maxsize=5, shared_memory_bytes=4096)])
    before_reload = cycle(queue_capacity=3, workers_configured=4, shared_memory_bytes=0)
    metrics.observe_cycle(before_reload)
    configured = [value(registry, name, probe="default") for name in CONFIGURED]
    assert configured == [5, 2, 4096]
    assert value(registry, "pqd_cycles_total", probe="default") == 1  # the cycle is counted


def test_a_count_not_measured_leaves_its_gauge_at_the_last_measured_value() -> None:
    """A cycle pqd ended before its runner reported the start has host_pid_count_before -1:
    its pid_count_delta gauge read 75 (after + 1, about the host's whole pid count)."""
    metrics, registry = make()
    metrics.observe_cycle(cycle(host_pid_count_before=200, host_pid_count_after=203))
    killed = worker_died(reason="helper_died", host_pid_count_before=-1, host_pid_count_after=74)
    metrics.observe_cycle(killed)
    assert value(registry, "pqd_last_cycle_pid_count_delta", probe="default") == 3
    assert value(registry, "pqd_host_pid_count", probe="default") == 74
    assert value(registry, "pqd_last_cycle_success", probe="default") == 0
    # /proc unreadable at the end: neither the count nor the delta is a number to export.
    metrics.observe_cycle(cycle(host_pid_count_before=200, host_pid_count_after=-1))
    assert value(registry, "pqd_last_cycle_pid_count_delta", probe="default") == 3
    assert value(registry, "pqd_host_pid_count", probe="default") == 74
    assert value(registry, "pqd_last_cycle_success", probe="default") == 1
    # Fewer processes after than before is measured: a negative delta is exported.
    metrics.observe_cycle(cycle(host_pid_count_before=200, host_pid_count_after=195))
    assert value(registry, "pqd_last_cycle_pid_count_delta", probe="default") == -5


def test_reload_metrics() -> None:
    metrics, registry = make()
    assert value(registry, "pqd_config_last_reload_successful") == 1
    assert value(registry, "pqd_config_last_reload_success_timestamp_seconds") == START
    metrics.observe_reload(False, START + 50)
    assert value(registry, "pqd_config_last_reload_successful") == 0
    assert value(registry, "pqd_config_last_reload_success_timestamp_seconds") == START
    metrics.observe_reload(True, START + 60)
    assert value(registry, "pqd_config_last_reload_successful") == 1
    assert value(registry, "pqd_config_last_reload_success_timestamp_seconds") == START + 60


def test_bad_input_is_refused_before_anything_is_written() -> None:
    metrics, registry = make()
    with pytest.raises(ValueError, match="unknown skip reason"):
        metrics.observe_skip("default", "bored")
    with pytest.raises(ValueError, match="unknown reason"):
        metrics.observe_cycle(worker_died(reason="gremlins"))
    with pytest.raises(ValueError, match="unknown reason"):
        metrics.observe_cycle(worker_died(reason=None))
    with pytest.raises(ValueError, match="unknown phases"):
        metrics.observe_cycle(cycle(phase_seconds={"warmup": 1.0}))
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="cpu_seconds must be finite"):
            metrics.observe_cycle(cycle(cpu_seconds=bad, max_rss_bytes=1))
    with pytest.raises(ValueError, match="max_rss_bytes must be finite"):
        metrics.observe_cycle(cycle(cpu_seconds=1.0, max_rss_bytes=-1))
    for bad_id in ("", "x" * 121):  # an exemplar's labels may hold 128 characters in all
        with pytest.raises(ValueError, match="cycle_id must have 1 to 120 characters"):
            metrics.observe_cycle(cycle(cycle_id=bad_id))
    with pytest.raises(ValueError, match="duplicate probe name"):
        metrics.set_probes([DEFAULT, DEFAULT])
    with pytest.raises(ValueError, match="must not be empty"):
        ProbeFacts("", "fork", 1, 1)
    assert pqd_text(registry) == STARTUP


def openmetrics_lines(registry: CollectorRegistry, prefix: str) -> list[str]:
    """The OpenMetrics exposition's lines that start with ``prefix`` (what Prometheus scrapes)."""
    text = openmetrics_latest(registry).decode()
    return [line for line in text.splitlines() if line.startswith(prefix)]


def test_cycle_duration_carries_the_cycle_id_as_an_exemplar(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics, registry = make()
    # prometheus_client stamps an exemplar with time.time() when it is observed.
    monkeypatch.setattr("time.time", lambda: START + 100.5)
    metrics.observe_cycle(cycle(cycle_id="c-0001"))  # 0.875 s: the le="1.0" bucket
    monkeypatch.setattr("time.time", lambda: START + 200.5)
    metrics.observe_cycle(worker_died())  # c-0002, 2.0 s: the le="2.5" bucket
    bucket = "pqd_cycle_duration_seconds_bucket"
    assert openmetrics_lines(registry, bucket + '{le="0.5"') == [
        bucket + '{le="0.5",probe="default"} 0.0',
    ]
    # Only the bucket an observation lands in carries its exemplar, not the cumulative ones
    # above it.
    assert openmetrics_lines(registry, bucket + '{le="1.0"') == [
        bucket + '{le="1.0",probe="default"} 1.0 # {cycle_id="c-0001"} 0.875 1700000100.5',
    ]
    assert openmetrics_lines(registry, bucket + '{le="2.5"') == [
        bucket + '{le="2.5",probe="default"} 2.0 # {cycle_id="c-0002"} 2.0 1700000200.5',
    ]
    assert openmetrics_lines(registry, bucket + '{le="5.0"') == [
        bucket + '{le="5.0",probe="default"} 2.0',
    ]
    # The latest observation in a bucket replaces its exemplar.
    monkeypatch.setattr("time.time", lambda: START + 300.5)
    metrics.observe_cycle(cycle(cycle_id="c-0003", duration_seconds=0.75))
    assert openmetrics_lines(registry, bucket + '{le="1.0"') == [
        bucket + '{le="1.0",probe="default"} 2.0 # {cycle_id="c-0003"} 0.75 1700000300.5',
    ]
    # The other histograms carry none, and the plain text format has no exemplars at all.
    assert [
        line for line in openmetrics_latest(registry).decode().splitlines() if " # {" in line
    ] == [
        bucket + '{le="1.0",probe="default"} 2.0 # {cycle_id="c-0003"} 0.75 1700000300.5',
        bucket + '{le="2.5",probe="default"} 3.0 # {cycle_id="c-0002"} 2.0 1700000200.5',
    ]
    assert "cycle_id" not in generate_latest(registry).decode()


def test_two_instances_on_one_registry_clash() -> None:
    # Registering twice on one registry is a bug the registry must report, not hide.
    _, registry = make()
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        make(registry=registry)


def test_nothing_touches_the_global_registry() -> None:
    def global_names() -> set[str]:
        return {f.name for f in REGISTRY.collect() if f.name.startswith("pqd_")}

    before = global_names()
    make()
    assert global_names() == before == set()


def test_probe_spec_is_frozen() -> None:
    with pytest.raises(AttributeError):
        DEFAULT.workers = 5  # type: ignore[misc]


# --- the batched operation histogram ----------------------------------------------------------


def test_operation_histogram_matches_prometheus_client_histogram() -> None:
    # Bounds themselves (le is inclusive), just above them, 0, and beyond the last bound.
    values = [0.0, *OPERATION_BUCKETS, *(b * 1.0001 for b in OPERATION_BUCKETS), 5.0, 3e-6]
    metrics, registry = make()
    jobs = (job("producer", 1, 1, operation_seconds=tuple(values)),)
    metrics.observe_cycle(cycle(jobs=jobs))

    reference_registry = CollectorRegistry()
    reference = Histogram(
        "pqd_queue_operation_duration_seconds",
        "x",
        ["probe", "operation"],
        buckets=OPERATION_BUCKETS,
        registry=reference_registry,
    )
    for v in values:
        reference.labels("default", "put").observe(v)

    def samples(reg: CollectorRegistry) -> dict[tuple[str, str], float]:
        return {
            (s.name, s.labels.get("le", "")): s.value
            for f in reg.collect()
            if f.name == "pqd_queue_operation_duration_seconds"
            for s in f.samples
            if s.labels.get("operation") == "put" and not s.name.endswith("_created")
        }

    ours, theirs = samples(registry), samples(reference_registry)
    sum_name = "pqd_queue_operation_duration_seconds_sum"
    assert ours.pop((sum_name, "")) == pytest.approx(theirs.pop((sum_name, "")))
    assert ours == theirs
    assert len(ours) == len(OPERATION_BUCKETS) + 2  # buckets, +Inf, _count


def test_operation_histogram_accumulates_large_batches() -> None:
    metrics, registry = make()
    n = 100_000
    producers = (job("producer", 1, 1, operation_seconds=(PUT_SECONDS,) * n),)
    metrics.observe_cycle(cycle(jobs=producers))
    metrics.observe_cycle(cycle(jobs=producers))
    labels = {"probe": "default", "operation": "put"}
    get = registry.get_sample_value
    assert get("pqd_queue_operation_duration_seconds_count", labels) == 2 * n
    assert get("pqd_queue_operation_duration_seconds_bucket", {**labels, "le": "1e-05"}) == 0
    assert get("pqd_queue_operation_duration_seconds_bucket", {**labels, "le": "2.5e-05"}) == 2 * n
    assert get("pqd_queue_operation_duration_seconds_sum", labels) == pytest.approx(
        2 * n * PUT_SECONDS
    )


def test_duration_buckets_are_the_documented_ones() -> None:
    assert DURATION_BUCKETS == (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
    assert OPERATION_BUCKETS == (
        1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 1,
    )  # fmt: skip


# --- concurrency ------------------------------------------------------------------------------


def test_concurrent_writers_and_reloads_lose_nothing() -> None:
    metrics, registry = make()
    threads_n, cycles_each = 8, 25
    barrier = threading.Barrier(threads_n + 1)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            barrier.wait()
            for _ in range(cycles_each):
                metrics.observe_cycle(cycle())
                metrics.observe_live(LiveSample("default", 2, 4))
                metrics.observe_skip("default", "overlap")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    def reloader() -> None:
        barrier.wait()
        for i in range(50):
            # Adds and removes another probe while "default" is being written.
            metrics.set_probes([DEFAULT, ProbeFacts(f"extra{i % 3}", "fork", 1, 1)])
            generate_latest(registry)  # a scrape in the middle of it all

    threads = [threading.Thread(target=writer) for _ in range(threads_n)]
    threads.append(threading.Thread(target=reloader))
    run_threads(threads)
    assert errors == []
    total = threads_n * cycles_each
    assert value(registry, "pqd_cycles_total", probe="default") == total
    assert value(registry, "pqd_jobs_completed_total", probe="default") == 10 * total
    assert value(registry, "pqd_cycles_skipped_total", probe="default", reason="overlap") == total
    got = value(
        registry, "pqd_queue_operation_duration_seconds_count", probe="default", operation="put"
    )
    assert got == 25 * total


# --- textfile ---------------------------------------------------------------------------------


def test_write_textfile_is_atomic_and_leaves_out_runtime_families(tmp_path: Path) -> None:
    metrics, registry = make()
    metrics.observe_cycle(cycle())
    path = tmp_path / "pqd.prom"
    path.write_text("old\n")
    write_textfile(str(path), registry)

    text = path.read_text()
    assert os.listdir(tmp_path) == ["pqd.prom"]  # the temp file was renamed, not left behind
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "pqd_cycles" in names
    assert not {n for n in names if n.startswith(("process_", "python_"))}
    assert pqd_text(registry) == "".join(
        line + "\n"
        for line in text.splitlines()
        if family_name(line).startswith("pqd_") and not family_name(line).endswith("_created")
    )


def test_write_textfile_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    _, registry = make()
    target = tmp_path / "missing-dir" / "pqd.prom"
    with pytest.raises(OSError):
        write_textfile(str(target), registry)
    assert os.listdir(tmp_path) == []


def test_replace_keeps_cycle_results_plain_data() -> None:
    # The factory's default really is the seed's cycle the exact-text tests rely on.
    c = cycle()
    assert (c.jobs_completed, c.queue_full_events, c.queue_depth_max, c.pid_count_delta) == (
        10, 10, 3, 0,
    )  # fmt: skip
    assert sum(c.operations("put").counts) == 25 and sum(c.operations("get").counts) == 15
    assert replace(c, success=False).success is False


def test_last_cause_is_the_failed_cycles_and_none_after_a_success() -> None:
    metrics, registry = make()

    def state(name: str) -> float | None:
        return value(registry, "pqd_last_cycle_cause", probe="default", pqd_last_cycle_cause=name)

    assert state("none") == 1
    metrics.observe_cycle(worker_died(cause="shm_full"))
    assert (state("none"), state("shm_full")) == (0, 1)
    # A failed result without a cause (from an older runner) is counted as unknown.
    metrics.observe_cycle(worker_died(cause=None))
    assert (state("shm_full"), state("unknown")) == (0, 1)
    metrics.observe_cycle(cycle(ended_at=START + 300))
    assert (state("none"), state("unknown")) == (1, 0)
    causes: dict[str, float | None] = {}
    for cause in ("shm_full", "unknown"):
        causes[cause] = value(
            registry, "pqd_cycle_failure_causes_total", probe="default", cause=cause
        )
    assert causes == {"shm_full": 1, "unknown": 1}


@pytest.mark.parametrize(
    "overrides",
    [{"cause": "gremlins"}, {"warnings": {"gremlins": 1}}, {"warnings": {"other": -1}}],
)
def test_a_cause_or_warning_outside_the_documented_sets_is_refused(
    overrides: dict[str, Any],
) -> None:
    metrics, registry = make()
    before = pqd_text(registry)
    with pytest.raises(ValueError):
        metrics.observe_cycle(worker_died(**overrides))
    assert pqd_text(registry) == before
