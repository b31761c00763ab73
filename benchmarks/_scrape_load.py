"""The load benchmarks/scrape.py puts on each server, from outside every server's process.

- ``KeepAliveClient``: one Prometheus-shaped scraper, one connection kept alive (HTTP/1.1);
  latency from just before the request is written to the last byte of the body. A server that
  closes the connection after a response (prometheus_client's HTTP/1.0 server does, always) makes
  the next scrape connect again, and that scrape's latency then includes connect (and the TLS
  handshake): such scrapes are counted (``reconnects``).
- ``wrk_round``: Debian's wrk, N connections, ``Connection: close`` so every request is on a new
  connection. wrk's own latency starts when it writes the request, i.e. AFTER connect and the TLS
  handshake (wrk.c sets ``c->start`` in ``socket_writeable``); so beside it one extra client in
  this process makes sequential requests on new connections and times connect + handshake +
  request + last body byte ("new-connection latency").

Server CPU: user+system of the server's whole process tree (_common.process_tree_cpu) before and
after, divided by the requests it served in between.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import _common as c
from _scrape_peers import WRK, Certs, Server


def _connection(server: Server, certs: Certs, timeout: float) -> http.client.HTTPConnection:
    if server.tls:
        return http.client.HTTPSConnection(
            "127.0.0.1", server.port, timeout=timeout, context=certs.client_context()
        )
    return http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)


def _read(conn: http.client.HTTPConnection) -> int:
    conn.request("GET", "/metrics")
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}")
    return len(body)


class KeepAliveClient:
    """One scraper with a kept-alive connection (http.client reconnects when the server closed)."""

    def __init__(self, server: Server, certs: Certs, timeout: float = 10.0) -> None:
        self.server = server
        self.conn = _connection(server, certs, timeout)
        self.reconnects = 0
        self.body_bytes = _read(self.conn)  # the first scrape connects; not counted

    def scrape(self) -> float:
        if self.conn.sock is None:  # the server closed it after the last response
            self.reconnects += 1
        t0 = time.perf_counter()
        _read(self.conn)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.conn.close()


def fresh_get(server: Server, certs: Certs, timeout: float = 10.0) -> float:
    """One request on a new connection: connect + handshake + request + last body byte."""
    t0 = time.perf_counter()
    conn = _connection(server, certs, timeout)
    try:
        _read(conn)
    finally:
        conn.close()
    return time.perf_counter() - t0


@dataclass(frozen=True)
class Round:
    """One round against one server."""

    latencies: list[float]  # seconds, one per request (paced shapes)
    requests: int
    seconds: float
    cpu: float  # server tree CPU seconds during the round
    errors: int = 0
    p50: float = float("nan")  # wrk's
    p99: float = float("nan")
    fresh: tuple[float, ...] = ()  # new-connection latencies beside wrk
    #: wrk's errors by kind: connect, read, write, timeout, non-2xx
    error_kinds: tuple[int, ...] = (0, 0, 0, 0, 0)
    time_wait: int = -1  # TCP sockets in TIME_WAIT on the host right after the round

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")

    @property
    def cpu_per_request(self) -> float:
        return self.cpu / self.requests if self.requests else float("nan")


def paced_round(client: KeepAliveClient, interval: float, count: int) -> Round:
    """``count`` scrapes, one every ``interval`` seconds (on a fixed grid), CPU around them."""
    latencies = []
    cpu0 = c.process_tree_cpu(client.server.pid)
    start = time.monotonic()
    for i in range(count):
        delay = start + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        latencies.append(client.scrape())
    elapsed = time.monotonic() - start
    cpu = c.process_tree_cpu(client.server.pid) - cpu0
    return Round(latencies, len(latencies), elapsed, cpu)


def same_ticks(
    clients: Sequence[KeepAliveClient], interval: float, ticks: int, stagger: float
) -> list[Round]:
    """Every client scrapes its server once a tick, one thread each; client i at offset
    ``i * stagger`` into the tick so no two scrapes overlap."""
    results: list[Round | None] = [None] * len(clients)
    start = time.monotonic() + 0.1

    def run(i: int, client: KeepAliveClient) -> None:
        latencies = []
        cpu0 = c.process_tree_cpu(client.server.pid)
        for tick in range(ticks):
            delay = start + tick * interval + i * stagger - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            latencies.append(client.scrape())
        cpu = c.process_tree_cpu(client.server.pid) - cpu0
        results[i] = Round(latencies, ticks, ticks * interval, cpu)

    threads = [threading.Thread(target=run, args=(i, cl)) for i, cl in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in results if r is not None]


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _seconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_wrk(out: str) -> dict[str, float]:
    """requests, seconds, req/s, errors, p50 and p99 (seconds) from ``wrk --latency``'s output."""
    found: dict[str, float] = {}
    if m := re.search(r"(\d+) requests in ([\d.]+\w+),", out):
        found["requests"], found["seconds"] = float(m[1]), _seconds(m[2])
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        found["rate"] = float(m[1])
    for pct in ("50", "99"):
        if m := re.search(rf"^\s+{pct}%\s+([\d.]+\w+)\s*$", out, re.MULTILINE):
            found[f"p{pct}"] = _seconds(m[1])
    kinds = ("connect", "read", "write", "timeout")
    for kind in kinds:
        found[kind] = 0.0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        found.update(zip(kinds, (float(g) for g in m.groups()), strict=True))
    found["bad_status"] = 0.0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        found["bad_status"] = float(m[1])
    found["errors"] = sum(found[kind] for kind in kinds) + found["bad_status"]
    missing = {"requests", "seconds", "rate", "p50", "p99"} - set(found)
    if missing:
        raise RuntimeError(f"could not read {sorted(missing)} from wrk's output:\n{out}")
    return found


def wrk_round(server: Server, certs: Certs, clients: int, seconds: int) -> Round:
    """wrk with ``clients`` connections, a new connection per request, for ``seconds``; one
    extra client here times requests on new connections, connect and handshake included."""
    argv = [WRK, "-t2", f"-c{clients}", f"-d{seconds}s", "--latency", "-H", "Connection: close"]
    fresh: list[float] = []
    done = threading.Event()

    def probe() -> None:
        time.sleep(0.2)  # let wrk's connections start
        while not done.is_set():
            with contextlib.suppress(OSError, RuntimeError, http.client.HTTPException):
                fresh.append(fresh_get(server, certs))
            done.wait(0.05)

    cpu0 = c.process_tree_cpu(server.pid)
    thread = threading.Thread(target=probe)
    thread.start()
    try:
        out = subprocess.run(
            [*argv, server.url], capture_output=True, text=True, check=True, timeout=seconds + 60
        ).stdout
    finally:
        done.set()
        thread.join()
    cpu = c.process_tree_cpu(server.pid) - cpu0
    w = parse_wrk(out)
    ok = int(w["requests"] - w["bad_status"])  # wrk counts a 503 as a request too
    served = int(w["requests"]) + len(fresh)
    kinds = tuple(int(w[k]) for k in ("connect", "read", "write", "timeout", "bad_status"))
    return Round(
        [], ok, w["seconds"], cpu * ok / served,
        int(w["errors"]), w["p50"], w["p99"], tuple(fresh), kinds, sockets_in_time_wait(),
    )  # fmt: skip


def sockets_in_time_wait() -> int:
    """TCP sockets in TIME_WAIT on the host (state 06 in /proc/net/tcp and tcp6): a load of new
    connections leaves one per connection for 60 s, and loopback has ~28,000 ephemeral ports."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            count += sum(1 for line in lines if line.split()[3:4] == ["06"])
    return count
