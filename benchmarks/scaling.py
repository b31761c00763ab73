"""Scaling: cycle time and per-operation queue latency as the probe grows.

Two sweeps of run_cycle() in this process (forkserver unless ``--start-method``), each point
``--repeat`` times interleaved with the bare standard-library loop of benchmarks/_bare.py doing
the same work: pool size 1 -> 32 (5 items per producer) and items per producer 3 -> 10,000
(4 workers); 5 rounds, queue maxsize 3, as the default probe. Per-operation latency is what the
workers measured around each put_nowait/get_nowait (the mean over the cycle's operations, from
the workers' bucketed totals; a producer's put beyond the third meets a full queue and raises
queue.Full, which is still one round trip to the Manager). Writes a PNG (matplotlib, Agg) and
states how the cost grows from a least-squares line through each sweep.

    .venv/bin/python benchmarks/scaling.py [--quick] [--repeat N] [--plot PATH]
"""

from __future__ import annotations

import sys

WORKERS = (1, 2, 4, 8, 16, 32)
ITEMS = (3, 10, 100, 1000, 3000, 10000)


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """(slope, intercept, R^2) of the least-squares line."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    return slope, intercept, (1 - ss_res / ss_tot) if ss_tot else 1.0


def main() -> int:
    import argparse
    import dataclasses
    import statistics
    import tempfile
    from pathlib import Path

    import _bare
    import _common as c

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--repeat", type=int, default=3, help="cycles per point and kind")
    parser.add_argument("--start-method", default="forkserver")
    parser.add_argument("--plot", help="PNG to write (default docs/benchmarks-scaling.png)")
    args = parser.parse_args()
    repeat = 1 if args.quick else args.repeat
    workers_sweep = (1, 2) if args.quick else WORKERS
    items_sweep = (3, 10) if args.quick else ITEMS
    if args.plot:
        plot_path = Path(args.plot)
    elif args.quick:
        plot_path = Path(tempfile.mkdtemp(prefix="pqd-scaling-")) / "scaling.png"
    else:
        plot_path = c.ROOT / "docs" / "benchmarks-scaling.png"

    from pqd.config import ProbeConfig
    from pqd.containment import become_child_subreaper
    from pqd.cycle import run_cycle

    become_child_subreaper()
    print(c.machine_line())
    print(f"start method: {args.start_method}; {repeat} cycles per point and kind")
    base = ProbeConfig(start_method=args.start_method, timeout=600.0)
    run_cycle(base)  # warm-up: starts the forkserver
    _bare.bare_cycle(args.start_method)

    @dataclasses.dataclass
    class Point:
        workers: int
        items: int
        pqd_wall: float
        pqd_cpu: float
        bare_wall: float
        put_us: float
        get_us: float
        ops: int

    def point(workers: int, items: int) -> Point:
        probe = dataclasses.replace(base, workers=workers, items_per_producer=items)
        pw, pc, bw, puts, gets = [], [], [], [], []
        ops = 0
        for i in range(repeat):
            order = ["pqd", "bare"] if i % 2 == 0 else ["bare", "pqd"]
            for kind in order:
                if kind == "pqd":
                    m = c.measure(lambda probe=probe: run_cycle(probe))
                    result = m.value
                    if not result.success:
                        raise RuntimeError(f"{workers}x{items}: {result.reason}: {result.detail}")
                    pw.append(m.wall)
                    pc.append(m.cpu)
                    # Workers report bucketed durations (pqd.bounds): the mean per operation.
                    put, get = result.operations("put"), result.operations("get")
                    puts.append(put.total / max(sum(put.counts), 1))
                    gets.append(get.total / max(sum(get.counts), 1))
                    ops = sum(put.counts) + sum(get.counts)
                else:
                    m = c.measure(
                        lambda w=workers, n=items: _bare.bare_cycle(
                            args.start_method, workers=w, items=n
                        )
                    )
                    bw.append(m.wall)
        return Point(
            workers,
            items,
            statistics.median(pw),
            statistics.median(pc),
            statistics.median(bw),
            statistics.median(puts) * 1e6,
            statistics.median(gets) * 1e6,
            ops,
        )

    by_workers = [point(w, 5) for w in workers_sweep]
    by_items = [point(4, n) for n in items_sweep]

    def rows(points: list[Point]) -> list[list[object]]:
        return [
            [
                p.workers,
                p.items,
                p.ops,
                c.ms(p.pqd_wall),
                c.ms(p.pqd_cpu),
                c.ms(p.bare_wall),
                f"{p.pqd_wall / p.bare_wall:.2f}",
                f"{p.put_us:.0f}",
                f"{p.get_us:.0f}",
            ]
            for p in points
        ]

    headers = [
        "workers",
        "items/producer",
        "queue ops",
        "pqd wall ms",
        "pqd CPU ms",
        "bare wall ms",
        "pqd/bare wall",
        "put p50 us",
        "get p50 us",
    ]
    c.print_table("Scaling with pool size (medians)", headers, rows(by_workers))
    c.print_table("Scaling with items per producer (medians)", headers, rows(by_items))

    w_slope, w_icpt, w_r2 = linear_fit(
        [float(p.workers) for p in by_workers], [p.pqd_wall for p in by_workers]
    )
    i_slope, i_icpt, i_r2 = linear_fit(
        [float(p.ops) for p in by_items], [p.pqd_wall for p in by_items]
    )
    op_lat = [p.put_us for p in by_items] + [p.get_us for p in by_items]
    print(
        f"growth: cycle wall = {w_icpt * 1000:.0f} ms + {w_slope * 1000:.1f} ms per pool worker"
        f" (R^2 {w_r2:.3f}); = {i_icpt * 1000:.0f} ms + {i_slope * 1e6:.0f} us per queue"
        f" operation (R^2 {i_r2:.3f}); per-operation latency stays within"
        f" {min(op_lat):.0f}-{max(op_lat):.0f} us from {items_sweep[0]} to {items_sweep[-1]}"
        " items per producer."
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    (a, b), (cc, d) = axes
    xs = [p.workers for p in by_workers]
    a.plot(xs, [p.pqd_wall * 1000 for p in by_workers], "o-", label="pqd run_cycle")
    a.plot(xs, [p.bare_wall * 1000 for p in by_workers], "s--", label="bare stdlib loop")
    a.set(xlabel="pool workers", ylabel="cycle wall time (ms)", title="Cycle time vs pool size")
    a.legend()
    xi = [p.items for p in by_items]
    b.plot(xi, [p.pqd_wall * 1000 for p in by_items], "o-", label="pqd run_cycle")
    b.plot(xi, [p.bare_wall * 1000 for p in by_items], "s--", label="bare stdlib loop")
    b.set(
        xscale="log",
        yscale="log",
        xlabel="items per producer",
        ylabel="cycle wall time (ms)",
        title="Cycle time vs items (4 workers)",
    )
    b.legend()
    cc.plot(xs, [p.put_us for p in by_workers], "o-", label="put_nowait")
    cc.plot(xs, [p.get_us for p in by_workers], "s-", label="get_nowait")
    cc.set(xlabel="pool workers", ylabel="median latency (us)", title="Queue op vs pool size")
    cc.set_ylim(bottom=0)
    cc.legend()
    d.plot(xi, [p.put_us for p in by_items], "o-", label="put_nowait")
    d.plot(xi, [p.get_us for p in by_items], "s-", label="get_nowait")
    d.set(xscale="log", xlabel="items per producer", ylabel="median latency (us)")
    d.set(title="Queue op vs items (4 workers)")
    d.set_ylim(bottom=0)
    d.legend()
    fig.suptitle(f"pqd scaling ({args.start_method}, {c.cpu_model()}, {c.os.cpu_count()} CPUs)")
    fig.tight_layout()
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(plot_path, dpi=90)
    print(f"plot: {plot_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
