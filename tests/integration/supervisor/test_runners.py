"""The per-probe runners (docs/design.md §1a) driven by pqd's supervisor in this test process: real
runner processes, real pools, nothing shared between probes."""

from __future__ import annotations

import threading

import psutil
import pytest

from pqd.probe import ProbeConfig
from pqd.results import CycleResult
from pqd.supervisor.runners import WARM_BELOW_SECONDS, Runners
from tests.helpers.interpreters import probe_fields

pytestmark = pytest.mark.per_python

START_METHODS = ["forkserver", "spawn", "fork"]


def test_probes_run_side_by_side_in_runners_of_their_own(runners: Runners) -> None:
    """Three probes at once: each cycle runs in its own runner, none counts (or kills) the
    processes of another, and each runner stays up for its probe's next cycle."""
    results: dict[str, CycleResult] = {}

    def run(start_method: str, pause: float) -> None:
        results[start_method] = runners.run_cycle(
            ProbeConfig(
                name=start_method,
                start_method=start_method,
                job_pause=pause,
                **probe_fields(),
            )
        )

    threads = [
        threading.Thread(target=run, args=(method, pause))
        for method, pause in (("forkserver", 0.1), ("spawn", 0.0), ("fork", 0.05))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert sorted(results) == sorted(START_METHODS)
    main_pids = {r.main_pid for r in results.values()}
    assert len(main_pids) == 3
    assert psutil.Process().pid not in main_pids
    for result in results.values():
        assert result.success, result.detail
        assert result.leaked_processes == 0
        assert result.containment == "subreaper"
        assert result.cpu_seconds is not None and result.cpu_seconds > 0
        assert result.max_rss_bytes is not None and result.max_rss_bytes > 1 << 20
    # Each forkserver is its own runner's child: nothing multiprocessing starts is shared.
    forkserver_result = results["forkserver"]
    helpers = {h.role: h.pid for h in forkserver_result.helpers_started}
    assert psutil.Process(helpers["forkserver"]).ppid() == forkserver_result.main_pid
    assert runners.runner_pids() == main_pids
    again = runners.run_cycle(
        ProbeConfig(name="forkserver", start_method="forkserver", **probe_fields())
    )
    assert again.success and again.main_pid == forkserver_result.main_pid


def test_a_long_interval_or_cron_probe_gets_a_fresh_runner_each_cycle(runners: Runners) -> None:
    """Below WARM_BELOW_SECONDS the runner, forkserver and resource tracker stay up between
    cycles; a probe cycling less often holds nothing between its cycles."""
    warm = ProbeConfig(name="warm", interval=WARM_BELOW_SECONDS - 1, **probe_fields())
    cold = ProbeConfig(name="cold", interval=WARM_BELOW_SECONDS, **probe_fields())
    cron = ProbeConfig(name="cron", interval=None, cron="*/5 * * * *", **probe_fields())
    first = {p.name: runners.run_cycle(p) for p in (warm, cold, cron)}
    for result in first.values():
        assert result.success, result.detail
    assert runners.runner_pids() == {first["warm"].main_pid}
    for name in ("cold", "cron"):
        helpers = [h.pid for h in first[name].helpers_started]
        assert helpers, first[name]
        assert not [pid for pid in (first[name].main_pid, *helpers) if psutil.pid_exists(pid)]
    again = {p.name: runners.run_cycle(p) for p in (warm, cold)}
    assert again["warm"].success and again["warm"].main_pid == first["warm"].main_pid
    assert again["cold"].success and again["cold"].main_pid != first["cold"].main_pid
