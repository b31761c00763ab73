"""Slow and hostile clients cannot starve the server (design §5: the client library's server
blocks every TLS scrape behind one idle connection and grows a thread per connection).

With hundreds of idle TCP connections and half-sent requests held open, over plain HTTP and over
TLS, normal scrapes of pqd's real web app still answer quickly and the thread count stays fixed;
deadlines and the connection cap then clean up after the slow clients. "Quickly" is relative to
scrapes of the same server without slow clients in the same run (an absolute limit fails on a busy
machine; docs/benchmarks.md has the absolute figures).
"""

from __future__ import annotations

import http.client
import os
import resource
import socket
import ssl
import statistics
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import pytest
from prometheus_client import CollectorRegistry, Gauge, ProcessCollector

from pqd.http.server import HttpServer, ServerLimits
from pqd.web.app import ProbeView, WebState, make_app
from tests.helpers.tls import make_ca, make_leaf
from tests.helpers.waiting import wait_until

IDLE_CONNECTIONS = 500
HALF_SENT_REQUESTS = 50
HALF_SENT_HANDSHAKES = 20  # TLS only: a ClientHello cut in half
SCRAPES = 50
#: How much slower the median scrape may get with the slow clients open than without them; the
#: floor keeps a millisecond baseline from turning scheduling noise into a failure.
SLOWDOWN_FACTOR, BASELINE_FLOOR_SECONDS = 5.0, 0.010
#: A server that a slow client could block would hold a scrape until that client's deadline
#: (120 s here); one second still tells that apart from a busy machine's hiccups.
SLOWEST_SCRAPE_SECONDS = 1.0
DEADLINE = 30.0  # for any wait on the server; generous for a loaded 2-core machine


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def enough_fds() -> Iterator[None]:
    # Client and server ends of ~600 connections live in this one process.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new_soft = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new_soft, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def pqd_app() -> WSGIApplication:
    """The real web app over a registry like the daemon's (process metrics plus a gauge)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    gauge = Gauge("pqd_test_gauge", "A gauge.", ["probe"], registry=registry)
    for i in range(20):
        gauge.labels(f"probe{i}").set(i)
    state = WebState(
        version="0.0.0",
        python_version="3",
        started_at=time.time(),
        probes=(ProbeView("default", (("workers", "4"),)),),
        reload_enabled=False,
        ready=True,
    )
    return make_app(
        registry=registry,
        state=lambda: state,
        recent_cycles=list,
        find_cycle=lambda _id: None,
        render_trace=lambda _result: [],
        reload=lambda: (False, "disabled"),
    )


@dataclass
class Target:
    server: HttpServer
    client_ctx: ssl.SSLContext | None

    def connect(self) -> http.client.HTTPConnection:
        if self.client_ctx is None:
            return http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=DEADLINE)
        return http.client.HTTPSConnection(
            "localhost", self.server.port, context=self.client_ctx, timeout=DEADLINE
        )

    def scrape(self) -> float:
        """One scrape on a fresh connection (the worst case: TCP and TLS set-up included)."""
        started = time.perf_counter()
        conn = self.connect()
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        elapsed = time.perf_counter() - started
        assert response.status == 200
        assert b'pqd_test_gauge{probe="probe19"} 19.0' in body
        return elapsed


@pytest.fixture(params=["http", "https"])
def scheme(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def start_target(
    scheme: str, tmp_path: Path
) -> Iterator[Callable[[ServerLimits, WSGIApplication | None], Target]]:
    servers: list[HttpServer] = []

    def start(limits: ServerLimits, app: WSGIApplication | None = None) -> Target:
        web_config: str | None = None
        client_ctx: ssl.SSLContext | None = None
        if scheme == "https":
            ca = make_ca()
            make_leaf(ca, "localhost").write(tmp_path, "server")
            (tmp_path / "ca.crt").write_bytes(ca.cert_pem)
            (tmp_path / "web.yml").write_text(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
            )
            web_config = str(tmp_path / "web.yml")
            client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        server = HttpServer(
            "127.0.0.1:0", app or pqd_app(), web_config_file=web_config, limits=limits
        )
        server.start()
        servers.append(server)
        return Target(server, client_ctx)

    yield start
    for server in servers:
        server.stop()


class Hold:
    """Client sockets the test keeps open (and closes, whatever happens)."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []

    def add(self, sock: socket.socket) -> socket.socket:
        self.sockets.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()
        self.sockets.clear()


@pytest.fixture
def hold() -> Iterator[Hold]:
    held = Hold()
    yield held
    held.close()


def open_idle(target: Target, hold: Hold, count: int) -> list[socket.socket]:
    return [
        hold.add(socket.create_connection(("127.0.0.1", target.server.port), timeout=DEADLINE))
        for _ in range(count)
    ]


def open_half_sent(target: Target, hold: Hold, count: int) -> list[socket.socket]:
    """Requests cut off before the blank line that ends the head (after the TLS handshake)."""
    out = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", target.server.port), timeout=DEADLINE)
        if target.client_ctx is not None:
            sock = target.client_ctx.wrap_socket(sock, server_hostname="localhost")
        hold.add(sock)
        sock.sendall(f"GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Slow: {i}\r\n".encode())
        out.append(sock)
    return out


