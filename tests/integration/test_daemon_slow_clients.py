"""The slow-client check against a real `pqd run` (the in-process server is covered in
test_server_slow_clients.py): 500 idle connections and 50 half-sent requests held open, over
plain HTTP and TLS; no scrape fails, pqd's thread count stays put, the median of 50 scrapes
stays within a small factor of the median without slow clients measured in the same run, and no
scrape comes near a slow client's request deadline. (A p99 of 50 scrapes is their slowest one: one
scheduling hiccup on a busy machine decides it, so it is not asserted; the absolute figures are
in docs/benchmarks.md.)"""

from __future__ import annotations

import contextlib
import http.client
import resource
import socket
import ssl
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers.pqd_process import PqdProcess
from tests.helpers.tls import make_ca, make_leaf
from tests.helpers.waiting import wait_until

IDLE, HALF_SENT, SCRAPES = 500, 50, 50
#: How much slower the median scrape may get with the slow clients open than without them. The
#: floor keeps a millisecond baseline from turning scheduling noise into a failure.
SLOWDOWN_FACTOR, BASELINE_FLOOR_SECONDS = 5.0, 0.010
#: A server that let a slow client block it would hold a scrape until that client's request
#: deadline (10 s by default); one second still tells that apart from a busy machine's hiccups.
SLOWEST_SCRAPE_SECONDS = 1.0


@pytest.fixture(autouse=True)
def enough_fds() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_scrapes_of_a_real_pqd_stay_fast_with_slow_clients(tmp_path: Path, scheme: str) -> None:
    args: list[str] = []
    client_ctx: ssl.SSLContext | None = None
    if scheme == "https":
        ca = make_ca()
        make_leaf(ca, "localhost").write(tmp_path, "server")
        (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
        web = tmp_path / "web.yml"
        web.write_text("tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n")
        args = ["--web-config-file", str(web)]
        client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    # One cycle at start-up, then none during the measurement: this measures the server.
    pqd = PqdProcess(tmp_path, '[probes.a]\ninterval = "1h"\n', args=args)
    held: list[socket.socket] = []
    try:
        # Readiness over the right scheme: wait for the port, then for a TLS or plain answer.
        pqd.port = wait_until(lambda: _logged_port(pqd), "pqd to log its port")
        wait_until(lambda: _scrape_seconds(pqd.port, client_ctx) is not None, "a first scrape")
        me = psutil.Process(pqd.proc.pid)
        threads_before = me.num_threads()
        baseline = [_scrape_seconds(pqd.port, client_ctx) for _ in range(SCRAPES)]

        for _ in range(IDLE):
            held.append(socket.create_connection(("127.0.0.1", pqd.port), timeout=30))
        for i in range(HALF_SENT):
            sock = socket.create_connection(("127.0.0.1", pqd.port), timeout=30)
            if client_ctx is not None:
                sock = client_ctx.wrap_socket(sock, server_hostname="localhost")
            held.append(sock)
            sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: {i}\r\n".encode())

        latencies = []
        for _ in range(SCRAPES):
            seconds = _scrape_seconds(pqd.port, client_ctx)
            assert seconds is not None, "a scrape failed while slow clients were open"
            latencies.append(seconds)
        threads_during = me.num_threads()
        connections = len(me.net_connections(kind="tcp"))
        for sock in held:
            sock.close()
        # The machine's load may change during the run: a baseline on each side of it.
        baseline += [_scrape_seconds(pqd.port, client_ctx) for _ in range(SCRAPES)]
    finally:
        for sock in held:
            with contextlib.suppress(OSError):
                sock.close()
        pqd.stop()

    measured = [seconds for seconds in baseline if seconds is not None]
    assert len(measured) == 2 * SCRAPES, "a scrape failed without slow clients"
    base = max(statistics.median(measured[:SCRAPES]), statistics.median(measured[SCRAPES:]))
    median = statistics.median(latencies)
    limit = SLOWDOWN_FACTOR * max(base, BASELINE_FLOOR_SECONDS)
    shown = f"{median * 1000:.1f} ms with slow clients, {base * 1000:.1f} without"
    assert median <= limit, f"median scrape {shown}"
    assert max(latencies) < SLOWEST_SCRAPE_SECONDS, f"slowest {max(latencies):.3f} s; {shown}"
    assert connections >= IDLE + HALF_SENT  # the slow clients really were held open
    # No thread per connection (the server's threads are a fixed pool).
    assert threads_during <= threads_before + 2


def _logged_port(pqd: PqdProcess) -> int | None:
    import re

    found = re.search(r'msg="pqd started".* port=(\d+)', pqd.log_text())
    return int(found.group(1)) if found else None


def _scrape_seconds(port: int, client_ctx: ssl.SSLContext | None) -> float | None:
    conn: http.client.HTTPConnection
    if client_ctx is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    else:
        conn = http.client.HTTPSConnection("localhost", port, timeout=10, context=client_ctx)
    t0 = time.perf_counter()
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
        ok = response.status == 200 and b'pqd_cycles_total{probe="a"} 1.0' in body
    except OSError:
        return None
    finally:
        conn.close()
    return time.perf_counter() - t0 if ok else None
