"""Scaling: cycle time, cycle CPU and per-operation queue latency as the probe grows.

Two sweeps of run_cycle() in this process (forkserver unless ``--start-method``), each point
``--repeat`` times (at least 5) interleaved with the bare standard-library cycle of
benchmarks/_bare.py doing the same work: pool size 1 -> 100 (5 items per producer) and items per
producer 1 -> 10,000 (4 workers); 5 rounds, queue maxsize 3, as the default probe. The points are
1, 2, 5, 10 in each decade, so every decade has four points of its own.

CPU is the process tree's, whole: this process is a child subreaper (as pqd's runner is), and each
cycle's CPU is this process's own and reaped children's time plus every live descendant's own and
reaped time (the forkserver, which reaps the workers and the Manager, and the resource tracker),
before and after (benchmarks/_common.py ``measure``). Per-operation latency is what the workers
measured around each put_nowait/get_nowait: the mean over the cycle's operations, from the
workers' bucketed totals (a producer's put beyond the third meets a full queue and raises
queue.Full, which is still one round trip to the Manager).

Tables give medians with p25-p75 over the point's cycles; the plot (matplotlib, Agg) has the
same as error bars. How the cost grows is a least-squares line per decade of the swept
parameter, fitted to every cycle of the decade's points (not to the medians), with its slope
and R^2: one line across four decades would be decided by the largest points alone.

    .venv/bin/python benchmarks/scaling.py [--quick] [--repeat N] [--plot PATH]
"""

from __future__ import annotations

import sys

WORKERS = (1, 2, 5, 10, 20, 50, 100)
ITEMS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
MIN_REPEAT = 5


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


def decades(values: list[int]) -> list[tuple[int, int]]:
    """[(1, 10), (10, 100), ...] covering ``values``, each holding at least two of them."""
    found = []
    lo = 1
    while lo < max(values):
        hi = lo * 10
        if sum(1 for v in values if lo <= v <= hi) >= 2:
            found.append((lo, hi))
        lo = hi
    return found


