"""Instrumentation overhead: pqd's run_cycle() against a bare standard-library loop.

Both do the same work (benchmarks/_bare.py: same start method, pool size, Manager queue,
rounds and items, the same per-job identity and host pid count the seed printed) in this
process, interleaved (A B B A ...), after one warm-up cycle of each. Wall time is perf_counter
around the call; CPU is the process tree's (this process, every descendant it or its forkserver
reaped, and the live helpers: see benchmarks/_common.py).

    .venv/bin/python benchmarks/overhead.py [--quick] [--cycles N] [--start-methods a,b]
"""

from __future__ import annotations

# Only sys at the top: spawn and forkserver workers re-run this script's top level (CPython
# re-imports __main__ in each child), and both sides would pay for anything imported here.
import sys

TARGET_RATIO = 1.05


def main() -> int:
    import argparse

    import _bare
    import _common as c

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--cycles", type=int, default=30, help="cycles of each kind (>= 30)")
    parser.add_argument("--start-methods", default="forkserver,fork,spawn")
    args = parser.parse_args()
    cycles = 2 if args.quick else args.cycles
    methods = ["fork"] if args.quick else args.start_methods.split(",")

    from pqd.config import ProbeConfig
    from pqd.containment import become_child_subreaper
    from pqd.cycle import run_cycle

    become_child_subreaper()  # as pqd run does
    print(c.machine_line())
    print(f"cycles of each kind: {cycles}; probe: 4 workers, maxsize 3, 5 rounds, 5 items")

    rows = []
    for method in methods:
        probe = ProbeConfig(start_method=method)

        def pqd_cycle(probe: ProbeConfig = probe) -> None:
            result = run_cycle(probe)
            if not result.success:
                raise RuntimeError(f"pqd cycle failed: {result.reason}: {result.detail}")

        def bare_cycle(method: str = method) -> None:
            if _bare.bare_cycle(method) != 10:
                raise RuntimeError("bare cycle did not run 10 jobs")

        # Warm-up: the first cycle starts the forkserver (with pqd's preload) and fills caches.
        pqd_cycle()
        bare_cycle()
        pqd_wall: list[float] = []
        pqd_cpu: list[float] = []
        bare_wall: list[float] = []
        bare_cpu: list[float] = []
        for i in range(cycles):
            order = [("pqd", pqd_cycle), ("bare", bare_cycle)]
            if i % 2:
                order.reverse()
            for name, func in order:
                m = c.measure(func)
                (pqd_wall if name == "pqd" else bare_wall).append(m.wall)
                (pqd_cpu if name == "pqd" else bare_cpu).append(m.cpu)
        pw, bw = c.summarize(pqd_wall), c.summarize(bare_wall)
        pc, bc = c.summarize(pqd_cpu), c.summarize(bare_cpu)
        wall_ratio = pw.median / bw.median
        cpu_ratio = pc.median / bc.median
        paired = c.summarize([p / b for p, b in zip(pqd_cpu, bare_cpu, strict=True) if b > 0])
        rows.append(
            [
                method,
                cycles,
                f"{c.ms(pw.median)} ({pw.spread(1000, '.0f')})",
                f"{c.ms(bw.median)} ({bw.spread(1000, '.0f')})",
                f"{wall_ratio:.2f}",
                f"{c.ms(pc.median)} ({pc.spread(1000, '.0f')})",
                f"{c.ms(bc.median)} ({bc.spread(1000, '.0f')})",
                f"{cpu_ratio:.2f}",
                f"{c.ms(pc.mean)} / {c.ms(bc.mean)}",
                f"{paired.median:.2f}",
                c.verdict(wall_ratio <= TARGET_RATIO and cpu_ratio <= TARGET_RATIO),
            ]
        )
    c.print_table(
        "Instrumentation overhead: run_cycle vs bare stdlib loop (ms per cycle, median (p25-p75))",
        [
            "start method",
            "n",
            "pqd wall",
            "bare wall",
            "wall ratio",
            "pqd CPU",
            "bare CPU",
            "CPU ratio",
            "mean CPU pqd / bare",
            "paired CPU ratio",
            f"target <= {TARGET_RATIO}",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
