"""benchmarks/scrape.py's arguments, its three measurements in interleaved rounds, its tables."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence

import _common as c
from _scrape_load import KeepAliveClient, Round, paced_round, same_ticks, wrk_round
from _scrape_peers import Certs, Server

WARM_SCRAPES = 5


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="tiny rounds, for the smoke test")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per server (shapes 1, 2)")
    parser.add_argument(
        "--paced-seconds", type=float, default=6.0, help="seconds per round, 100 ms shape"
    )
    parser.add_argument("--ticks", type=int, default=7, help="scrapes of the 15 s shape")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per wrk round")
    parser.add_argument("--clients", default="10,50", help="wrk connections, comma-separated")
    args = parser.parse_args()
    args.client_counts = [int(n) for n in args.clients.split(",")]
    args.slow_interval = 15.0
    if args.quick:
        args.rounds, args.paced_seconds, args.ticks, args.seconds = 1, 0.5, 2, 1
        args.slow_interval = 0.5
    return args


def warm_clients(
    servers: Sequence[Server], certs: Certs, stack: contextlib.ExitStack
) -> list[KeepAliveClient]:
    """One kept-alive client per server, warmed by a few scrapes (not counted)."""
    clients = []
    for server in servers:
        client = KeepAliveClient(server, certs)
        stack.callback(client.close)
        for _ in range(WARM_SCRAPES):
            client.scrape()
        client.reconnects = 0
        clients.append(client)
    return clients


def rotated(items: Sequence[object], r: int) -> list[object]:
    """Round ``r``'s order: rotated by r, reversed every other round (A B C, C B A, B C A, ...)."""
    k = r % len(items)
    order = list(items[k:]) + list(items[:k])
    return order[::-1] if r % 2 else order


def _median_spread(values: Sequence[float], scale: float = 1000.0, fmt: str = ".1f") -> str:
    s = c.summarize(values)
    if s.n < 2:
        return f"{s.median * scale:{fmt}}"
    return f"{s.median * scale:{fmt}} ({s.spread(scale, fmt)})"


def _tls(server: Server) -> str:
    return "TLS" if server.tls else "plain"


def print_memory(servers: Sequence[Server]) -> None:
    rows = []
    for server in servers:
        tree = c.tree_memory(server.pid)
        root = tree[0]
        rows.append(
            [
                server.name,
                _tls(server),
                len(tree),
                f"{root.rss / c.MIB:.1f}",
                f"{root.pss / c.MIB:.1f}",
                f"{sum(p.rss for p in tree) / c.MIB:.1f}",
                f"{sum(p.pss for p in tree) / c.MIB:.1f}",
            ]
        )
    headers = ["server", "TLS", "processes", "RSS MiB", "PSS MiB", "tree RSS MiB", "tree PSS MiB"]
    c.print_table(
        f"Scrape servers' idle memory (after startup and {WARM_SCRAPES + 1} scrapes; the "
        "server process alone, then its whole live tree)",
        headers,
        rows,
    )
    print(
        "pqd's tree: pqd, its runner, the runner's forkserver and resource tracker. "
        "prometheus_client's tree: the server alone (its one pqd cycle ran in a runner it "
        "retired). PSS shares pages between processes of the tree and the others."
    )


def _paced_row(client: KeepAliveClient, rounds: Sequence[Round], rate: str) -> list[object]:
    server = client.server
    return [
        server.name,
        _tls(server),
        1,
        sum(r.requests for r in rounds),
        client.reconnects,
        client.body_bytes,
        rate,
        _median_spread([c.percentile(sorted(r.latencies), 50) for r in rounds]),
        _median_spread([c.percentile(sorted(r.latencies), 99) for r in rounds]),
        _median_spread([r.cpu_per_request for r in rounds], fmt=".2f"),
    ]


PACED_HEADERS = [
    "server",
    "TLS",
    "clients",
    "scrapes",
    "reconnects",
    "body bytes",
    "req/s",
    "p50 ms (p25-p75 of rounds)",
    "p99 ms (p25-p75 of rounds)",
    "server CPU ms/req (p25-p75)",
]


def shape_fast(clients: Sequence[KeepAliveClient], args: argparse.Namespace) -> None:
    count = max(2, round(args.paced_seconds / 0.1))
    by_server: dict[int, list[Round]] = {id(cl): [] for cl in clients}
    for cl in clients:
        cl.reconnects = 0
    for r in range(args.rounds):
        for cl in rotated(clients, r):
            assert isinstance(cl, KeepAliveClient)
            by_server[id(cl)].append(paced_round(cl, 0.1, count))
    rows = [_paced_row(cl, by_server[id(cl)], "10 (paced)") for cl in clients]
    c.print_table(
        f"Scrape /metrics, Prometheus-shaped: one kept-alive client every 100 ms ({args.rounds} "
        f"rounds x {count} scrapes per server, interleaved)",
        PACED_HEADERS,
        rows,
    )
    print(
        "Latency: request written -> last body byte on the kept-alive connection (no connect "
        "or handshake), except 'reconnects' scrapes: the server closed the connection after "
        "the previous response, so that scrape connected (and did the TLS handshake) again."
    )


