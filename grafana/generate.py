#!/usr/bin/env python3
"""Generate pqd's Grafana dashboards with grafana-foundation-sdk.

    .venv/bin/python grafana/generate.py          # rewrite grafana/dashboards/*.json
    .venv/bin/python grafana/generate.py --check  # exit 1 if a committed file differs

The SDK is a test extra (pip install -e '.[test]'), so run this with the venv's Python. The
dashboards are code so that every query is built from the same selectors
(pqd_dashboards/queries.py) and the tests can run each one against a real Prometheus
(tests/integration/test_prometheus_dashboards.py). Edit pqd_dashboards/, never the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DASHBOARD_DIR = HERE / "dashboards"

# Run as a script, Python puts grafana/ on sys.path; the tests import this file by its path,
# which does not.
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))

try:
    from pqd_dashboards.overview import UID, overview
    from pqd_dashboards.queries import INSTANCE_SELECTOR, SELECTOR
except ModuleNotFoundError as error:
    if error.name is None or not error.name.startswith("grafana_foundation_sdk"):
        raise
    print(
        f"{error}: grafana-foundation-sdk is a test extra; run `pip install -e '.[test]'` and "
        "this script with that environment's python (.venv/bin/python grafana/generate.py)",
        file=sys.stderr,
    )
    # Not 1, which --check means as "a dashboard differs".
    sys.exit(2)

__all__ = ["DASHBOARDS", "INSTANCE_SELECTOR", "SELECTOR", "main", "render"]

#: File name -> dashboard. The file name is the uid, so both stay stable together.
DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {f"{UID}.json": overview}


def render(build: Callable[[], dict[str, Any]]) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="fail if a committed dashboard differs"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = DASHBOARD_DIR / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        for path in stale:
            print(f"{path} differs from what grafana/generate.py produces", file=sys.stderr)
        print("run: .venv/bin/python grafana/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