def open_half_handshakes(target: Target, hold: Hold, count: int) -> list[socket.socket]:
    assert target.client_ctx is not None
    out = []
    for _ in range(count):
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = target.client_ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = outgoing.read()
        sock = hold.add(
            socket.create_connection(("127.0.0.1", target.server.port), timeout=DEADLINE)
        )
        sock.sendall(hello[: len(hello) // 2])
        out.append(sock)
    return out


def still_open(sock: socket.socket) -> bool:
    """Nothing to read and no EOF: the server is still holding this connection."""
    sock.setblocking(False)
    try:
        data = socket.socket.recv(sock, 1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    except (ConnectionError, ssl.SSLError):
        return False
    finally:
        sock.setblocking(True)
        sock.settimeout(DEADLINE)
    return bool(data)


def server_closed(sock: socket.socket) -> bool:
    """The server has closed this connection (EOF or reset, possibly after an error reply)."""
    sock.setblocking(False)
    try:
        while socket.socket.recv(sock, 65536):
            pass
    except BlockingIOError:
        return False
    except ConnectionError:
        return True
    finally:
        sock.setblocking(True)
        sock.settimeout(DEADLINE)
    return True


# --------------------------------------------------------------------------------------------------


def test_scrapes_stay_fast_with_slow_clients_open(
    start_target: Callable[..., Target], hold: Hold, scheme: str
) -> None:
    threads_before = threading.active_count()
    fds_before = open_fds()
    # Deadlines long enough that the slow clients are certainly still held while scraping on a
    # slow machine; test_slow_clients_are_cut_off checks that deadlines do fire.
    limits = ServerLimits(request_timeout=120.0, idle_timeout=120.0)
    target = start_target(limits)
    server_threads = limits.workers + limits.auth_workers + 1
    assert threading.active_count() == threads_before + server_threads
    baseline = statistics.median(target.scrape() for _ in range(SCRAPES))

    idle = open_idle(target, hold, IDLE_CONNECTIONS)
    half = open_half_sent(target, hold, HALF_SENT_REQUESTS)
    cut = open_half_handshakes(target, hold, HALF_SENT_HANDSHAKES) if scheme == "https" else []
    held = len(idle) + len(half) + len(cut)
    wait_until(lambda: target.server.open_connections == held, f"the server to hold {held}")

    latencies = []
    peak_threads = 0
    for _ in range(SCRAPES):
        latencies.append(target.scrape())
        peak_threads = max(peak_threads, threading.active_count())

    median = statistics.median(latencies)
    shown = (
        f"[{scheme}] {held} slow connections held: {SCRAPES} scrapes median "
        f"{median * 1000:.1f} ms (without: {baseline * 1000:.1f} ms), slowest "
        f"{max(latencies) * 1000:.1f} ms; threads {threads_before} before, {peak_threads} peak"
    )
    print("\n" + shown)
    assert median <= SLOWDOWN_FACTOR * max(baseline, BASELINE_FLOOR_SECONDS), shown
    assert max(latencies) < SLOWEST_SCRAPE_SECONDS, shown
    assert peak_threads == threads_before + server_threads
    # The slow clients were held the whole time, not dropped to make the numbers.
    assert all(still_open(sock) for sock in (*idle, *half, *cut))
    # (the scrapers' keep-alive connections go once the server has read their close)
    wait_until(lambda: target.server.open_connections == held, "only the slow ones to be left")

    hold.close()
    wait_until(lambda: target.server.open_connections == 0, "the server to see the closes")
    target.server.stop()
    wait_until(lambda: threading.active_count() == threads_before, "the server threads to end")
    wait_until(lambda: open_fds() <= fds_before, "every socket to be closed")


def test_slow_clients_are_cut_off(
    start_target: Callable[..., Target], hold: Hold, scheme: str
) -> None:
    target = start_target(ServerLimits(request_timeout=0.5, idle_timeout=0.5))
    idle = open_idle(target, hold, 50)
    half = open_half_sent(target, hold, 20)
    cut = open_half_handshakes(target, hold, 10) if scheme == "https" else []
    started = time.monotonic()
    wait_until(lambda: all(server_closed(s) for s in (*idle, *half, *cut)), "the deadlines")
    assert time.monotonic() - started < 10.0
    wait_until(lambda: target.server.open_connections == 0, "the server to forget them")
    assert target.scrape() < 1.0


def test_connection_cap_closes_the_oldest_idle(
    start_target: Callable[..., Target], hold: Hold
) -> None:
    cap = 64
    target = start_target(ServerLimits(max_connections=cap, request_timeout=120.0))
    first = open_idle(target, hold, cap)
    wait_until(lambda: target.server.open_connections == cap, "the cap to be reached")
    later = open_idle(target, hold, cap)
    wait_until(lambda: all(server_closed(s) for s in first), "the oldest to be closed")
    assert target.server.open_connections <= cap
    assert all(still_open(s) for s in later[1:])  # the last ones are the newest
    assert target.scrape() < 1.0  # a scrape gets a slot by evicting an idle connection
    assert target.server.open_connections <= cap


def big_app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    body = b"x" * (32 << 20)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]


def test_a_client_that_never_reads_is_dropped(
    start_target: Callable[..., Target], hold: Hold
) -> None:
    target = start_target(ServerLimits(write_timeout=0.5), big_app)
    sock = socket.create_connection(("127.0.0.1", target.server.port), timeout=DEADLINE)
    if target.client_ctx is not None:
        sock = target.client_ctx.wrap_socket(sock, server_hostname="localhost")
    hold.add(sock)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    # Not reading: the server's send buffer fills, the write deadline passes, it gives up.
    wait_until(lambda: target.server.open_connections == 0, "the write deadline")
    conn = target.connect()  # the server still answers others
    try:
        conn.request("HEAD", "/")
        assert conn.getresponse().status == 200
    finally:
        conn.close()
