"""Idle footprint of `pqd run` between cycles, beside two peers: memory and CPU at rest.

Four servers, one after the other (never two at once: PSS splits a shared page between the
processes mapping it, so a peer running beside pqd would lower pqd's figure), each left alone
(no scrape; only /proc is read):

* pqd ``after a cycle``: ``--interval 59s`` (the default probe, forkserver): the first cycle runs
  at start-up; the window (``--window`` s, at most until the next cycle is due) starts
  ``--settle`` seconds after it ended, so the probe's runner and, below it, the forkserver and
  resource tracker it keeps are there, as between any two cycles (pqd -> runner -> {forkserver,
  resource tracker}, docs/design.md §1a); and ``--interval 1h``, whose runner is not kept (a
  probe cycling once a minute or less often gets a fresh one each cycle). The tree PSS target
  (<= 40 MiB, docs/benchmarks.md) is checked on both.
* pqd ``before any cycle``: ``--cron "0 0 1 1 *"``: no cycle runs at all, so no runner yet.
* prometheus_client's own server: benchmarks/_stock_server.py (``start_http_server`` as shipped,
  on the registry pqd builds, fed one real cycle of the default probe in that process, which
  leaves that process a forkserver and a resource tracker: they are its tree), for
  ``--peer-window`` s after it printed its port and ``--settle`` s more.
* Debian's node_exporter: ``/usr/bin/prometheus-node-exporter
  --web.listen-address=127.0.0.1:PORT`` (its default collectors), for ``--peer-window`` s after
  it listens and ``--settle`` s more. It must be installed (``make system-deps``).

Every second, each process of a tree is sampled: RSS, USS and PSS (psutil's
``memory_full_info``, i.e. ``/proc/PID/smaps_rollup``); figures are medians over the window's
samples (pqd's RSS also gives the maximum, which its target is checked against). "alone" is the
server's own process; "tree" is it and every live descendant: the sum of RSS (counting shared
pages once per process) and the sum of PSS (what the tree really holds, the figure to compare).
CPU is user+system time over the window as a share of one core: each process's own, and the
whole tree's (every live descendant, and what each has reaped).

Then the cost per probe (benchmarks/_per_probe.py): the idle tree PSS with 1, 2 and 5 default
probes beside the targets (one probe <= 40 MiB, each further <= 15 MiB), at 1h (runners not
kept between cycles) and at 59 s (kept); and both sides of not keeping them: the whole tree's
CPU per cycle with the runner kept or started afresh, and the idle PSS each leaves.

    .venv/bin/python benchmarks/idle.py [--quick] [--window SECONDS] [--peer-window SECONDS]
"""

from __future__ import annotations

import sys
from typing import Any

TARGET_RSS_MIB = 35.0
TARGET_CPU_PERCENT = 0.1
TARGET_RUNNER_USS_MIB = 12.0
TARGET_TREE_PSS_MIB = 40.0
NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"


class Watched:
    """One server's tree watched over a window: per process and per sample, its memory."""

    def __init__(self, pid: int, window: float) -> None:
        import time

        import _common as c
        import psutil

        proc = psutil.Process(pid)
        self.pid = pid
        t0 = time.monotonic()
        own0 = proc.cpu_times()
        tree0 = c.process_tree_cpu(pid)
        cpu0 = c.own_cpu_by_pid(pid)
        # pid -> (role, [ProcMemory, ...]); per sample: the tree's RSS, USS and PSS sums.
        self.seen: dict[int, tuple[str, list[Any]]] = {}
        self.sums: list[tuple[float, float, float]] = []
        while True:
            sample = c.tree_memory(pid)
            for m in sample:
                self.seen.setdefault(m.pid, (m.role, []))[1].append(m)
            self.sums.append(
                (
                    sum(m.rss for m in sample) / c.MIB,
                    sum(m.uss for m in sample) / c.MIB,
                    sum(m.pss for m in sample) / c.MIB,
                )
            )
            left = t0 + window - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(1.0, left))
        self.elapsed = time.monotonic() - t0
        own1 = proc.cpu_times()
        tree1 = c.process_tree_cpu(pid)
        cpu1 = c.own_cpu_by_pid(pid)
        self.threads = proc.num_threads()
        self.descendants = len(proc.children(recursive=True))
        self.own_pct = (
            100.0 * ((own1.user + own1.system) - (own0.user + own0.system)) / self.elapsed
        )
        self.tree_pct = 100.0 * (tree1 - tree0) / self.elapsed
        self.cpu_pct = {p: 100.0 * (cpu1[p] - cpu0[p]) / self.elapsed for p in cpu0 if p in cpu1}

    def med(self, pid: int, field: str) -> float:
        import _common as c

        return c.summarize([getattr(m, field) / c.MIB for m in self.seen[pid][1]]).median

    def tree(self, index: int) -> float:
        """Median over the samples of the tree's sum: 0 RSS, 1 USS, 2 PSS."""
        import _common as c

        return c.summarize([s[index] for s in self.sums]).median


