"""prometheus_client's stock ``start_http_server`` serving the registry pqd builds.

The registry is made as `pqd run` makes its own: PqdMetrics with the default probe (and the
process_*/python_* collectors), fed with one real cycle of that probe. The cycle runs in a pqd
runner that is retired right after, so the server's process tree is the server alone: its
memory is compared with pqd's whole tree, and a forkserver left behind would be counted to it.
Prints ``port=N backlog=M`` once serving and runs until stdin closes.

``--backlog N`` sets the listen backlog. prometheus_client builds its server from
``prometheus_client.exposition.ThreadingWSGIServer`` (a subclass of it, per call), a
``socketserver.TCPServer`` whose ``request_queue_size`` (the ``listen()`` backlog) defaults to 5;
setting the class attribute before ``start_http_server`` raises it. Without ``--backlog`` the
server is as shipped (5).

    python benchmarks/_stock_server.py [--backlog N] [--certfile F --keyfile F]
"""

from __future__ import annotations

import sys


def main() -> int:
    import argparse

    from prometheus_client import CollectorRegistry, exposition, start_http_server

    from pqd import __version__
    from pqd.metrics.series import ProbeFacts
    from pqd.metrics.writer import PqdMetrics
    from pqd.probe import ProbeConfig
    from pqd.runner.containment import become_child_subreaper
    from pqd.supervisor.runners import Runners

    parser = argparse.ArgumentParser()
    parser.add_argument("--backlog", type=int, help="listen backlog (default: as shipped, 5)")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    args = parser.parse_args()

    if args.backlog is not None:
        exposition.ThreadingWSGIServer.request_queue_size = args.backlog
    become_child_subreaper()
    probe = ProbeConfig()
    registry = CollectorRegistry()
    metrics = PqdMetrics(
        registry,
        version=__version__,
        probes=[ProbeFacts(probe.name, probe.start_method, probe.workers, probe.queue_maxsize)],
    )
    runners = Runners(None)
    try:
        metrics.observe_cycle(runners.run_cycle(probe))
    finally:
        runners.close()  # the runner and its forkserver and resource tracker go
    server, _thread = start_http_server(
        0, addr="127.0.0.1", registry=registry, certfile=args.certfile, keyfile=args.keyfile
    )
    print(f"port={server.server_address[1]} backlog={server.request_queue_size}", flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