def shape_slow(clients: Sequence[KeepAliveClient], args: argparse.Namespace) -> None:
    for cl in clients:
        cl.reconnects = 0
    stagger = args.slow_interval / (len(clients) + 1)
    rounds = same_ticks(clients, args.slow_interval, args.ticks, stagger)
    rows = []
    for cl, rnd in zip(clients, rounds, strict=True):
        row = _paced_row(cl, [rnd], f"1/{args.slow_interval:g}s")
        row[8] = f"{max(rnd.latencies) * 1000:.1f} (max)"
        rows.append(row)
    headers = [*PACED_HEADERS]
    headers[7], headers[8], headers[9] = "p50 ms", "p99 ms (= max)", "server CPU ms/req"
    c.print_table(
        f"Scrape /metrics, Prometheus-shaped: one kept-alive client every {args.slow_interval:g} "
        f"s ({args.ticks} scrapes per server, all servers in the same ticks, one client thread "
        f"each, {stagger:.2f} s apart)",
        headers,
        rows,
    )
    print(
        f"Only {args.ticks} samples per server: p50 and max, no spread. Latency as above; an "
        "idle kept-alive connection is reused after the pause unless the server closed it."
    )


def shape_hostile(servers: Sequence[Server], certs: Certs, args: argparse.Namespace) -> None:
    rows = []
    error_notes = []
    for clients in args.client_counts:
        by_server: dict[str, list[Round]] = {s.url: [] for s in servers}
        for r in range(args.rounds):
            for s in rotated(servers, r):
                assert isinstance(s, Server)
                by_server[s.url].append(wrk_round(s, certs, clients, args.seconds))
        rows += [_hostile_row(s, clients, by_server[s.url]) for s in servers]
        error_notes += [_error_note(s, clients, by_server[s.url]) for s in servers]
    headers = [
        "server",
        "TLS",
        "clients",
        "2xx responses",
        "errors",
        "req/s (p25-p75)",
        "wrk p50 ms",
        "wrk p99 ms",
        "new conn p50 ms",
        "new conn p99 ms",
        "server CPU ms/req (p25-p75)",
    ]
    c.print_table(
        f"Scrape /metrics, hostile: wrk -t2 -cN, a new connection per request ({args.rounds} "
        f"rounds x {args.seconds} s per server and N, interleaved)",
        headers,
        rows,
    )
    print(
        "wrk p50/p99 (median of rounds, p25-p75): from wrk writing the request to the last body "
        "byte, connect and TLS handshake NOT included (wrk starts its clock after them). "
        "new conn: one more client in this process, sequential requests on new connections "
        "(about 20 a second), timed from connect() to the last body byte, connect and TLS "
        "handshake included; its percentiles pool all rounds. CPU per request counts wrk's "
        "completed requests and the extra client's."
    )
    for note in filter(None, error_notes):
        print(note)


def _error_note(server: Server, clients: int, rounds: Sequence[Round]) -> str:
    """What wrk's errors were, for a row that had any, and the host's TIME_WAIT sockets after
    each round (connect errors beside ~28,000 of them mean loopback's ephemeral ports ran out)."""
    if not any(r.errors for r in rounds):
        return ""
    kinds = [sum(r.error_kinds[i] for r in rounds) for i in range(5)]
    names = ("connect", "read", "write", "timeout", "non-2xx")
    shown = ", ".join(f"{name} {n}" for name, n in zip(names, kinds, strict=True))
    waits = ", ".join(str(r.time_wait) for r in rounds)
    return (
        f"errors of {server.name} {_tls(server)} at {clients} clients (all rounds): {shown}; "
        f"TCP sockets in TIME_WAIT after each round: {waits}"
    )


def _hostile_row(server: Server, clients: int, rounds: Sequence[Round]) -> list[object]:
    fresh = sorted(x for r in rounds for x in r.fresh)
    return [
        server.name,
        _tls(server),
        clients,
        sum(r.requests for r in rounds),
        sum(r.errors for r in rounds),
        _median_spread([r.rate for r in rounds], scale=1.0, fmt=".0f"),
        _median_spread([r.p50 for r in rounds]),
        _median_spread([r.p99 for r in rounds]),
        c.ms(c.percentile(fresh, 50)) if fresh else "-",
        c.ms(c.percentile(fresh, 99)) if fresh else "-",
        _median_spread([r.cpu_per_request for r in rounds], fmt=".2f"),
    ]