def main() -> int:
    import argparse
    import dataclasses
    import tempfile
    import time
    from pathlib import Path

    import _bare
    import _common as c

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument(
        "--repeat",
        type=int,
        default=MIN_REPEAT,
        help=f"cycles per point and kind (>= {MIN_REPEAT})",
    )
    parser.add_argument("--start-method", default="forkserver")
    parser.add_argument("--plot", help="PNG to write (default docs/benchmarks-scaling.png)")
    args = parser.parse_args()
    if not args.quick and args.repeat < MIN_REPEAT:
        parser.error(f"--repeat must be at least {MIN_REPEAT}")
    repeat = 2 if args.quick else args.repeat
    workers_sweep = (1, 2) if args.quick else WORKERS
    items_sweep = (1, 5, 10) if args.quick else ITEMS
    if args.plot:
        plot_path = Path(args.plot)
    elif args.quick:
        plot_path = Path(tempfile.mkdtemp(prefix="pqd-scaling-")) / "scaling.png"
    else:
        plot_path = c.ROOT / "docs" / "benchmarks-scaling.png"

    from pqd.probe import ProbeConfig
    from pqd.runner.containment import become_child_subreaper
    from pqd.runner.cycle import run_cycle

    started = time.monotonic()
    become_child_subreaper()
    print(c.machine_line())
    print(
        f"start method: {args.start_method}; {repeat} cycles per point and kind, interleaved; "
        f"pool sizes {list(workers_sweep)}; items per producer {list(items_sweep)}"
    )
    base = ProbeConfig(start_method=args.start_method, timeout=600.0)
    run_cycle(base)  # warm-up: starts the forkserver
    _bare.bare_cycle(args.start_method)

    @dataclasses.dataclass
    class Point:
        workers: int
        items: int
        ops: int
        pqd_wall: list[float]
        pqd_cpu: list[float]
        bare_wall: list[float]
        bare_cpu: list[float]
        put_us: list[float]
        get_us: list[float]

    def point(workers: int, items: int) -> Point:
        probe = dataclasses.replace(base, workers=workers, items_per_producer=items)
        p = Point(workers, items, 0, [], [], [], [], [], [])
        for i in range(repeat):
            for kind in ("pqd", "bare") if i % 2 == 0 else ("bare", "pqd"):
                if kind == "pqd":
                    m = c.measure(lambda probe=probe: run_cycle(probe))
                    result = m.value
                    if not result.success:
                        raise RuntimeError(f"{workers}x{items}: {result.reason}: {result.detail}")
                    p.pqd_wall.append(m.wall)
                    p.pqd_cpu.append(m.cpu)
                    # Workers report bucketed durations (pqd.bounds): the mean per operation.
                    put, get = result.operations("put"), result.operations("get")
                    p.put_us.append(1e6 * put.total / max(sum(put.counts), 1))
                    p.get_us.append(1e6 * get.total / max(sum(get.counts), 1))
                    p.ops = sum(put.counts) + sum(get.counts)
                else:
                    m = c.measure(
                        lambda w=workers, n=items: _bare.bare_cycle(
                            args.start_method, workers=w, items=n
                        )
                    )
                    p.bare_wall.append(m.wall)
                    p.bare_cpu.append(m.cpu)
        return p

    def write_plot(path: Path, by_workers: list[Point], by_items: list[Point], method: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        def bars(values: list[list[float]], scale: float) -> tuple[list[float], list[list[float]]]:
            meds, errs_lo, errs_hi = [], [], []
            for one in values:
                s = c.summarize(one)
                meds.append(s.median * scale)
                errs_lo.append((s.median - s.p25) * scale)
                errs_hi.append((s.p75 - s.median) * scale)
            return meds, [errs_lo, errs_hi]

        fig, axes = plt.subplots(2, 3, figsize=(15, 8))
        for row, points, key, xlabel in (
            (0, by_workers, "workers", "pool workers (5 items per producer)"),
            (1, by_items, "items", "items per producer (4 workers)"),
        ):
            xs = [getattr(p, key) for p in points]
            panels = (
                (
                    "cycle wall time (ms)",
                    (("pqd_wall", "pqd run_cycle"), ("bare_wall", "bare")),
                    1e3,
                ),
                (
                    "cycle CPU, whole tree (ms)",
                    (("pqd_cpu", "pqd run_cycle"), ("bare_cpu", "bare")),
                    1e3,
                ),
                (
                    "queue op latency, mean (us)",
                    (("put_us", "put_nowait"), ("get_us", "get_nowait")),
                    1,
                ),
            )
            for col, (ylabel, series, scale) in enumerate(panels):
                ax = axes[row][col]
                for (attr, label), marker in zip(series, ("o-", "s--"), strict=True):
                    meds, err = bars([getattr(p, attr) for p in points], scale)
                    ax.errorbar(xs, meds, yerr=err, fmt=marker, capsize=3, label=label)
                ax.set(xscale="log", xlabel=xlabel, ylabel=ylabel)
                if col < 2 and row == 1:
                    ax.set(yscale="log")
                else:
                    ax.set_ylim(bottom=0)
                ax.legend()
        fig.suptitle(
            f"pqd scaling ({method}, {c.cpu_model()}, {c.os.cpu_count()} CPUs): "
            "median, bars p25-p75"
        )
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)

    by_workers = [point(w, 5) for w in workers_sweep]
    by_items = [point(4, n) for n in items_sweep]

    def cell(values: list[float], scale: float = 1000.0, fmt: str = ".1f") -> str:
        s = c.summarize(values)
        return f"{s.median * scale:{fmt}} ({s.p25 * scale:.0f}-{s.p75 * scale:.0f})"

    def rows(points: list[Point]) -> list[list[object]]:
        return [
            [
                p.workers,
                p.items,
                p.ops,
                len(p.pqd_wall),
                cell(p.pqd_wall),
                cell(p.bare_wall),
                f"{c.summarize(p.pqd_wall).median / c.summarize(p.bare_wall).median:.2f}",
                cell(p.pqd_cpu),
                cell(p.bare_cpu),
                f"{c.summarize(p.pqd_cpu).median / c.summarize(p.bare_cpu).median:.2f}",
                cell(p.put_us, 1.0, ".0f"),
                cell(p.get_us, 1.0, ".0f"),
            ]
            for p in points
        ]

    headers = [
        "workers",
        "items/producer",
        "queue ops",
        "n",
        "pqd wall ms",
        "bare wall ms",
        "pqd/bare wall",
        "pqd CPU ms (tree)",
        "bare CPU ms (tree)",
        "pqd/bare CPU",
        "put mean us",
        "get mean us",
    ]
    title = "(median (p25-p75) over the point's cycles)"
    c.print_table(f"Scaling with pool size {title}", headers, rows(by_workers))
    c.print_table(f"Scaling with items per producer {title}", headers, rows(by_items))

    fits = []
    for sweep, points, key, unit in (
        ("pool size", by_workers, "workers", "per worker"),
        ("items per producer", by_items, "items", "per item per producer"),
    ):
        for lo, hi in decades([getattr(p, key) for p in points]):
            inside = [p for p in points if lo <= getattr(p, key) <= hi]
            for what, attr in (("pqd wall", "pqd_wall"), ("pqd CPU", "pqd_cpu")):
                xs = [float(getattr(p, key)) for p in inside for _ in getattr(p, attr)]
                ys = [1000.0 * y for p in inside for y in getattr(p, attr)]
                slope, icpt, r2 = linear_fit(xs, ys)
                ops_per_x = (inside[-1].ops - inside[0].ops) / (
                    getattr(inside[-1], key) - getattr(inside[0], key)
                )
                per_op = f"{1000 * slope / ops_per_x:.0f}" if ops_per_x > 0 else "-"
                fits.append(
                    [
                        sweep,
                        f"{lo}-{hi}",
                        ", ".join(str(getattr(p, key)) for p in inside),
                        len(xs),
                        what,
                        f"{icpt:.1f}",
                        f"{slope:.3f} {unit}",
                        per_op,
                        f"{r2:.3f}",
                    ]
                )
    c.print_table(
        "Growth per decade: least-squares line through every cycle of the decade's points",
        [
            "sweep",
            "decade",
            "points",
            "cycles",
            "figure",
            "intercept ms",
            "slope ms",
            "slope us per queue op",
            "R^2",
        ],
        fits,
    )
    lat = [c.summarize(p.put_us + p.get_us).median for p in by_items]
    print(
        f"per-operation latency (median of the cycles' means, put and get): "
        f"{min(lat):.0f}-{max(lat):.0f} us from {items_sweep[0]} to {items_sweep[-1]} items "
        "per producer"
    )

    write_plot(plot_path, by_workers, by_items, args.start_method)
    print(f"plot: {plot_path}")
    print(f"end: {c.machine_line()}; took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
