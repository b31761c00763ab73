"""Soak: many cycles of the default probe in one `pqd run`, scraped every 100 ms.

Prints pqd's RSS, threads and open descriptors after warm-up and at the end, the same RSS
figures for the probe's runner (docs/design.md §1a: pqd -> runner -> forkserver, resource
tracker; per runner pid, as a failed cycle replaces the runner), failures by reason, leaked
processes, scrape latency, and whether every cycle is accounted for in pqd_cycles_total. The
figures go into docs/reliability.md.

    .venv/bin/python benchmarks/soak.py                # 5,000 cycles (about 30 minutes here)
    .venv/bin/python benchmarks/soak.py --quick        # 40 cycles, for the smoke test
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import TypeVar

import _common as c
import psutil
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T", int, float)
TARGET_GROWTH_MIB = 5.0


def scrape(port: int) -> tuple[float, str]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        body = response.read().decode()
    return time.perf_counter() - t0, body


def values(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                found[tuple(sorted(s.labels.items()))] = s.value
    return found


def total(text: str, name: str) -> float:
    return sum(values(text, name).values())


class Scraper(threading.Thread):
    def __init__(self, port: int, every: float) -> None:
        super().__init__(name="scraper", daemon=True)
        self.port, self.every = port, every
        self.latencies: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                latency, _ = scrape(self.port)
                self.latencies.append(latency)
            except OSError:
                self.errors += 1


def head(samples: list[T]) -> list[T]:
    return samples[: max(1, len(samples) // 10)]


def tail(samples: list[T]) -> list[T]:
    return samples[-max(1, len(samples) // 10) :]


def footprint(proc: psutil.Process) -> tuple[float, int, int]:
    return proc.memory_info().rss / c.MIB, proc.num_threads(), proc.num_fds()


@dataclass
class RunnerTrack:
    """One runner process (by pid): its RSS each time it was sampled."""

    pid: int
    #: pqd_cycles_total when it took over: 0 for the first runner, else the count at the last
    #: sample before it was seen (the cycle that failed and replaced its predecessor is in it).
    started_at: float
    samples: list[tuple[float, float]] = field(default_factory=list)  # (cycles done, RSS MiB)
    alive_at_end: bool = False

    def warm(self, warmup: int) -> list[float]:
        """RSS samples once this runner had run ``warmup`` cycles (and the soak had too)."""
        need = max(warmup, self.started_at + warmup)
        return [rss for done, rss in self.samples if done >= need]


def sample_runners(pqd_pid: int, done: float, runners: dict[int, RunnerTrack]) -> None:
    before = max((s[0] for r in runners.values() for s in r.samples), default=0.0)
    for runner in c.runner_procs(pqd_pid):
        try:
            rss = runner.memory_info().rss / c.MIB
        except psutil.Error:
            continue
        track = runners.setdefault(runner.pid, RunnerTrack(runner.pid, before))
        track.samples.append((done, rss))


def accounted(port: int, daemon: c.Daemon, tries: int = 100) -> tuple[str, float, int]:
    """(a scrape, its pqd_cycles_total, cycles logged) taken when the two can be compared.

    Cycles go on back to back and pqd counts a cycle in its metrics just before it logs it, so
    a scrape and a read of the log taken one after the other can straddle a cycle's end.
    Scrape, count the logged cycles, scrape again: when both scrapes give the same total, no
    cycle ended in between, so every cycle logged by then is in that total, and every cycle in
    it should be logged. Retried until the log has as many (or ``tries`` run out, and then the
    last figures are returned, which disagree)."""
    for _ in range(tries):
        _, first = scrape(port)
        logged = len(daemon.finished_cycles())
        _, second = scrape(port)
        counted = total(first, "pqd_cycles_total")
        if counted == total(second, "pqd_cycles_total") and logged == counted:
            break
        time.sleep(0.05)
    return second, total(second, "pqd_cycles_total"), logged


def mib(value: float) -> str:
    return f"{value:.1f} MiB"


def growth_row(growth: float) -> str:
    met = c.verdict(growth < TARGET_GROWTH_MIB)
    return f"{growth:+.1f} MiB (target < {TARGET_GROWTH_MIB:.0f} MiB: {met})"


def runner_rows(
    runners: dict[int, RunnerTrack], warmup: int
) -> tuple[list[tuple[str, str]], list[float]]:
    """Rows per runner pid, and the RSS growth of each runner that ran past its warm-up."""
    rows: list[tuple[str, str]] = []
    growths: list[float] = []
    pids = ", ".join(str(pid) for pid in runners) or "none"
    replaced = len(runners) - 1
    seen = f"{len(runners)} (pid {pids})"
    if replaced > 0:
        seen += (
            f": replaced {replaced} time(s) (after a failed cycle, or a runner that died); "
            "figures per runner pid"
        )
    rows.append(("runners seen", seen))
    for track in runners.values():
        name = f"runner {track.pid}"
        first, last = track.samples[0][0], track.samples[-1][0]
        state = "alive at the end" if track.alive_at_end else "replaced"
        rows.append((f"{name}: sampled at cycles", f"{first:.0f}-{last:.0f} ({state})"))
        warm = track.warm(warmup)
        if len(warm) < 2:
            why = f"fewer than 2 samples after its first {warmup} cycles"
            rows.append((f"{name}: RSS growth after warm-up", f"n/a: {why}"))
            rows.append(
                (
                    f"{name}: RSS first / last sample",
                    f"{mib(track.samples[0][1])} / {mib(track.samples[-1][1])}",
                )
            )
            continue
        end_label = "at the end" if track.alive_at_end else "when last seen"
        growth = warm[-1] - warm[0]
        growths.append(growth)
        rows += [
            (f"{name}: RSS after warm-up ({warmup} cycles)", mib(warm[0])),
            (f"{name}: RSS {end_label}", mib(warm[-1])),
            (f"{name}: RSS growth after warm-up", growth_row(growth)),
            (
                f"{name}: RSS median / max after warm-up",
                f"{statistics.median(warm):.1f} / {max(warm):.1f} MiB",
            ),
            (
                f"{name}: RSS, first / last tenth: median",
                f"{statistics.median(head(warm)):.1f} / {statistics.median(tail(warm)):.1f} MiB",
            ),
        ]
    return rows, growths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--interval", default="100ms", help="the probe's interval")
    parser.add_argument("--scrape-every", type=float, default=0.1)
    parser.add_argument("--quick", action="store_true", help="40 cycles (smoke test)")
    args = parser.parse_args()
    cycles = 40 if args.quick else args.cycles
    warmup = max(10, cycles // 50)

    daemon = c.Daemon([], f'[probes.default]\ninterval = "{args.interval}"\n')
    scraper = Scraper(daemon.port, args.scrape_every)
    try:
        proc = psutil.Process(daemon.pid)
        scraper.start()
        t0 = time.monotonic()
        warm: tuple[float, int, int] | None = None
        threads: list[int] = []
        fds: list[int] = []
        rss: list[float] = []
        runners: dict[int, RunnerTrack] = {}
        done = 0.0
        while done < cycles:
            time.sleep(1.0)
            _, text = scrape(daemon.port)
            done = total(text, "pqd_cycles_total")
            mem, nthreads, nfds = footprint(proc)
            sample_runners(daemon.pid, done, runners)
            if done >= warmup:
                warm = warm or (mem, nthreads, nfds)
                rss.append(mem)
                threads.append(nthreads)
                fds.append(nfds)
            if daemon.proc.poll() is not None:
                raise SystemExit(f"pqd exited:\n{daemon.log_text()[-3000:]}")
        elapsed = time.monotonic() - t0
        scraper.stop.set()
        scraper.join(15)
        text, cycles_total, logged = accounted(daemon.port, daemon)
        end = footprint(proc)
        sample_runners(daemon.pid, cycles_total, runners)
        for runner in c.runner_procs(daemon.pid):
            if runner.pid in runners:
                runners[runner.pid].alive_at_end = True
        descendants = c.describe_tree(daemon.pid)
    finally:
        scraper.stop.set()
        daemon.stop()
    log_text = daemon.final_log

    failures = {
        dict(labels)["reason"]: value
        for labels, value in values(text, "pqd_cycle_failures_total").items()
        if value
    }
    skipped = {
        dict(labels)["reason"]: value
        for labels, value in values(text, "pqd_cycles_skipped_total").items()
        if value
    }
    leaked_any = failures.get("leak", 0)
    lat = sorted(scraper.latencies)
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")  # noqa: E731
    assert warm is not None
    growth = end[0] - warm[0]
    per_runner, runner_growths = runner_rows(runners, warmup)
    tracebacks = log_text.count("Traceback")
    rows = [
        ("cycles (pqd_cycles_total)", f"{cycles_total:.0f}"),
        ("cycles logged", f"{logged}"),
        ("every cycle accounted for", "yes" if logged == cycles_total else "NO"),
        ("wall time", f"{elapsed:.0f} s"),
        ("failures by reason", ", ".join(f"{k}={v:.0f}" for k, v in failures.items()) or "none"),
        ("skipped by reason", ", ".join(f"{k}={v:.0f}" for k, v in skipped.items()) or "none"),
        ("leaked processes (leak failures)", f"{leaked_any:.0f}"),
        ("descendants of pqd at the end", descendants),
        (f"pqd RSS after warm-up ({warmup} cycles)", mib(warm[0])),
        ("pqd RSS at the end", mib(end[0])),
        ("pqd RSS growth after warm-up", growth_row(growth)),
        (
            "pqd RSS median / max after warm-up",
            f"{statistics.median(rss):.1f} / {max(rss):.1f} MiB",
        ),
        (
            "pqd RSS, first / last tenth: median",
            f"{statistics.median(head(rss)):.1f} / {statistics.median(tail(rss)):.1f} MiB",
        ),
        ("pqd threads after warm-up: min / max", f"{min(threads)} / {max(threads)}"),
        ("pqd threads, first / last tenth: max", f"{max(head(threads))} / {max(tail(threads))}"),
        ("pqd open fds after warm-up: min / max", f"{min(fds)} / {max(fds)}"),
        ("pqd open fds, first / last tenth: max", f"{max(head(fds))} / {max(tail(fds))}"),
        *per_runner,
        ("scrapes / failed", f"{len(lat)} / {scraper.errors}"),
        ("scrape latency p50 / p99", f"{p(0.5):.1f} / {p(0.99):.1f} ms"),
        ("tracebacks in the log", f"{tracebacks}"),
    ]
    print("| soak | figure |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    memory_ok = all(g < TARGET_GROWTH_MIB for g in [growth, *runner_growths])
    ok = (
        logged == cycles_total
        and leaked_any == 0
        and scraper.errors == 0
        and tracebacks == 0
        and (args.quick or memory_ok)
    )
    if tracebacks:
        at = log_text.index("Traceback")
        print("\nthe first traceback in the log:\n" + log_text[max(0, at - 300) : at + 2500])
    print(f"\nresult: {'PASS' if ok else 'FAIL'} (pid {os.getpid()})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
