"""The least memory a warm probe's three interpreters can hold, against the 15 MiB a probe target.

A warm probe keeps a runner, a forkserver and a resource tracker (docs/design.md §1a), each a
fresh interpreter that multiprocessing starts by fork and exec. Each is measured here at its
floor: an interpreter that has imported only what that process cannot do without (the tracker:
multiprocessing.resource_tracker; the forkserver: multiprocessing.forkserver with no preload;
the runner: the pool and the Manager it runs), idle. The sum of the three floors' USS is what a
further warm probe would cost if pqd's own code and the forkserver's preload cost nothing
(idle.py measures what they cost as shipped).

    .venv/bin/python benchmarks/helper_floor.py [--quick]
"""

from __future__ import annotations

import sys

TARGET_PER_PROBE_MIB = 15.0

#: process -> the imports it cannot do without.
FLOORS = (
    ("bare interpreter (-S)", ""),
    ("resource tracker floor", "import multiprocessing.resource_tracker"),
    ("forkserver floor (no preload)", "import multiprocessing.forkserver"),
    ("runner floor (Pool, Manager)", "import multiprocessing.pool, multiprocessing.managers"),
)


def main() -> int:
    import argparse
    import subprocess
    import time

    import _common as c
    import psutil

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one sample (the smoke test)")
    samples = 1 if parser.parse_args().quick else 5
    print(c.machine_line())
    procs = {
        name: subprocess.Popen(
            [c.PYTHON, "-S", "-c", f"{code}\nimport time\ntime.sleep(600)"],
            stdin=subprocess.DEVNULL,
        )
        for name, code in FLOORS
    }
    try:
        rows = []
        time.sleep(1.0)  # imports done: each is a few ms; a sample taken earlier reads less
        for name, proc in procs.items():
            uss = pss = 0.0
            for _ in range(samples):
                m = psutil.Process(proc.pid).memory_full_info()
                uss, pss = max(uss, m.uss / 2**20), max(pss, m.pss / 2**20)
            rows.append((name, f"{uss:.1f}", f"{pss:.1f}"))
    finally:
        for proc in procs.values():
            proc.kill()
            proc.wait()
    floor = sum(float(row[1]) for row in rows[1:])
    c.print_table(
        "The floor of a warm probe's interpreters (MiB, idle, the largest of the samples)",
        ["process", "USS", "PSS"],
        rows,
    )
    print(
        f"a further warm probe at its floor: {floor:.1f} MiB USS (tracker + forkserver + runner), "
        f"target <= {TARGET_PER_PROBE_MIB:g}: {c.verdict(floor <= TARGET_PER_PROBE_MIB)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
