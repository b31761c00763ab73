"""Started as a runner would be under a probe's python (pqd.supervisor.runner_process's command
and environment, this module in place of pqd.runner.main): prints, as JSON, where pqd comes
from and which of pqd's own dependencies and test tools that interpreter can import.
Standard library only, valid Python 3.9."""

from __future__ import annotations

import importlib.util
import json
import sys


def main() -> int:
    import pqd.runner.cycle

    report = {
        "pqd": pqd.runner.cycle.__file__,
        "importable": [
            name
            for name in ("prometheus_client", "psutil", "pytest", "apscheduler", "pqd.cli")
            if importlib.util.find_spec(name) is not None
        ],
        "version": sys.version.split()[0],
        "main_spec": getattr(sys.modules["__main__"].__spec__, "name", None),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
