"""What reading the headroom gauges costs a cycle (docs/design.md §2, "Headroom").

In one warm process, as in a probe's runner: each part of ``pqd.runner.headroom.read()`` (the
/dev/shm statvfs and listing, the pids, memory and CPU cgroup ancestries, RLIMIT_NOFILE, Pool()'s
size, the temp dir's socket check) timed ``--calls`` times, then the whole read; the leak count
at a cycle's end (a second /dev/shm listing; only when something new is still there, a
garbage collection and a look at every process's maps, measured with one planted object); and,
for scale, the CPU of a default cycle (run_cycle, forkserver) in the same process. The figures
depend on how many entries /dev/shm holds and how many processes the host runs: both are
printed.

    .venv/bin/python benchmarks/headroom.py [--quick] [--calls N] [--cycles N] [--private-shm]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def timed(func: Callable[[], Any], calls: int) -> tuple[list[float], list[float]]:
    """(wall seconds, thread CPU seconds) of each of ``calls`` calls."""
    import time

    walls: list[float] = []
    cpus: list[float] = []
    for _ in range(calls):
        t0, c0 = time.perf_counter(), time.thread_time()
        func()
        cpus.append(time.thread_time() - c0)
        walls.append(time.perf_counter() - t0)
    return walls, cpus


def row(name: str, walls: list[float], cpus: list[float]) -> list[str]:
    import _common as c

    w, u = c.summarize(walls), c.summarize(cpus)
    return [
        name,
        f"{w.median * 1e6:.0f} ({w.spread(1e6, '.0f')})",
        f"{u.median * 1e6:.0f} ({u.spread(1e6, '.0f')})",
    ]


def planted_leak(before: frozenset[str]) -> int:
    """leaked_shm with one unmapped multiprocessing-named object in /dev/shm (removed after)."""
    import os

    from pqd.runner import headroom

    path = os.path.join(headroom.SHM_DIR, f"sem.mp-bench{os.getpid()}")
    with open(path, "wb") as f:
        f.write(bytes(32))
    try:
        return headroom.leaked_shm(before)
    finally:
        os.unlink(path)


def in_private_shm(argv: list[str]) -> int:
    """This script again with a fresh /dev/shm: a host's own is shared, and its entry count
    (leftovers of every program that leaked) sets the cost of listing it."""
    import subprocess

    mount = 'mount -t tmpfs -o size=64m,mode=1777 pqd-bench-shm /dev/shm && exec "$@"'
    command = ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, "sh"]
    print("(in a private mount namespace: an empty 64 MiB /dev/shm)", flush=True)
    return subprocess.run([*command, sys.executable, __file__, *argv], check=False).returncode


def main() -> int:
    import argparse
    import os

    import _common as c

    from pqd.probe import ProbeConfig
    from pqd.runner import headroom
    from pqd.runner.cycle import run_cycle

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--calls", type=int, default=300, help="calls of each part")
    parser.add_argument("--cycles", type=int, default=10, help="cycles for the scale")
    parser.add_argument(
        "--private-shm",
        action="store_true",
        help="run again in a mount namespace of its own with an empty 64 MiB /dev/shm (root)",
    )
    args = parser.parse_args()
    if args.private_shm:
        return in_private_shm([a for a in sys.argv[1:] if a != "--private-shm"])
    calls = 5 if args.quick else args.calls
    cycles = 1 if args.quick else args.cycles
    print(c.machine_line())
    before = headroom.shm_names()
    views = headroom._views()
    parts = [
        ("/dev/shm: listing", headroom.shm_names),
        ("/dev/shm: statvfs, access", headroom._shm),
        ("/proc/self/cgroup and mountinfo", headroom._views),
        ("pids: cgroup ancestry, else kernel", lambda: headroom._pids(views)),
        ("memory: cgroup ancestry, else host", lambda: headroom._memory(views)),
        ("cpu: quota over the ancestry, affinity", lambda: headroom._cpu(views)),
        ("RLIMIT_NOFILE", headroom.open_files_limit),
        ("Pool() size", headroom.pool_size),
        ("temp dir: mkdtemp, bind, unlink", headroom.tmpdir_check),
        ("**begin(): all of the above, /dev/shm listed once**", headroom.begin),
        ("cycle end: leak count, nothing new", lambda: headroom.leaked_shm(before)),
        ("cycle end: leak count, 1 new unmapped (gc + maps scan)", lambda: planted_leak(before)),
    ]
    rows = [row(name, *timed(func, calls)) for name, func in parts]
    c.print_table(
        f"Headroom reading, per call ({calls} calls each; µs, median (p25-p75))",
        ["part", "wall µs", "CPU µs"],
        rows,
    )
    probe = ProbeConfig(start_method="forkserver", job_pause=0.0)
    run_cycle(probe)  # starts the forkserver and resource tracker, not measured
    measured = [c.measure(lambda: run_cycle(probe)) for _ in range(cycles)]
    cycle_cpu = c.summarize([m.cpu for m in measured])
    begin_cpu = c.summarize(timed(headroom.begin, calls)[1])
    end_cpu = c.summarize(timed(lambda: headroom.leaked_shm(before), calls)[1])
    per_cycle = begin_cpu.median + end_cpu.median
    entries = len(os.listdir(headroom.SHM_DIR))
    processes = sum(1 for e in os.scandir("/proc") if e.name.isdigit())
    c.print_table(
        "Headroom's share of a cycle (forkserver, default probe, job_pause 0; CPU)",
        ["what", "value"],
        [
            ["cycle, process-tree CPU, ms", f"{cycle_cpu.median * 1e3:.1f}"],
            ["headroom per cycle (begin + leak count, nothing new), ms", f"{per_cycle * 1e3:.2f}"],
            ["share of the cycle", f"{per_cycle / cycle_cpu.median:.1%}"],
            ["/dev/shm entries", str(entries)],
            ["processes on the host", str(processes)],
        ],
    )
    print(c.machine_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
