"""`pqd` with every probe's runner started afresh each cycle (pqd.supervisor.runners'
WARM_BELOW_SECONDS set to 0), so benchmarks/_per_probe.py can time cold cycles at a short
interval. A benchmark harness only; pqd itself has no such switch."""

from __future__ import annotations

import sys


def main() -> int:
    import pqd.supervisor.runners
    from pqd.cli import main as pqd_main

    pqd.supervisor.runners.WARM_BELOW_SECONDS = 0.0
    return pqd_main()


if __name__ == "__main__":
    sys.exit(main())
