"""The seed's cycle with the standard library only: the baseline pqd's cycle is measured against.

Same work as a pqd cycle: a Manager queue of ``maxsize``, a pool of ``workers`` from the same
multiprocessing context, ``rounds`` producer/consumer job pairs one after the other, each job
reporting what the seed printed (pid, process name, is_alive, parent pid, the host pid count) and
the items it put or got, put_nowait/get_nowait as in the seed. No per-operation timing, no queue
depth or liveness sampling, no process accounting, no deadlines, no metrics and no trace: that is
pqd's instrumentation, whose cost is what the comparison shows.

Standard library only, like pqd.runner.jobs: pool workers import this module.

Run as a script it does one cycle and exits (the "fresh process" of benchmarks/cycle_cost.py).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import sys
from typing import Any


def _host_pid_count() -> int:
    # As pqd.runner.jobs counts them (psutil.pids() without importing psutil).
    return sum(1 for entry in os.scandir("/proc") if entry.name.isdigit())


def _identity() -> dict[str, Any]:
    process = multiprocessing.current_process()
    return {
        "pid": os.getpid(),
        "process_name": process.name,
        "is_alive": process.is_alive(),
        "parent_pid": os.getppid(),
        "host_pid_count": _host_pid_count(),
    }


def _name(index: int) -> str:
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


# The queue proxy, handed to each worker once by the pool initializer (as pqd does: one proxy per
# task would open a Manager connection per task).
_queue: Any = None


def init_worker(q: Any) -> None:
    global _queue
    _queue = q


def producer(items: int) -> dict[str, Any]:
    q = _queue
    report = _identity()
    put = []
    full = 0
    for index in range(items):
        item = _name(index)
        try:
            q.put_nowait(item)
        except queue.Full:
            full += 1
            continue
        put.append(item)
    report.update(items=put, full_events=full)
    return report


def consumer(items: int) -> dict[str, Any]:
    q = _queue
    report = _identity()
    got = []
    while True:
        try:
            got.append(q.get_nowait())
        except queue.Empty:
            break
    report.update(items=got, full_events=0)
    return report


def bare_cycle(
    start_method: str, workers: int = 4, maxsize: int = 3, rounds: int = 5, items: int = 5
) -> int:
    """One cycle; returns the job count (the seed's count(N))."""
    ctx = multiprocessing.get_context(start_method)
    _host_pid_count()
    jobs = 0
    with ctx.Manager() as manager:
        q = manager.Queue(maxsize)
        with ctx.Pool(workers, initializer=init_worker, initargs=(q,)) as pool:
            for _ in range(rounds):
                pool.apply(producer, (items,))
                jobs += 1
                pool.apply(consumer, (items,))
                jobs += 1
            pool.close()
            pool.join()
    _host_pid_count()
    return jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--start-method", default="forkserver")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--maxsize", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--items", type=int, default=5)
    args = parser.parse_args()
    jobs = bare_cycle(args.start_method, args.workers, args.maxsize, args.rounds, args.items)
    print(f"count({jobs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