def watch_stock_server(window: float, settle: float) -> Watched:
    """prometheus_client's start_http_server as shipped (benchmarks/_stock_server.py)."""
    import subprocess
    import tempfile
    import time

    import _common as c

    with tempfile.TemporaryFile("w+") as err:
        proc, _ = c.start_stock_server([], err)
        try:
            time.sleep(settle)
            return Watched(proc.pid, window)
        finally:
            assert proc.stdin is not None
            proc.stdin.close()  # it serves until its stdin closes
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def watch_node_exporter(window: float, settle: float) -> Watched:
    """Debian's node_exporter on a free port, default collectors."""
    import time

    import _common as c

    with c.node_exporter(c.free_port()) as proc:
        time.sleep(settle)
        return Watched(proc.pid, window)


def node_exporter_version() -> str:
    """The first line of ``--version``, or exit with what to install when it is missing."""
    import os
    import subprocess

    if not os.access(NODE_EXPORTER, os.X_OK):
        raise SystemExit(
            f"idle.py needs Debian's node_exporter ({NODE_EXPORTER}) as a peer and it is not "
            "installed: apt-get install -y prometheus-node-exporter (or `make system-deps`)"
        )
    out = subprocess.run([NODE_EXPORTER, "--version"], capture_output=True, text=True, timeout=10)
    return ((out.stdout or out.stderr).splitlines() or ["unknown version"])[0]


