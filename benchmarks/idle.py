"""Idle footprint of `pqd run` between cycles: RSS and CPU with no cycle running.

Two daemons, one after the other, each left alone for ``--window`` seconds (no scrape; only
/proc is read):

* ``after a cycle``: ``--interval 1h`` (the default probe, forkserver): the first cycle runs at
  start-up; the window starts ``--settle`` seconds after it ended, so the forkserver and the
  resource tracker it left behind are there, as between any two cycles.
* ``before any cycle``: ``--cron "0 0 1 1 *"``: no cycle runs at all.

RSS is sampled every second (median and max); CPU is the daemon process's user+system time over
the window, as a share of one core, and the same for its whole process tree.

    .venv/bin/python benchmarks/idle.py [--quick] [--window SECONDS]
"""

from __future__ import annotations

import sys

TARGET_RSS_MIB = 35.0
TARGET_CPU_PERCENT = 0.1


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

    mib = 1024 * 1024
    rows = []
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
            rss: list[float] = []
            tree_rss: list[float] = []
            uss = 0.0
            while True:
                own, rest = c.tree_rss(d.pid)
                rss.append(own / mib)
                tree_rss.append((own + rest) / mib)
                left = t0 + window - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(1.0, left))
            elapsed = time.monotonic() - t0
            own1 = proc.cpu_times()
            tree1 = c.process_tree_cpu(d.pid)
            uss = proc.memory_full_info().uss / mib
            threads = proc.num_threads()
            children = len(proc.children(recursive=True))
            cycles = len(d.finished_cycles())
        cpu = (own1.user + own1.system) - (own0.user + own0.system)
        cpu_pct = 100.0 * cpu / elapsed
        tree_pct = 100.0 * (tree1 - tree0) / elapsed
        r = c.summarize(rss)
        rows.append(
            [
                label,
                f"{elapsed:.0f}",
                f"{r.median:.1f} (max {r.maximum:.1f})",
                f"{uss:.1f}",
                f"{c.summarize(tree_rss).median:.1f}",
                f"{cpu_pct:.3f}",
                f"{tree_pct:.3f}",
                f"{threads} / {children}",
                cycles,
                c.verdict(r.maximum <= TARGET_RSS_MIB and cpu_pct <= TARGET_CPU_PERCENT),
            ]
        )
    c.print_table(
        "Idle footprint of pqd run (RSS in MiB, CPU in % of one core)",
        [
            "state",
            "window s",
            "daemon RSS",
            "daemon USS",
            "tree RSS",
            "daemon CPU %",
            "tree CPU %",
            "threads / children",
            "cycles run",
            f"target RSS <= {TARGET_RSS_MIB:.0f}, CPU <= {TARGET_CPU_PERCENT}%",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
