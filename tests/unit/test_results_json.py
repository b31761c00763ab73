"""The runner sends results to pqd as JSON: the round trip loses nothing (plain data)."""

from __future__ import annotations

import json

from pqd.results import (
    HelperProcess,
    JobReport,
    StuckProcess,
    job_report_from_dict,
    result_from_dict,
    result_to_dict,
)
from tests.helpers.factories import seed_shaped_result, tallied, tight_headroom

JOB = JobReport(
    kind="producer",
    round=1,
    pid=4242,
    process_name="ForkServerPoolWorker-1",
    is_alive=True,
    parent_pid=4200,
    host_pid_count=120,
    started_at=1.5,
    items=("A", "B", "C"),
    item_count=3,
    full_events=2,
    **tallied((1e-4, 2e-4, 3e-4, 1e-4, 1e-4)),
    error=None,
    job_counter=1,
    queue_depth_after=3,
    workers_live_after=4,
)


def test_a_result_survives_json_exactly() -> None:
    result = seed_shaped_result(
        success=False,
        reason="leak",
        detail="1 process(es) left behind: 77",
        jobs=(JOB,),
        helpers_started=(HelperProcess(pid=4200, role="forkserver"),),
        leaked_processes=1,
        leaked_pids=(77,),
        leaked_commands=("sleep 300",),
        containment="cgroup",
        cpu_seconds=0.25,
        max_rss_bytes=30 << 20,
        stuck=(
            StuckProcess(812, "pool worker 1", "T", "do_signal_stop", None, "stopped"),
            StuckProcess(805, "Manager", "S", "", 'Current thread 0x1:\n  File "m.py", line 2', ""),
        ),
        job_traceback="Traceback (most recent call last):\nValueError: x\n",
        headroom=tight_headroom(),
        leaked_shm_objects=6,
        max_open_files=31,
    )

    assert result_from_dict(json.loads(json.dumps(result_to_dict(result)))) == result


def test_a_job_report_survives_json_exactly() -> None:
    encoded = json.dumps(result_to_dict(seed_shaped_result(jobs=(JOB,))))
    data = json.loads(encoded)["jobs"][0]

    assert job_report_from_dict(data) == JOB


def test_pqd_once_json_prints_a_count_not_measured_as_null() -> None:
    """A cycle pqd ended before its runner reported the start keeps the "before" count at its
    -1 placeholder; --json printed it, and a pid_count_delta of the host's whole pid count."""
    from dataclasses import replace

    from pqd.results import result_to_json

    unmeasured = replace(JOB, host_pid_count=-1, queue_depth_after=-1)
    killed = seed_shaped_result(
        host_pid_count_before=-1, host_pid_count_during=-1, host_pid_count_after=75, jobs=(JOB,)
    )
    data = json.loads(json.dumps(result_to_json(killed)))
    assert data["host_pid_count_before"] is None and data["host_pid_count_during"] is None
    assert (data["host_pid_count_after"], data["pid_count_delta"]) == (75, None)
    assert data["jobs"][0]["host_pid_count"] == 120

    no_proc = result_to_json(seed_shaped_result(host_pid_count_after=-1, jobs=(unmeasured,)))
    assert no_proc["pid_count_delta"] is None and no_proc["host_pid_count_after"] is None
    assert no_proc["jobs"][0]["host_pid_count"] is None
    assert no_proc["jobs"][0]["queue_depth_after"] is None

    whole = result_to_json(seed_shaped_result(host_pid_count_before=200, host_pid_count_after=203))
    assert (whole["host_pid_count_before"], whole["pid_count_delta"]) == (200, 3)
    fewer = result_to_json(seed_shaped_result(host_pid_count_before=200, host_pid_count_after=195))
    assert fewer["pid_count_delta"] == -5
