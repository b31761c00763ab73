"""Steady-state cycle cost of `pqd run` per start method, against one cycle in a fresh process.

For each start method: a `pqd run` daemon (the console script, default probe, run every
``--interval``) is measured after ``--warmup`` cycles over ``--cycles`` cycles: the CPU of its
whole process tree (pqd, the probe's runner, its forkserver and resource tracker, and every
worker and Manager they reaped; pqd is a child subreaper, so nothing of it leaves the tree) is
read right after each "cycle finished" log line (reading the log costs the daemon nothing; a
scrape would) and the wall time is the cycle's own duration_seconds. The fresh-process figure is
the same seed-shaped cycle (benchmarks/_bare.py, standard library only) run once by a new Python
process, measured with everything it starts by benchmarks/_reaper.py; a fresh `pqd once` is shown
too. Fresh runs are done half before and half after each daemon.

    .venv/bin/python benchmarks/cycle_cost.py [--quick] [--cycles N] [--fresh N]
"""

from __future__ import annotations

import sys

TARGET_SHARE = 0.25


def main() -> int:
    import argparse
    import time

    import _common as c

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--cycles", type=int, default=20, help="measured daemon cycles")
    parser.add_argument("--warmup", type=int, default=3, help="daemon cycles not measured")
    parser.add_argument("--fresh", type=int, default=6, help="fresh-process runs of each kind")
    parser.add_argument("--start-methods", default="forkserver,spawn,fork")
    args = parser.parse_args()
    methods = ["fork"] if args.quick else args.start_methods.split(",")
    cycles = 2 if args.quick else args.cycles
    warmup = 1 if args.quick else args.warmup
    fresh_runs = 1 if args.quick else args.fresh
    started = time.monotonic()
    print(c.machine_line())
    print(f"daemon: {warmup} warm-up + {cycles} measured cycles; fresh runs: {fresh_runs} each")

    pqd_exe = str(c.Path(c.PYTHON).parent / "pqd")
    rows = []
    for method in methods:
        interval = "4s" if method == "spawn" else "1s"
        bare_cmd = [c.PYTHON, str(c.BENCH_DIR / "_bare.py"), "--start-method", method]
        once_cmd = [pqd_exe, "once", "--start-method", method]
        fresh: list[tuple[float, float]] = []
        once: list[tuple[float, float]] = []

        def fresh_batch(
            n: int,
            fresh: list[tuple[float, float]],
            once: list[tuple[float, float]],
            bare_cmd: list[str] = bare_cmd,
            once_cmd: list[str] = once_cmd,
        ) -> None:
            for _ in range(n):
                fresh.append(c.run_fresh(bare_cmd))
                once.append(c.run_fresh(once_cmd))

        fresh_batch((fresh_runs + 1) // 2, fresh, once)
        per_cycle_cpu: list[float] = []
        with c.daemon(["--interval", interval, "--start-method", method]) as d:
            done = d.wait_cycles(warmup, 60)
            last_cpu = c.process_tree_cpu(d.pid)
            for k in range(cycles):
                done = d.wait_cycles(warmup + k + 1, 60)
                now = c.process_tree_cpu(d.pid)
                per_cycle_cpu.append(now - last_cpu)
                last_cpu = now
            measured = done[warmup : warmup + cycles]
            failed = [f for f in measured if f.get("result") != "success"]
            if failed:
                raise RuntimeError(f"daemon cycles failed: {failed}")
            walls = [float(f["duration_seconds"]) for f in measured]
        fresh_batch(fresh_runs // 2, fresh, once)
        time.sleep(0.5)

        dc, dw = c.summarize(per_cycle_cpu), c.summarize(walls)
        fc = c.summarize([cpu for _, cpu in fresh])
        fw = c.summarize([wall for wall, _ in fresh])
        oc = c.summarize([cpu for _, cpu in once])
        share = dc.median / fc.median
        target = c.verdict(share <= TARGET_SHARE) if method == "forkserver" else "-"
        rows.append(
            [
                method,
                f"{c.ms(dc.median)} ({dc.spread(1000, '.0f')})",
                f"{c.ms(dw.median)} ({dw.spread(1000, '.0f')})",
                f"{c.ms(fc.median)} ({fc.spread(1000, '.0f')})",
                f"{c.ms(fw.median)} ({fw.spread(1000, '.0f')})",
                f"{100 * share:.0f}%",
                f"{c.ms(oc.median)} ({oc.spread(1000, '.0f')})",
                target,
            ]
        )
    c.print_table(
        "Steady-state cycle cost: pqd run vs a fresh process (ms, median (p25-p75))",
        [
            "start method",
            "daemon CPU/cycle",
            "daemon wall/cycle",
            "fresh bare CPU",
            "fresh bare wall",
            "daemon/fresh CPU",
            "fresh `pqd once` CPU",
            f"target <= {TARGET_SHARE:.0%}",
        ],
        rows,
    )
    print(f"end: {c.machine_line()}; took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
