"""Idle tree PSS of `pqd run` with 1, 2 and 5 probes (benchmarks/idle.py's per-probe table):
each configuration run alone, its first cycles done, then sampled for a window; the cost of
each further probe is the difference to one probe, divided by the probes added."""

from __future__ import annotations

import time
from collections.abc import Sequence

import _common as c

#: docs/benchmarks.md: one probe's idle tree at most 40 MiB, each further probe at most 15 MiB.
TARGET_ONE_MIB = 40.0
TARGET_FURTHER_MIB = 15.0
COUNTS = (1, 2, 5)
#: benchmarks/_cold_harness.py: pqd with every runner started afresh each cycle.
COLD = [c.PYTHON, str(c.BENCH_DIR / "_cold_harness.py")]


#: Each configuration's interval: 1h, whose runners are not kept between cycles, and 59 s,
#: just under WARM_BELOW_SECONDS, whose runners, forkservers and trackers are.
INTERVALS = (("1h (cold)", "1h"), ("59s (warm)", "59s"))


def config(probes: int, interval: str) -> str:
    """``probes`` default probes (forkserver, the seed's shape) on ``interval``."""
    return "".join(f'[probes.p{n}]\ninterval = "{interval}"\n' for n in range(probes))


def tree_pss(probes: int, window: float, settle: float, interval: str) -> tuple[float, str]:
    """Median tree PSS (MiB) over the window after every probe's first cycle, and the roles of
    the tree's processes."""
    with c.daemon([], config(probes, interval)) as d:
        done = d.wait_cycles(probes, 120)
        failed = [e for e in done if e.get("result") != "success"]
        if failed:
            raise RuntimeError(f"a first cycle failed: {failed[0]}")
        time.sleep(settle)
        t0, sums = time.monotonic(), []
        roles: dict[str, int] = {}
        while True:
            sample = c.tree_memory(d.pid)
            sums.append(sum(m.pss for m in sample) / c.MIB)
            roles = {}
            for m in sample:
                roles[m.role] = roles.get(m.role, 0) + 1
            left = t0 + window - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(1.0, left))
    shown = ", ".join(f"{n} {role}" for role, n in sorted(roles.items()))
    return c.summarize(sums).median, shown


def rows(window: float, settle: float, counts: Sequence[int] = COUNTS) -> list[list[object]]:
    table = []
    for label, interval in INTERVALS:
        table += _rows(label, interval, window, settle, counts)
    return table


def _rows(
    label: str, interval: str, window: float, settle: float, counts: Sequence[int]
) -> list[list[object]]:
    measured = {n: tree_pss(n, window, settle, interval) for n in counts}
    one = measured[counts[0]][0]
    table = []
    for n, (pss, roles) in measured.items():
        further = (pss - one) / (n - 1) if n > 1 else None
        met = pss <= TARGET_ONE_MIB if n == 1 else (further or 0) <= TARGET_FURTHER_MIB
        table.append(
            [
                label,
                n,
                f"{pss:.1f}",
                "-" if further is None else f"{further:.1f}",
                f"<= {TARGET_ONE_MIB:.0f}" if n == 1 else f"<= {TARGET_FURTHER_MIB:.0f} each",
                c.verdict(met),
                roles,
            ]
        )
    return table


def print_rows(window: float, settle: float) -> None:
    c.print_table(
        "Idle tree PSS by number of probes (default probes, forkserver, each after its first "
        "cycle; MiB, medians over the window)",
        ["interval", "probes", "tree PSS", "per further probe", "target", "verdict", "processes"],
        rows(window, settle),
    )


def warm_and_cold(cycles: int, window: float, settle: float) -> list[list[object]]:
    """One default probe every 2 s, its runner kept (as below a minute) or started afresh each
    cycle (benchmarks/_cold_harness.py, as from a minute): the whole tree's CPU per cycle, side
    by side, and the idle tree PSS between cycles of each (a probe at 1h, warm by the harness's
    opposite is not possible, so warm idle is measured at 59 s). Run one after the other."""
    table = []
    for label, command, idle_interval in (("warm", None, "59s"), ("cold", COLD, "1h")):
        probe = '[probes.p]\ninterval = "2s"\n'
        with c.daemon([], probe, command=command) as d:
            d.wait_cycles(2, 120)
            before, cpu0 = len(d.finished_cycles()), c.process_tree_cpu(d.pid)
            done = d.wait_cycles(before + cycles, 60 + 10 * cycles)
            cpu = (c.process_tree_cpu(d.pid) - cpu0) / (len(done) - before)
            durations = [float(e.get("duration_seconds", "nan")) for e in done[before:]]
        idle = f'[probes.p]\ninterval = "{idle_interval}"\n'
        with c.daemon([], idle) as d:
            d.wait_cycles(1, 120)
            time.sleep(settle)
            t0, sums = time.monotonic(), []
            while time.monotonic() < t0 + window:
                sums.append(sum(m.pss for m in c.tree_memory(d.pid)) / c.MIB)
                time.sleep(1.0)
        table.append(
            [
                label,
                f"{cpu * 1000:.0f}",
                f"{c.summarize(durations).median * 1000:.0f}",
                f"{c.summarize(sums).median:.1f}",
            ]
        )
    return table


def print_warm_and_cold(cycles: int, window: float, settle: float) -> None:
    rows = warm_and_cold(cycles, window, settle)
    c.print_table(
        "A probe's runner kept between cycles or started afresh each cycle: the whole tree's "
        f"CPU per cycle (ms, mean of {cycles} cycles at 2 s), the median cycle duration (ms), "
        "and the idle tree PSS between cycles (MiB, median)",
        ["runner", "tree CPU per cycle ms", "cycle ms", "idle tree PSS MiB"],
        rows,
    )
    warm, cold = (float(r[1]) for r in rows)
    saved = float(rows[0][3]) - float(rows[1][3])
    print(
        f"cold costs {cold - warm:.0f} ms CPU more per cycle and saves {saved:.1f} MiB between "
        f"cycles: at one cycle a minute that is {100 * (cold - warm) / 60000:.2f}% of a core"
    )
