"""Soak: many cycles of the default probe in one `pqd run`, scraped every 100 ms.

Prints pqd's RSS, threads and open descriptors after warm-up and at the end, failures by
reason, leaked processes, scrape latency, and whether every cycle is accounted for in
pqd_cycles_total. The figures go into docs/reliability.md.

    .venv/bin/python benchmarks/soak.py                # 5,000 cycles (about 30 minutes here)
    .venv/bin/python benchmarks/soak.py --quick        # 40 cycles, for the smoke test
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import TypeVar

import psutil
from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T", int, float)
PORT_LINE = re.compile(r'msg="pqd started".* port=(\d+)')


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
    return proc.memory_info().rss / 2**20, proc.num_threads(), proc.num_fds()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--interval", default="100ms", help="the probe's interval")
    parser.add_argument("--scrape-every", type=float, default=0.1)
    parser.add_argument("--quick", action="store_true", help="40 cycles (smoke test)")
    args = parser.parse_args()
    cycles = 40 if args.quick else args.cycles
    warmup = max(10, cycles // 50)

    with tempfile.TemporaryDirectory(prefix="pqd-soak-") as tmp:
        config = Path(tmp) / "pqd.toml"
        config.write_text(f'[probes.default]\ninterval = "{args.interval}"\n')
        log_path = Path(tmp) / "pqd.log"
        with log_path.open("w") as log:
            daemon = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "pqd",
                    "run",
                    "--config",
                    str(config),
                    "--listen-address",
                    "127.0.0.1:0",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            deadline = time.monotonic() + 30
            port = 0
            while not port:
                if time.monotonic() > deadline or daemon.poll() is not None:
                    raise SystemExit(f"pqd did not start:\n{log_path.read_text()}")
                found = PORT_LINE.search(log_path.read_text())
                port = int(found.group(1)) if found else 0
                time.sleep(0.05)
            proc = psutil.Process(daemon.pid)
            scraper = Scraper(port, args.scrape_every)
            scraper.start()
            t0 = time.monotonic()
            warm: tuple[float, int, int] | None = None
            threads: list[int] = []
            fds: list[int] = []
            rss: list[float] = []
            done = 0.0
            while done < cycles:
                time.sleep(1.0)
                _, text = scrape(port)
                done = total(text, "pqd_cycles_total")
                mem, nthreads, nfds = footprint(proc)
                if done >= warmup:
                    warm = warm or (mem, nthreads, nfds)
                    rss.append(mem)
                    threads.append(nthreads)
                    fds.append(nfds)
                if daemon.poll() is not None:
                    raise SystemExit(f"pqd exited:\n{log_path.read_text()[-3000:]}")
            elapsed = time.monotonic() - t0
            scraper.stop.set()
            scraper.join(15)
            # The last cycle's log line is written after its metrics: read both once it is idle.
            time.sleep(1.0)
            _, text = scrape(port)
            end = footprint(proc)
            children = [" ".join(c.cmdline())[:40] for c in proc.children(recursive=True)]
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(15)
            except subprocess.TimeoutExpired:
                daemon.kill()
        log_text = log_path.read_text()

    cycles_total = total(text, "pqd_cycles_total")
    logged = sum(
        1
        for line in log_text.splitlines()
        if 'msg="cycle finished"' in line or 'msg="cycle failed"' in line
    )
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
    tracebacks = log_text.count("Traceback")
    rows = [
        ("cycles (pqd_cycles_total)", f"{cycles_total:.0f}"),
        ("cycles logged", f"{logged}"),
        ("every cycle accounted for", "yes" if logged == cycles_total else "NO"),
        ("wall time", f"{elapsed:.0f} s"),
        ("failures by reason", ", ".join(f"{k}={v:.0f}" for k, v in failures.items()) or "none"),
        ("skipped by reason", ", ".join(f"{k}={v:.0f}" for k, v in skipped.items()) or "none"),
        ("leaked processes (leak failures)", f"{leaked_any:.0f}"),
        ("children of pqd at the end", f"{len(children)} ({'; '.join(children)})"),
        (f"RSS after warm-up ({warmup} cycles)", f"{warm[0]:.1f} MiB"),
        ("RSS at the end", f"{end[0]:.1f} MiB"),
        ("RSS growth after warm-up", f"{growth:+.1f} MiB"),
        ("RSS median / max after warm-up", f"{statistics.median(rss):.1f} / {max(rss):.1f} MiB"),
        ("threads after warm-up: min / max", f"{min(threads)} / {max(threads)}"),
        ("threads, first / last tenth: max", f"{max(head(threads))} / {max(tail(threads))}"),
        ("open fds after warm-up: min / max", f"{min(fds)} / {max(fds)}"),
        ("open fds, first / last tenth: max", f"{max(head(fds))} / {max(tail(fds))}"),
        (
            "RSS, first / last tenth: median",
            f"{statistics.median(head(rss)):.1f} / {statistics.median(tail(rss)):.1f} MiB",
        ),
        ("scrapes / failed", f"{len(lat)} / {scraper.errors}"),
        ("scrape latency p50 / p99", f"{p(0.5):.1f} / {p(0.99):.1f} ms"),
        ("tracebacks in the log", f"{tracebacks}"),
    ]
    print("| soak | figure |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    ok = (
        logged == cycles_total
        and leaked_any == 0
        and scraper.errors == 0
        and tracebacks == 0
        and (args.quick or growth < 5.0)
    )
    print(f"\nresult: {'PASS' if ok else 'FAIL'} (pid {os.getpid()})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
