"""Instrumentation overhead: pqd's cycle against a bare standard-library cycle, whole-tree CPU.

The target (spawn <= 1.10, forkserver and fork <= 1.05) is on ``pqd once``, the whole command,
against the bare cycle; the same ratio for ``run_cycle()`` alone says how much of the gap is
the cycle's instrumentation and how much is the command around it (its own interpreter, the
config, the runner process). Each is a fresh process per cycle: per start method, interleaved
(A B C, C B A, ...), ``--runs`` times each, after one warm-up of each:

* ``bare``: a fresh ``python benchmarks/overhead.py --one bare``: one cycle of
  benchmarks/_bare.py (same start method, pool size, Manager queue, rounds and items, the same
  per-job identity and host pid count the seed printed), standard library only;
* ``pqd cycle``: a fresh ``python benchmarks/overhead.py --one pqd``: one ``run_cycle()`` of the
  default probe with that start method, i.e. what `pqd once`'s runner does for a cycle, in a
  process that made itself a child subreaper as the runner does. Both sides are the same script,
  so spawn children re-import the same ``__main__`` (which imports only ``sys``);
* ``pqd once``: the whole command, ``pqd once --start-method M`` (CLI, config, the runner
  process, the trace it prints).

Each fresh process runs under benchmarks/_reaper.py, a child subreaper, so every process of its
tree (forkserver, resource tracker, Manager, workers, the runner) is reaped inside the tree and
its CPU is in the reaper's RUSAGE_CHILDREN: whole-tree CPU, nothing left out. Wall time is the
measured process's, start to exit. Figures are medians with p25-p75; "paired" is the median (and
p25-p75) of the per-run ratios, from which drift in machine load cancels out.

A second table says where the fresh-process gap goes: the CPU of a fresh interpreter that only
imports, the bare cycle's modules against pqd's (the runner's cycle side, the CLI side).

A third table keeps the older, warm view: run_cycle() and the bare cycle one after the other in
this one long-lived process (as a runner between cycles), process-tree CPU (this process, what it
and its forkserver reaped, the live helpers; see benchmarks/_common.py). No target there.

    .venv/bin/python benchmarks/overhead.py [--quick] [--runs N] [--warm-cycles N]
        [--start-methods forkserver,fork,spawn]
"""

from __future__ import annotations

# Only sys at the top: spawn and forkserver workers re-run this script's top level (CPython
# re-imports __main__ in each child), and both sides would pay for anything imported here.
import sys

#: Whole-tree CPU of `pqd once` (and, beside it, of run_cycle alone) / the bare cycle, fresh
#: processes.
TARGETS = {"spawn": 1.10, "forkserver": 1.05, "fork": 1.05}


def one_cycle(kind: str, method: str) -> int:
    """``--one``: run one cycle of ``kind`` in this (fresh) process and exit."""
    if kind == "bare":
        import _bare

        return 0 if _bare.bare_cycle(method) == 10 else 1
    from pqd.probe import ProbeConfig
    from pqd.runner.containment import become_child_subreaper
    from pqd.runner.cycle import run_cycle

    become_child_subreaper()  # as pqd's runner does
    result = run_cycle(ProbeConfig(start_method=method))
    if not result.success:
        print(f"pqd cycle failed: {result.reason}: {result.detail}", file=sys.stderr)
        return 1
    return 0


#: What a fresh interpreter imports on each side, without running anything: the bare cycle's
#: modules (benchmarks/_bare.py and what its Pool and Manager import), and pqd's.
_BARE_IMPORTS = (
    "import argparse, multiprocessing, multiprocessing.managers, multiprocessing.pool, os, queue, "
    "typing"
)
IMPORT_SETS = {
    "an empty interpreter": "pass",
    "the bare cycle's modules": _BARE_IMPORTS,
    "the bare cycle's modules + pqd.runner.cycle (the runner's side)": _BARE_IMPORTS
    + "; import pqd.runner.main, pqd.runner.cycle",
    "pqd once's CLI side (pqd.cli, pqd.config.load, pqd.supervisor.runners)": (
        "import pqd.cli, pqd.config.load, pqd.supervisor.runners"
    ),
}


def import_table(runs: int) -> list[list[object]]:
    import _common as c

    cpu: dict[str, list[float]] = {name: [] for name in IMPORT_SETS}
    commands = {name: [c.PYTHON, "-c", code] for name, code in IMPORT_SETS.items()}
    for argv in commands.values():
        c.run_fresh(argv)  # warm-up: page cache, .pyc files
    names = list(commands)
    for i in range(runs):
        for name in names if i % 2 == 0 else reversed(names):
            cpu[name].append(c.run_fresh(commands[name])[1])
    empty = c.summarize(cpu["an empty interpreter"]).median
    bare = c.summarize(cpu["the bare cycle's modules"]).median
    rows: list[list[object]] = []
    for name in names:
        v = c.summarize(cpu[name])
        spread = f"{c.ms(v.median)} ({v.spread(1000, '.0f')})"
        rows.append([name, runs, spread, c.ms(v.median - empty), c.ms(v.median - bare)])
    return rows


def fresh_table(methods: list[str], runs: int) -> list[list[object]]:
    import _common as c

    rows = []
    me = str(c.BENCH_DIR / "overhead.py")
    pqd_exe = str(c.Path(c.PYTHON).parent / "pqd")
    for method in methods:
        commands = {
            "bare": [c.PYTHON, me, "--one", "bare", "--start-method", method],
            "pqd cycle": [c.PYTHON, me, "--one", "pqd", "--start-method", method],
            "pqd once": [pqd_exe, "once", "--start-method", method],
        }
        for argv in commands.values():
            c.run_fresh(argv)  # warm-up: page cache, .pyc files
        wall: dict[str, list[float]] = {k: [] for k in commands}
        cpu: dict[str, list[float]] = {k: [] for k in commands}
        names = list(commands)
        for i in range(runs):
            for name in names if i % 2 == 0 else reversed(names):
                w, t = c.run_fresh(commands[name])
                wall[name].append(w)
                cpu[name].append(t)
        rows.append(_fresh_row(method, runs, wall, cpu))
    return rows


