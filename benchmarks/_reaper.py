"""Run a command and report the wall time and the CPU of its whole process tree.

Usage: python benchmarks/_reaper.py COMMAND [ARGS...]; prints ``wall=S cpu=S`` on stdout.

This process makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so every descendant
of the command that outlives its parent (the forkserver, the resource tracker) is re-parented
here and reaped here. Every process of the tree is then reaped by some process of the tree, so
the kernel has added all of their CPU time into this process's RUSAGE_CHILDREN by the time the
last one is reaped. The command's own output is discarded.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import time

_PR_SET_CHILD_SUBREAPER = 36


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: _reaper.py COMMAND [ARGS...]", file=sys.stderr)
        return 2
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
        return 1
    devnull = os.open(os.devnull, os.O_WRONLY)
    t0 = time.perf_counter()
    pid = os.posix_spawnp(
        argv[0], argv, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, devnull, 1)]
    )
    wall = -1.0
    status = 0
    while True:
        try:
            done, code = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if done == pid:
            wall = time.perf_counter() - t0
            status = code
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if os.waitstatus_to_exitcode(status) != 0:
        print(f"command failed: {os.waitstatus_to_exitcode(status)}", file=sys.stderr)
        return 1
    print(f"wall={wall:.6f} cpu={usage.ru_utime + usage.ru_stime:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
