"""Runs `pqd` with its producer job replaced by tests.integration.fault_jobs'
forking_on_trigger_producer: a job that leaves a grandchild behind whenever the test drops a
trigger file. A test harness only; pqd itself has no such switch."""

from __future__ import annotations

import sys


def main() -> int:
    import functools

    import pqd.cycle
    from pqd.cli import main as pqd_main
    from tests.integration import fault_jobs

    pqd.cycle.JobFunctions = functools.partial(  # type: ignore[misc]
        pqd.cycle.JobFunctions, producer=fault_jobs.forking_on_trigger_producer
    )
    return pqd_main()


if __name__ == "__main__":
    sys.exit(main())