def _fresh_row(
    method: str, runs: int, wall: dict[str, list[float]], cpu: dict[str, list[float]]
) -> list[object]:
    import _common as c

    s, ms = c.summarize, c.ms

    def cell(values: list[float]) -> str:
        v = s(values)
        return f"{ms(v.median)} ({v.spread(1000, '.0f')})"

    bare, cyc, once = (s(cpu[k]) for k in ("bare", "pqd cycle", "pqd once"))
    target = TARGETS.get(method)

    def ratios(side: str, medians: float) -> list[str]:
        paired = s([p / b for p, b in zip(cpu[side], cpu["bare"], strict=True) if b > 0])
        return [
            f"{medians:.2f}",
            f"{paired.median:.2f} ({paired.p25:.2f}-{paired.p75:.2f})",
            c.verdict(medians <= target) if target else "-",
        ]

    return [
        method,
        runs,
        f"<= {target:.2f}" if target else "-",
        cell(cpu["bare"]),
        cell(cpu["pqd once"]),
        *ratios("pqd once", once.median / bare.median),
        cell(cpu["pqd cycle"]),
        *ratios("pqd cycle", cyc.median / bare.median),
        cell(wall["bare"]),
        cell(wall["pqd cycle"]),
    ]


def warm_table(methods: list[str], cycles: int) -> list[list[object]]:
    import _bare
    import _common as c

    from pqd.probe import ProbeConfig
    from pqd.runner.cycle import run_cycle

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
        cpu: dict[str, list[float]] = {"pqd": [], "bare": []}
        wall: dict[str, list[float]] = {"pqd": [], "bare": []}
        for i in range(cycles):
            order = [("pqd", pqd_cycle), ("bare", bare_cycle)]
            for name, func in order if i % 2 == 0 else reversed(order):
                m = c.measure(func)
                wall[name].append(m.wall)
                cpu[name].append(m.cpu)
        s, ms = c.summarize, c.ms
        pc, bc = s(cpu["pqd"]), s(cpu["bare"])
        pw, bw = s(wall["pqd"]), s(wall["bare"])
        paired = s([p / b for p, b in zip(cpu["pqd"], cpu["bare"], strict=True) if b > 0])
        rows.append(
            [
                method,
                cycles,
                f"{ms(bc.median)} ({bc.spread(1000, '.0f')})",
                f"{ms(pc.median)} ({pc.spread(1000, '.0f')})",
                f"{pc.median / bc.median:.2f}",
                f"{paired.median:.2f} ({paired.p25:.2f}-{paired.p75:.2f})",
                f"{ms(bw.median)} ({bw.spread(1000, '.0f')})",
                f"{ms(pw.median)} ({pw.spread(1000, '.0f')})",
                f"{pw.median / bw.median:.2f}",
            ]
        )
    return rows


def main() -> int:
    import argparse
    import time

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--runs", type=int, default=30, help="fresh processes of each kind")
    parser.add_argument("--warm-cycles", type=int, default=20, help="in-process cycles of each")
    parser.add_argument("--start-methods", default="forkserver,fork,spawn")
    parser.add_argument("--one", choices=("pqd", "bare"), help=argparse.SUPPRESS)
    parser.add_argument("--start-method", default="forkserver", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one_cycle(args.one, args.start_method)

    import _common as c

    runs = 1 if args.quick else args.runs
    warm = 1 if args.quick else args.warm_cycles
    methods = ["fork"] if args.quick else args.start_methods.split(",")
    started = time.monotonic()
    print(c.machine_line())
    print(
        f"fresh processes of each kind: {runs}; warm in-process cycles of each: {warm}; "
        "probe: 4 workers, maxsize 3, 5 rounds, 5 items"
    )
    fresh = fresh_table(methods, runs)
    c.print_table(
        "Instrumentation overhead: one cycle in a fresh process, whole-tree CPU under a child "
        "subreaper (ms, median (p25-p75))",
        [
            "start method",
            "n",
            "target",
            "bare CPU",
            "`pqd once` CPU",
            "`pqd once` / bare (medians)",
            "paired",
            "`pqd once` verdict",
            "pqd cycle CPU",
            "pqd cycle / bare (medians)",
            "paired",
            "pqd cycle verdict",
            "bare wall",
            "pqd cycle wall",
        ],
        fresh,
    )

    c.print_table(
        "Where the fresh-process gap goes: a fresh interpreter that only imports, whole-tree CPU "
        "(ms, median (p25-p75))",
        ["imports", "n", "CPU", "beyond an empty interpreter", "beyond the bare cycle's modules"],
        import_table(runs),
    )

    from pqd.runner.containment import become_child_subreaper

    become_child_subreaper()  # as pqd's runner does
    c.print_table(
        "Instrumentation overhead, warm: run_cycle vs the bare cycle in one long-lived process "
        "(process-tree CPU, ms, median (p25-p75); no target)",
        [
            "start method",
            "n",
            "bare CPU",
            "pqd CPU",
            "CPU ratio (medians)",
            "paired CPU ratio",
            "bare wall",
            "pqd wall",
            "wall ratio",
        ],
        warm_table(methods, warm),
    )
    print(f"end: {c.machine_line()}; took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
