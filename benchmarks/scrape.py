"""Scrape /metrics: pqd beside prometheus_client's server and node_exporter, in two shapes.

Servers, all running at once, each in its own process, plain and TLS (benchmarks/_scrape_peers.py):
``pqd run`` (default probe, ``--interval 1h``, first cycle done); prometheus_client's
``start_http_server`` serving the registry pqd builds (benchmarks/_stock_server.py) with its
listen backlog raised to 1024, and as shipped (backlog 5); Debian's prometheus-node-exporter
(collectors trimmed, see the settings printed at the top). The load generator (this process and
wrk) runs outside all of them (benchmarks/_scrape_load.py).

1. Prometheus-shaped: one client, one kept-alive connection, a scrape every 100 ms (``--rounds``
   rounds of ``--paced-seconds`` per server, interleaved, order rotated each round) and every
   15 s (``--ticks`` scrapes, every server in the same ticks, one client thread each, staggered
   so no two scrapes overlap). Latency from just before the request is written to the last body
   byte: no connect or handshake, except on servers that close every connection
   (prometheus_client: HTTP/1.0), whose every scrape reconnects ("reconnects" column).
2. Hostile: 10 and 50 clients, a new connection per request (wrk ``-H 'Connection: close'``),
   ``--rounds`` rounds of ``--seconds`` per server, interleaved. wrk's latency excludes connect
   and handshake (it starts timing when it writes the request); one extra client here times
   requests on new connections with connect and handshake included ("new conn").

Server CPU per request: the server's whole process tree, user+system, before/after each round,
divided by the requests served. Idle memory of each server's tree (RSS, PSS) is printed too.

    .venv/bin/python benchmarks/scrape.py [--quick] [--rounds N] [--seconds S] [--ticks N]
"""

from __future__ import annotations

import sys


def main() -> int:
    import contextlib
    import tempfile
    from pathlib import Path

    import _common as c
    import _scrape_peers as peers
    import _scrape_report as report

    args = report.parse_args(__doc__.splitlines()[0])
    peers.require_tools()
    print(c.machine_line())
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pqd-scrape-")))
        certs = peers.make_certs(tmp)
        servers = peers.start_all(stack, certs)
        print("\n".join(peers.settings_lines(servers)))
        clients = report.warm_clients(servers, certs, stack)
        report.print_memory(servers)
        report.shape_fast(clients, args)
        report.shape_slow(clients, args)
        report.shape_hostile(servers, certs, args)
    print(c.machine_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
