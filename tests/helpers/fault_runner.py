"""A probe runner (pqd.runner.main) whose producer job is fault_jobs.<$PQDTEST_PRODUCER>; started by
fault_harness.py in place of `python -m pqd.runner.main`."""

from __future__ import annotations

import os
import sys

PRODUCER_ENV = "PQDTEST_PRODUCER"


def main() -> int:
    import functools

    import pqd.runner.cycle
    from pqd.runner.main import main as runner_main
    from tests.helpers import fault_jobs

    producer = getattr(fault_jobs, os.environ.get(PRODUCER_ENV, "spawning_on_trigger_producer"))
    pqd.runner.cycle.JobFunctions = functools.partial(  # type: ignore[misc]
        pqd.runner.cycle.JobFunctions, producer=producer
    )
    return runner_main()


if __name__ == "__main__":
    sys.exit(main())