def main() -> int:
    import argparse
    import time

    import _common as c

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured, pqd")
    parser.add_argument("--peer-window", type=float, default=20.0, help="seconds, each peer")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before a window")
    args = parser.parse_args()
    window = 2.0 if args.quick else args.window
    peer_window = 1.0 if args.quick else args.peer_window
    settle = 0.5 if args.quick else args.settle
    started = time.monotonic()
    print(c.machine_line())
    node_version = node_exporter_version()
    print(f"pqd window: {window:.0f} s, each peer's: {peer_window:.0f} s, settle: {settle:.1f} s")
    print(
        "peers: prometheus_client start_http_server as shipped (benchmarks/_stock_server.py, "
        f"pqd's registry, one cycle fed); {node_version}: {NODE_EXPORTER} "
        "--web.listen-address=127.0.0.1:PORT (default collectors)"
    )

    rows = []
    per_process = []
    beside = []
    order = {"pqd": 0, "runner": 1, "forkserver": 2, "resource tracker": 3}
    watched: list[tuple[str, str, Watched]] = []
    for label, flags, wait_cycle in (
        # Under a minute the runner is kept between cycles (pqd.supervisor.runners
        # WARM_BELOW_SECONDS); the window ends before the second cycle is due.
        ("after a cycle (interval 59s, runner kept)", ["--interval", "59s"], True),
        ("after a cycle (interval 1h, runner not kept)", ["--interval", "1h"], True),
        ("before any cycle (cron)", ["--cron", "0 0 1 1 *"], False),
    ):
        with c.daemon(flags) as d:
            if wait_cycle:
                done = d.wait_cycles(1, 60)
                if done[0].get("result") != "success":
                    raise RuntimeError(f"first cycle failed: {done[0]}")
            time.sleep(settle)
            warm = "59s" in flags
            w = Watched(d.pid, min(window, 59.0 - settle - 6.0) if warm else window)
            cycles = len(d.finished_cycles())
        watched.append((f"pqd, {label}", "pqd", w))
        pqd_rss = c.summarize([m.rss / c.MIB for m in w.seen[d.pid][1]])
        runners = [pid for pid, (role, _) in w.seen.items() if role == "runner"]
        runner_uss = [w.med(pid, "uss") for pid in runners]
        rows.append(
            [
                label,
                f"{w.elapsed:.0f}",
                len(w.sums),
                f"{pqd_rss.median:.1f} (max {pqd_rss.maximum:.1f})",
                f"{w.med(d.pid, 'uss'):.1f}",
                f"{w.med(d.pid, 'pss'):.1f}",
                ", ".join(f"{u:.1f}" for u in runner_uss) or "- (no runner)",
                f"{w.tree(0):.1f}",
                f"{w.tree(2):.1f}",
                f"{w.own_pct:.3f}",
                f"{w.tree_pct:.3f}",
                f"{w.threads} / {w.descendants}",
                cycles,
                c.verdict(pqd_rss.maximum <= TARGET_RSS_MIB and w.own_pct <= TARGET_CPU_PERCENT),
                c.verdict(max(runner_uss) <= TARGET_RUNNER_USS_MIB) if runner_uss else "-",
                c.verdict(w.tree_pct <= TARGET_CPU_PERCENT),
                c.verdict(w.tree(2) <= TARGET_TREE_PSS_MIB) if wait_cycle else "-",
            ]
        )

    watched.append(
        (
            "prometheus_client start_http_server (as shipped)",
            "prometheus_client",
            watch_stock_server(peer_window, settle),
        )
    )
    watched.append(
        (
            "node_exporter (default collectors)",
            "node_exporter",
            watch_node_exporter(peer_window, settle),
        )
    )

    for label, root_role, w in watched:
        for pid, (role, samples) in sorted(
            w.seen.items(), key=lambda x: (order.get(x[1][0], 9), x[0])
        ):
            shown = root_role if pid == w.pid else role
            cpu = f"{w.cpu_pct[pid]:.3f}" if pid in w.cpu_pct else "-"
            per_process.append(
                [
                    label,
                    shown,
                    pid,
                    samples[-1].ppid,
                    len(samples),
                    f"{w.med(pid, 'rss'):.1f}",
                    f"{w.med(pid, 'uss'):.1f}",
                    f"{w.med(pid, 'pss'):.1f}",
                    cpu,
                ]
            )
        per_process.append(
            [
                label,
                "whole tree (sum)",
                "-",
                "-",
                len(w.sums),
                f"{w.tree(0):.1f}",
                f"{w.tree(1):.1f}",
                f"{w.tree(2):.1f}",
                f"{w.tree_pct:.3f}",
            ]
        )
        beside.append(
            [
                label,
                f"{w.elapsed:.0f}",
                1 + w.descendants,
                f"{w.med(w.pid, 'rss'):.1f}",
                f"{w.med(w.pid, 'pss'):.1f}",
                f"{w.tree(0):.1f}",
                f"{w.tree(2):.1f}",
                f"{w.tree_pct:.3f}",
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
            f"target tree PSS <= {TARGET_TREE_PSS_MIB:.0f}",
        ],
        rows,
    )
    c.print_table(
        "Idle footprint beside peers: the server alone and its whole tree, each run alone "
        "(MiB, medians; CPU in % of one core, whole tree)",
        [
            "server",
            "window s",
            "processes",
            "alone RSS",
            "alone PSS",
            "tree RSS",
            "tree PSS",
            "tree CPU %",
        ],
        beside,
    )
    c.print_table(
        "Idle footprint per process (MiB, medians over the window's samples; own CPU in % of "
        "one core, the tree's for the sum)",
        ["state", "process", "pid", "parent", "samples", "RSS", "USS", "PSS", "CPU %"],
        per_process,
    )
    warm_pss, cold_pss = watched[0][2].tree(2), watched[1][2].tree(2)
    print(
        f"target: pqd's idle tree PSS after a cycle (default config) <= {TARGET_TREE_PSS_MIB:.0f}"
        f" MiB: {warm_pss:.1f} MiB with the runner kept (59 s), "
        f"{c.verdict(warm_pss <= TARGET_TREE_PSS_MIB)}; {cold_pss:.1f} MiB without (1h), "
        f"{c.verdict(cold_pss <= TARGET_TREE_PSS_MIB)}; beside it, prometheus_client's tree "
        f"{watched[3][2].tree(2):.1f} MiB, node_exporter's {watched[4][2].tree(2):.1f} MiB"
    )
    print(
        "note: _stock_server.py fills its registry with one pqd cycle in a runner it retires, so "
        "prometheus_client's tree is the server alone. PSS shares pages with any other process "
        "mapping them (another Python of the same venv lowers it): run this on an otherwise "
        "quiet machine."
    )
    import _per_probe

    _per_probe.print_rows(window / 2 if not args.quick else window, settle)
    _per_probe.print_warm_and_cold(2 if args.quick else 8, window / 4, settle)
    print(f"end: {c.machine_line()}; took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
