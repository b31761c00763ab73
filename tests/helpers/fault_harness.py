"""Runs `pqd` with its runners started as tests.helpers.fault_runner, whose producer job is
the one named by $PQDTEST_PRODUCER (from tests.helpers.fault_jobs). A test harness only; pqd
itself has no such switch."""

from __future__ import annotations

import sys


def main() -> int:
    import pqd.supervisor.runners
    from pqd.cli import main as pqd_main

    pqd.supervisor.runners.RUNNER_MODULE = "tests.helpers.fault_runner"
    return pqd_main()


if __name__ == "__main__":
    sys.exit(main())
