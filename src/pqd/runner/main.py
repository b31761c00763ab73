"""A probe's runner: ``python -m pqd.runner.main``, one child process of pqd per probe
(docs/design.md §1a).

It is the seed's "MainProcess": it owns the probe's Manager, Pool and, under forkserver, its own
forkserver and resource tracker, and runs one cycle each time pqd asks. It stays up between
cycles (a warm forkserver keeps a cycle cheap) and streams what happens to pqd as JSON lines on
an inherited pipe, so pqd can enforce the deadline from outside and kill the whole tree.

The pipe protocol, both ways, is pqd.runner.events.

Top-level imports are the standard library only: every spawn child of the runner re-imports
this module as its ``__mp_main__``, and pays for whatever it imports.
"""

from __future__ import annotations

import os
import select
import sys
import threading
from typing import IO


def _kill_own_tree(cgroup_dir: str | None) -> None:
    from pqd.runner import containment

    group = None if cgroup_dir is None else containment.ProbeCgroup(cgroup_dir)
    containment.kill_tree(os.getpid(), group, include_root=False)


def _die_with_pqd(pqd_pid: int, cgroup_dir: str | None) -> None:
    """Kill the whole tree and exit as soon as pqd exits, however it exits (a pidfd becomes
    readable then; a blocked thread costs nothing until it does)."""
    try:
        pidfd = os.pidfd_open(pqd_pid)
    except OSError:
        pidfd = -1

    def watch() -> None:
        if pidfd >= 0:
            select.select([pidfd], [], [])
        else:
            while os.getppid() == pqd_pid:
                threading.Event().wait(0.5)
        _kill_own_tree(cgroup_dir)
        os._exit(1)

    threading.Thread(target=watch, name="pqd-runner-death-watch", daemon=True).start()


def _serve(events: IO[bytes], cgroup_dir: str | None) -> int:
    from pqd.runner import stacks
    from pqd.runner.containment import ProbeCgroup
    from pqd.runner.cycle import run_cycle
    from pqd.runner.events import (
        EventWriter,
        Finished,
        ProtocolError,
        Ready,
        decode_command,
    )

    stacks_dir = os.environ.get(stacks.STACKS_DIR_ENV)
    group = None if cgroup_dir is None else ProbeCgroup(cgroup_dir)
    stream = EventWriter(events)
    stream.send(Ready(os.getpid(), (sys.implementation.name, sys.version.split()[0])))
    for line in sys.stdin.buffer:
        try:
            command = decode_command(line)
        except ProtocolError as exc:
            stream.failing("helper_died", f"the runner refused its command: {exc}")
            return 2
        result = run_cycle(command.probe, observer=stream, cycle_id=command.cycle_id, cgroup=group)
        stream.send(Finished(result))
        if stacks_dir:
            stacks.prune(stacks_dir)
    return 0


def _show_fork_with_threads() -> None:
    """CPython 3.12+ warns when a process with threads forks (gh-100228): the runner has threads
    (its death watch, the pool's handlers) when a "fork" probe forks its Manager and workers. A
    DeprecationWarning raised outside __main__ is ignored by default, so the warning would be
    hidden; here it is shown each time ("always"), ahead of any filter the probe's
    PYTHONWARNINGS adds, so that "error" cannot turn it into a failed cycle either. It reaches
    the tree's stderr, and pqd counts it (pqd_cycle_warnings_total{category="fork_with_threads"})
    while the cycle goes on."""
    import warnings

    warnings.filterwarnings(
        "always",
        message=r"This process \(pid=\d+\) is multi-threaded, use of fork\(\)",
        category=DeprecationWarning,
    )


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pqd.runner.main")
    parser.add_argument("--events-fd", type=int, required=True)
    parser.add_argument("--pqd-pid", type=int, required=True)
    parser.add_argument("--cgroup", default=None, help="join this cgroup v2 directory first")
    args = parser.parse_args(argv)

    from pqd.runner import containment, stacks

    stacks.install()
    _show_fork_with_threads()
    if args.cgroup is not None:
        containment.ProbeCgroup(args.cgroup).join()
    # Orphans of the tree (double-forked, setsid() ones included) re-parent to the runner.
    containment.become_child_subreaper()
    containment.offer_to_the_oom_killer()
    _die_with_pqd(args.pqd_pid, args.cgroup)
    os.set_inheritable(args.events_fd, False)
    with os.fdopen(args.events_fd, "wb") as events:
        try:
            return _serve(events, args.cgroup)
        except BrokenPipeError:
            return 1  # pqd went away mid-write; the death watch cleans up
        finally:
            _kill_own_tree(args.cgroup)


if __name__ == "__main__":
    sys.exit(main())
