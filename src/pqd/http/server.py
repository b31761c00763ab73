"""The HTTP(S) server around the WSGI app (the app itself is in web.py).

Built so that no client, however slow or hostile, can starve the others (docs/design.md §5: the
stock server gives each connection a thread, never times out a read, and runs the TLS handshake
in the accepting thread, so one idle TCP connection blocks every TLS scrape):

- One I/O thread owns every socket. It accepts, runs TLS handshakes through memory BIOs (never a
  blocking call), reads request heads and bodies, and writes responses, all non-blocking through
  a selector (each connection's bytes and clock: http_conn.py). Each request must arrive
  complete (handshake, head and body) within ``request_timeout`` of its first byte (of the
  connection, for the first one); a response must be taken within ``write_timeout``; an idle
  keep-alive connection is closed after ``idle_timeout``.
- Only complete requests reach a fixed pool of worker threads, which run the WSGI app and return
  the whole response as bytes for the I/O thread to send. The thread count never depends on the
  number of connections.
- Open connections are capped; at the cap the least recently active idle connection is closed to
  make room (a scraper reconnects, an idle attacker loses its slot).
- Basic auth is checked here, before the app (http_auth.py): a cached verdict in the I/O thread,
  and the slow bcrypt check (70-300 ms) on its own small pool of auth workers, so password
  guessing cannot occupy the workers that serve authenticated scrapes.
- The web config file and the certificate files it names are watched and re-read when they
  change (webconfig_watch.py); a broken new version is logged once and the last good one kept.
- Every response is framed here (http_parse.py): Content-Length, and no body for HEAD, whatever
  the app did.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import math
import queue
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final
from wsgiref.types import WSGIApplication

from pqd.config.syntax import split_listen_address
from pqd.http.auth import AUTH_EXEMPT_PATHS, Admission, BcryptCheck, unauthorized_response
from pqd.http.conn import Connection, ConnState
from pqd.http.listen import connection_budget, listening_socket
from pqd.http.parse import (
    RequestError,
    RequestHead,
    ServerLimits,
    response_bytes,
    simple_response,
)
from pqd.http.webconfig_watch import LoadedWebConfig, WebConfigWatcher
from pqd.http.wsgi import Caller, run_app, wsgi_environ

__all__ = ["AUTH_EXEMPT_PATHS", "HttpServer", "ServerLimits"]

log = logging.getLogger("pqd.http")

_ACCEPT_BATCH: Final = 64
_ACCEPT_PAUSE_SECONDS: Final = 0.1  # after EMFILE with nothing to evict
_DEFAULT_LIMITS: Final = ServerLimits()


@dataclass(frozen=True)
class _Request:
    """A complete request on its way to a worker, with what the I/O thread decided about it."""

    conn: Connection  # for the I/O thread only, once the response is back
    head: RequestHead
    body: bytes
    web: LoadedWebConfig  # the web config in force when it arrived
    user: str | None  # known from a cached verdict, or no login needed
    check: BcryptCheck | None  # else the login still to check, on an auth worker
    keep_alive: bool
    tls: bool
    peer: tuple[str, int]


class HttpServer:
    """Serves ``app`` on ``listen_address`` ("[host]:port"; an empty host means every interface,
    IPv4 and IPv6) from background threads, with TLS and basic auth from ``web_config_file``
    (exporter-toolkit's format) if given.

    The constructor reads the web config (a broken one raises ConfigError) and binds the port
    (OSError); :meth:`start` starts serving, :meth:`stop` stops and closes everything.
    """

    def __init__(
        self,
        listen_address: str,
        app: WSGIApplication,
        *,
        web_config_file: str | None = None,
        limits: ServerLimits = _DEFAULT_LIMITS,
    ) -> None:
        host, port = split_listen_address(listen_address)
        self._app = app
        self._limits = limits
        self._max_connections = connection_budget(limits.max_connections)
        self._web = WebConfigWatcher(web_config_file, limits.config_check_interval)
        self._listener = listening_socket(host, port)
        self._server_name = host or "localhost"
        self._server_port = str(self.port)
        self._admission = Admission(limits)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._conns: dict[int, Connection] = {}
        # Responses from the workers, for the I/O thread to send: (request, bytes, keep_alive).
        self._responses: collections.deque[tuple[_Request, bytes, bool]] = collections.deque()
        self._pipelined: collections.deque[Connection] = collections.deque()
        self._work: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._auth_work: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept_paused_until: float | None = None
        self._last_fd_warning = -math.inf
        self._closed = False

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def open_connections(self) -> int:
        """Client connections open now (a snapshot; for tests and diagnostics)."""
        return len(self._conns)

    def start(self) -> None:
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._threads.append(threading.Thread(target=self._io_loop, name="pqd-http", daemon=True))
        for i in range(self._limits.workers):
            self._threads.append(
                threading.Thread(
                    target=self._worker_loop, args=(self._work,), name=f"pqd-http-{i}", daemon=True
                )
            )
        for i in range(self._limits.auth_workers):
            self._threads.append(
                threading.Thread(
                    target=self._worker_loop,
                    args=(self._auth_work,),
                    name=f"pqd-http-auth-{i}",
                    daemon=True,
                )
            )
        for thread in self._threads:
            thread.start()
        log.info(
            "http server listening",
            extra={
                "port": self.port,
                "tls": self._web.tls,
                "max_connections": self._max_connections,
            },
        )

    def stop(self) -> None:
        """Stop serving and close every connection; returns within about 5 s even if an app call
        hangs (workers are daemon threads)."""
        self._stopping.set()
        self._wake()
        deadline = time.monotonic() + 5.0
        io_thread = self._threads[0] if self._threads else None
        if io_thread is not None:
            io_thread.join(max(0.0, deadline - time.monotonic()))
        for _ in range(self._limits.workers):
            self._work.put(None)
        for _ in range(self._limits.auth_workers):
            self._auth_work.put(None)
        for thread in self._threads[1:]:
            thread.join(max(0.0, deadline - time.monotonic()))
        if io_thread is None or not io_thread.is_alive():
            self._close_all()

    # -- I/O thread: the loop, accepting and closing -----

    def _wake(self) -> None:
        # Full means a wake-up is already pending; closed means the server is stopping.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _io_loop(self) -> None:
        try:
            while not self._stopping.is_set():
                events = self._selector.select(self._select_timeout())
                now = time.monotonic()
                for key, mask in events:
                    conn = key.data
                    if conn is None:
                        if key.fileobj is self._listener:
                            self._accept(now)
                        else:
                            self._drain_wake()
                    elif isinstance(conn, Connection) and not conn.closed:
                        self._on_socket_event(conn, mask, now)
                self._send_responses(now)
                self._serve_pipelined(now)
                self._sweep(now)
                if events:
                    # Only traffic makes the web config worth a look, so idle means asleep.
                    self._web.check(now)
        except Exception:  # a bug here must be visible, not a silently dead server
            log.exception("http server I/O loop failed")
        finally:
            self._close_all()

    def _select_timeout(self) -> float | None:
        """How long the I/O thread may sleep: until the earliest deadline (a connection's, or
        the end of an accept pause), else until a socket or a worker wakes it. A keep-alive
        connection between scrapes costs one wake-up, at its idle timeout."""
        deadlines = [
            conn.deadline
            for conn in self._conns.values()
            if conn.state is not ConnState.BUSY and conn.deadline != math.inf
        ]
        if self._accept_paused_until is not None:
            deadlines.append(self._accept_paused_until)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _close_all(self) -> None:
        if self._closed:
            return
        self._closed = True
        for conn in list(self._conns.values()):
            conn.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._selector.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _accept(self, now: float) -> None:
        for _ in range(_ACCEPT_BATCH):
            try:
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._out_of_fds(now)
                    return
                if err.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # the client gave up before we got to it
                log.warning("accept failed", extra={"err": err.strerror or str(err)})
                return
            self._add_connection(sock, peer, now)

    def _out_of_fds(self, now: float) -> None:
        if now - self._last_fd_warning > 60:
            self._last_fd_warning = now
            log.warning(
                "out of file descriptors, closing idle connections",
                extra={"connections": len(self._conns)},
            )
        if not self._evict(now):
            # Nothing to close: stop polling the listener (it stays readable) for a moment.
            self._selector.unregister(self._listener)
            self._accept_paused_until = now + _ACCEPT_PAUSE_SECONDS

    def _add_connection(self, sock: socket.socket, peer: tuple[str, int], now: float) -> None:
        if len(self._conns) >= self._max_connections and not self._evict(now):
            sock.close()
            return
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            sock.close()
            return
        web = self._web.current
        tls = web.config.tls if web.context is not None else None
        conn = Connection(
            sock,
            (str(peer[0]), int(peer[1])),
            tls_context=web.context,
            allowed_sans=tls.client_allowed_sans if tls is not None else (),
            limits=self._limits,
            selector=self._selector,
            forget=self._forget,
            now=now,
        )
        self._conns[conn.fd] = conn
        conn.watch()

    def _forget(self, conn: Connection) -> None:
        self._conns.pop(conn.fd, None)

    def _evict(self, now: float) -> bool:
        """Close the connection that matters least: idle before half-sent, least recently
        active first. False if every connection is being served."""
        victim: Connection | None = None
        for conn in self._conns.values():
            if conn.state not in (ConnState.READ, ConnState.HANDSHAKE):
                continue
            if victim is None or (conn.in_request, conn.last_active) < (
                victim.in_request,
                victim.last_active,
            ):
                victim = conn
        if victim is None:
            return False
        log.debug("closing connection to make room", extra={"client": victim.peer[0]})
        victim.close()
        return True

    def _sweep(self, now: float) -> None:
        """Resume accepting after a pause; time out the connections past their deadline."""
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self._selector.register(self._listener, selectors.EVENT_READ, None)
        for conn in list(self._conns.values()):
            if conn.state is ConnState.BUSY or now < conn.deadline:
                continue
            if conn.state is ConnState.READ and conn.in_request:
                # Tell a slow client why (best effort), then close: RFC 9110's 408.
                timeout = self._error(HTTPStatus.REQUEST_TIMEOUT, "request too slow")
                conn.respond_and_close(timeout, now)
                self._settle(conn, now)
            else:
                log.debug("connection timed out", extra={"client": conn.peer[0]})
                conn.close()

    # -- I/O thread: requests and responses -----

    def _on_socket_event(self, conn: Connection, mask: int, now: float) -> None:
        if mask & selectors.EVENT_WRITE:
            conn.flush()
        reading = conn.state in (ConnState.HANDSHAKE, ConnState.READ)
        if mask & selectors.EVENT_READ and reading and conn.receive(now):
            self._take_request(conn, now)
        self._settle(conn, now)

    def _settle(self, conn: Connection, now: float) -> None:
        if conn.settle(now, may_keep_alive=not self._stopping.is_set()):
            self._pipelined.append(conn)

    def _serve_pipelined(self, now: float) -> None:
        # Pipelined requests, handled here rather than recursively so that a client sending
        # thousands of them in one packet cannot exhaust the stack.
        for _ in range(len(self._pipelined)):
            conn = self._pipelined.popleft()
            if conn.state is ConnState.READ:
                self._take_request(conn, now)
                self._settle(conn, now)

    def _take_request(self, conn: Connection, now: float) -> None:
        """Dispatch the request complete in ``conn``'s buffer, or answer a bad one and close."""
        request = conn.next_request()
        if request is None:
            return
        if isinstance(request, RequestError):
            log.debug("bad request", extra={"client": conn.peer[0], "problem": request.message})
            conn.respond_and_close(self._error(request.status, request.message), now)
            return
        head, body = request
        self._dispatch(conn, head, body, now)

    def _error(self, status: HTTPStatus, message: str) -> bytes:
        return simple_response(
            status,
            message,
            keep_alive=False,
            extra_headers=self._web.current.config.http.headers,
        )

    def _dispatch(self, conn: Connection, head: RequestHead, body: bytes, now: float) -> None:
        """Refuse now what needs no worker to refuse; hand the rest to a worker."""
        web = self._web.current
        keep_alive = head.keep_alive and not self._stopping.is_set()
        admitted = self._admission.admit(head, web, keep_alive=keep_alive, now=now)
        if isinstance(admitted, bytes):
            conn.respond(admitted, keep_alive=keep_alive, now=now)
            return
        user, check = admitted
        # Positional in field order: each local is named like its field.
        tls = conn.tls is not None
        request = _Request(conn, head, body, web, user, check, keep_alive, tls, conn.peer)
        conn.start_work()
        if check is not None:
            self._auth_work.put(request)
        else:
            self._work.put(request)

    def _send_responses(self, now: float) -> None:
        """Send what the workers have finished."""
        while self._responses:
            request, data, keep_alive = self._responses.popleft()
            if request.check is not None:
                self._admission.check_done()
            conn = request.conn
            if conn.state is not ConnState.BUSY:
                continue  # closed meanwhile (server stopping)
            conn.respond(data, keep_alive=keep_alive and not self._stopping.is_set(), now=now)
            self._settle(conn, now)

    # -- worker threads -----

    def _worker_loop(self, requests: queue.SimpleQueue[_Request | None]) -> None:
        while True:
            request = requests.get()
            if request is None:
                return
            try:
                data = self._response_to(request)
                keep_alive = request.keep_alive
            except Exception:
                log.exception(
                    "error serving request",
                    extra={"method": request.head.method, "path": request.head.path_info},
                )
                data = simple_response(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    "",
                    keep_alive=False,
                    extra_headers=request.web.config.http.headers,
                    head_only=request.head.method == "HEAD",
                )
                keep_alive = False
            self._responses.append((request, data, keep_alive))
            self._wake()

    def _response_to(self, request: _Request) -> bytes:
        """Check the password if still needed, run the app, and frame its response."""
        head_only = request.head.method == "HEAD"
        user = request.user
        if request.check is not None:
            if not self._admission.auth.verify(request.check):
                return unauthorized_response(
                    request.web, keep_alive=request.keep_alive, head_only=head_only
                )
            user = request.check.user
        caller = Caller(self._server_name, self._server_port, request.peer, request.tls, user)
        status, headers, body = run_app(self._app, wsgi_environ(request.head, request.body, caller))
        return response_bytes(
            status,
            headers,
            body,
            keep_alive=request.keep_alive,
            extra_headers=request.web.config.http.headers,
            head_only=head_only,
        )
