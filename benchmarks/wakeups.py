"""Wake-ups of an idle `pqd run` between scrapes, with one keep-alive client connection open
(as Prometheus keeps one between scrapes): context switches of every thread of pqd, over a
window with no cycle and no request, without and with a web config file.

    .venv/bin/python benchmarks/wakeups.py [--quick] [--window SECONDS]
"""

from __future__ import annotations

import sys

TARGET_PER_SECOND = 0.0


def context_switches(pid: int) -> int:
    """Voluntary and involuntary context switches of every thread of ``pid`` so far."""
    import os

    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as status:
                for line in status:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except OSError:
            continue  # a thread that just ended
    return total


def main() -> int:
    import argparse
    import http.client
    import tempfile
    import time
    from pathlib import Path

    import _common as c

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--window", type=float, default=30.0, help="seconds measured")
    args = parser.parse_args()
    window = 1.0 if args.quick else args.window
    started = time.monotonic()
    print(c.machine_line())
    print(f"window: {window:.0f} s; one cycle at start-up (--interval 1h), then none")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pqd-wakeups-") as scratch:
        web = Path(scratch) / "web.yml"
        web.write_text("http_server_config:\n  headers:\n    X-Frame-Options: deny\n")
        for label, extra in (
            ("no web config", []),
            ("web config file", ["--web-config-file", str(web)]),
        ):
            with c.daemon(["--interval", "1h", *extra]) as d:
                d.wait_cycles(1, 60)
                client = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
                client.request("GET", "/metrics")
                client.getresponse().read()  # the connection stays open (keep-alive)
                time.sleep(0.5)  # let the scrape's own wake-ups finish before the window
                before = context_switches(d.pid)
                time.sleep(window)
                switches = context_switches(d.pid) - before
                client.close()
            per_second = switches / window
            rows.append(
                (
                    label,
                    f"{window:.0f}",
                    str(switches),
                    f"{per_second:.2f}",
                    c.verdict(per_second <= TARGET_PER_SECOND),
                )
            )
    c.print_table(
        "Wake-ups of an idle pqd with a keep-alive connection open",
        ["case", "window s", "context switches", "per second", "target 0/s"],
        rows,
    )
    print(f"end: {c.machine_line()}; took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
