"""Idle footprint of `pqd run` between cycles: memory and CPU with no cycle running.

Two daemons, one after the other, each left alone for ``--window`` seconds (no scrape; only
/proc is read):

* ``after a cycle``: ``--interval 1h`` (the default probe, forkserver): the first cycle runs at
  start-up; the window starts ``--settle`` seconds after it ended, so the probe's runner and,
  below it, the forkserver and resource tracker it keeps are there, as between any two cycles
  (pqd -> runner -> {forkserver, resource tracker}, docs/design.md §1a).
* ``before any cycle``: ``--cron "0 0 1 1 *"``: no cycle runs at all, so there is no runner yet.

Every second, each process of the tree is sampled: RSS, USS and PSS (psutil's
``memory_full_info``, i.e. ``/proc/PID/smaps_rollup``); the figures are medians over the window's
samples (pqd's RSS also gives the maximum, which its target is checked against). "tree" is pqd
and everything below it: the sum of RSS (counting shared pages once per process) and the sum of
PSS (what the tree really holds). CPU is user+system time over the window as a share of one
core: pqd's own, each process's own, and the whole tree's (every live descendant, and what each
has reaped) -- the figure the "pqd + runners" target is checked against: between cycles the
runners' forkserver and resource tracker are in it too, so it is an upper bound.

    .venv/bin/python benchmarks/idle.py [--quick] [--window SECONDS]
"""

from __future__ import annotations

import sys
from typing import Any

TARGET_RSS_MIB = 35.0
TARGET_CPU_PERCENT = 0.1
TARGET_RUNNER_USS_MIB = 12.0


def main() -> int:
    import argparse
    import time

    import _common as c
    import psutil

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the cycle")
    args = parser.parse_args()
    window = 2.0 if args.quick else args.window
    settle = 0.5 if args.quick else args.settle
    print(c.machine_line())
    print(f"window: {window:.0f} s, settle: {settle:.1f} s")

    mib = c.MIB
    rows = []
    per_process = []
    for label, flags, wait_cycle in (
        ("after a cycle (interval 1h)", ["--interval", "1h"], True),
        ("before any cycle (cron)", ["--cron", "0 0 1 1 *"], False),
    ):
        with c.daemon(flags) as d:
            if wait_cycle:
                done = d.wait_cycles(1, 60)
                if done[0].get("result") != "success":
                    raise RuntimeError(f"first cycle failed: {done[0]}")
            time.sleep(settle)
            proc = psutil.Process(d.pid)
            t0 = time.monotonic()
            own0 = proc.cpu_times()
            tree0 = c.process_tree_cpu(d.pid)
            cpu0 = c.own_cpu_by_pid(d.pid)
            # pid -> (role, [ProcMemory, ...]); per sample: the tree's RSS, USS and PSS sums.
            seen: dict[int, tuple[str, list[c.ProcMemory]]] = {}
            sums: list[tuple[float, float, float]] = []
            while True:
                sample = c.tree_memory(d.pid)
                for m in sample:
                    seen.setdefault(m.pid, (m.role, []))[1].append(m)
                sums.append(
                    (
                        sum(m.rss for m in sample) / mib,
                        sum(m.uss for m in sample) / mib,
                        sum(m.pss for m in sample) / mib,
                    )
                )
                left = t0 + window - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(1.0, left))
            elapsed = time.monotonic() - t0
            own1 = proc.cpu_times()
            tree1 = c.process_tree_cpu(d.pid)
            cpu1 = c.own_cpu_by_pid(d.pid)
            threads = proc.num_threads()
            descendants = len(proc.children(recursive=True))
            cycles = len(d.finished_cycles())

        def med(pid: int, field: str, seen: dict[int, tuple[str, list[Any]]] = seen) -> float:
            return c.summarize([getattr(m, field) / mib for m in seen[pid][1]]).median

        cpu_pct = 100.0 * ((own1.user + own1.system) - (own0.user + own0.system)) / elapsed
        tree_pct = 100.0 * (tree1 - tree0) / elapsed
        pqd_rss = c.summarize([m.rss / mib for m in seen[d.pid][1]])
        runners = [pid for pid, (role, _) in seen.items() if role == "runner"]
        runner_uss = [med(pid, "uss") for pid in runners]
        rows.append(
            [
                label,
                f"{elapsed:.0f}",
                len(sums),
                f"{pqd_rss.median:.1f} (max {pqd_rss.maximum:.1f})",
                f"{med(d.pid, 'uss'):.1f}",
                f"{med(d.pid, 'pss'):.1f}",
                ", ".join(f"{u:.1f}" for u in runner_uss) or "- (no runner)",
                f"{c.summarize([s[0] for s in sums]).median:.1f}",
                f"{c.summarize([s[2] for s in sums]).median:.1f}",
                f"{cpu_pct:.3f}",
                f"{tree_pct:.3f}",
                f"{threads} / {descendants}",
                cycles,
                c.verdict(pqd_rss.maximum <= TARGET_RSS_MIB and cpu_pct <= TARGET_CPU_PERCENT),
                c.verdict(max(runner_uss) <= TARGET_RUNNER_USS_MIB) if runner_uss else "-",
                c.verdict(tree_pct <= TARGET_CPU_PERCENT),
            ]
        )
        order = {"pqd": 0, "runner": 1, "forkserver": 2, "resource tracker": 3}
        for pid, (role, samples) in sorted(
            seen.items(), key=lambda x: (order.get(x[1][0], 9), x[0])
        ):
            own = (
                f"{100.0 * (cpu1[pid] - cpu0[pid]) / elapsed:.3f}"
                if pid in cpu0 and pid in cpu1
                else "-"
            )
            per_process.append(
                [
                    label,
                    role,
                    pid,
                    samples[-1].ppid,
                    len(samples),
                    f"{med(pid, 'rss'):.1f}",
                    f"{med(pid, 'uss'):.1f}",
                    f"{med(pid, 'pss'):.1f}",
                    own,
                ]
            )
        per_process.append(
            [
                label,
                "whole tree (sum)",
                "-",
                "-",
                len(sums),
                f"{c.summarize([s[0] for s in sums]).median:.1f}",
                f"{c.summarize([s[1] for s in sums]).median:.1f}",
                f"{c.summarize([s[2] for s in sums]).median:.1f}",
                f"{tree_pct:.3f}",
            ]
        )
    c.print_table(
        "Idle footprint of pqd run (MiB, medians over the window's samples; CPU in % of one core)",
        [
            "state",
            "window s",
            "samples",
            "pqd RSS",
            "pqd USS",
            "pqd PSS",
            "runner USS",
            "tree RSS",
            "tree PSS",
            "pqd CPU %",
            "pqd + runners CPU % (whole tree)",
            "threads / descendants",
            "cycles run",
            f"target pqd RSS <= {TARGET_RSS_MIB:.0f}, CPU <= {TARGET_CPU_PERCENT}%",
            f"target runner USS <= {TARGET_RUNNER_USS_MIB:.0f}",
            f"target pqd + runners CPU <= {TARGET_CPU_PERCENT}%",
        ],
        rows,
    )
    c.print_table(
        "Idle footprint per process (MiB, medians over the window's samples; own CPU in % of "
        "one core, the tree's for the sum)",
        ["state", "process", "pid", "parent", "samples", "RSS", "USS", "PSS", "CPU %"],
        per_process,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
