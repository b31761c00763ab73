"""What a hostile config file costs pqd to refuse: time and peak memory of reading each file of
tests/helpers/hostile_configs.py, the worst ones first.

Each file is read by a fresh Python process (``pqd.config.load.config_from_file``, the function
``pqd check-config``, ``pqd run`` and every reload use) under an address-space limit of
``--limit-mib``, so a parser that blows up is stopped by a MemoryError instead of the machine. The
figures are the wall time of that one call and the growth of the process's peak RSS (VmHWM)
across it; what the call ended with is shown as the error's first 60 characters.

    .venv/bin/python benchmarks/hostile_config.py [--quick] [--all] [--repeat N]
"""

from __future__ import annotations

import sys

#: Run in the child: read one file as pqd would and report seconds, peak-RSS growth, outcome.
_CHILD = r"""
import json, sys, time
from pqd.config.load import config_from_file

def hwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0

before = hwm_kib()
started = time.perf_counter()
try:
    config_from_file(sys.argv[1])
    outcome = "accepted"
except BaseException as exc:  # a MemoryError or RecursionError is the figure being measured
    outcome = f"{type(exc).__name__}: {exc}"
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "peak_kib": hwm_kib() - before, "outcome": outcome}))
"""


def _measure(path: str, limit_mib: int, timeout: float) -> dict[str, object]:
    import json
    import resource
    import subprocess

    import _common as c

    def limit() -> None:
        size = limit_mib * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size, size))

    try:
        done = subprocess.run(
            [c.PYTHON, "-c", _CHILD, path],
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"seconds": timeout, "peak_kib": -1, "outcome": f"killed after {timeout:.0f}s"}
    if done.returncode != 0 or not done.stdout.strip():
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"seconds": -1.0, "peak_kib": -1, "outcome": f"exit {done.returncode}: {last}"}
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def main() -> int:
    import argparse
    import statistics
    import tempfile
    import time

    import _common as c

    sys.path.insert(0, str(c.ROOT))
    from tests.helpers.hostile_configs import WORST, hostile_configs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the worst file once (smoke test)")
    parser.add_argument("--all", action="store_true", help="every hostile file, not the worst")
    parser.add_argument("--repeat", type=int, default=5, help="runs per file (median shown)")
    parser.add_argument("--limit-mib", type=int, default=2048, help="child address-space limit")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per run")
    args = parser.parse_args()
    started = time.monotonic()
    print(c.machine_line())
    configs = hostile_configs()
    if not args.all:
        configs = tuple(h for h in configs if h.name in WORST[: 1 if args.quick else None])
    repeat = 1 if args.quick else args.repeat
    print(
        f"files: {len(configs)}; runs per file: {repeat}; address-space limit {args.limit_mib} MiB"
    )
    print()
    print("## Reading a hostile config file (median of the runs; peak = growth of VmHWM)")
    print()
    print("| file | bytes | seconds | peak MiB | outcome |")
    print("|---|---:|---:|---:|---|")
    worst_s, worst_mib = 0.0, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for hostile in configs:
            path = f"{tmp}/{hostile.name}.toml"
            hostile.write(path)
            runs = [_measure(path, args.limit_mib, args.timeout) for _ in range(repeat)]
            seconds = statistics.median(float(str(r["seconds"])) for r in runs)
            peak = statistics.median(int(str(r["peak_kib"])) for r in runs) / 1024
            worst_s, worst_mib = max(worst_s, seconds), max(worst_mib, peak)
            outcome = str(runs[-1]["outcome"])[:60].replace("|", "\\|")
            print(
                f"| {hostile.name} | {len(hostile.data)} | {seconds:.3f} | {peak:.1f} | {outcome} |"
            )
    print()
    print(f"worst: {worst_s:.3f} s, {worst_mib:.1f} MiB peak growth")
    print(f"end: {c.machine_line()}; took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
