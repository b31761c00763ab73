"""A thin threaded HTTP server around the WSGI app (the app itself is in web.py)."""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
from wsgiref.types import WSGIApplication

from pqd.config import split_listen_address

log = logging.getLogger("pqd.http")

#: A client that sends nothing for this long is dropped (the stock server waits forever).
REQUEST_TIMEOUT_SECONDS = 10.0


class _Handler(WSGIRequestHandler):
    timeout = REQUEST_TIMEOUT_SECONDS

    def log_message(self, format: str, *args: Any) -> None:
        # Access logs at debug: a scrape every 15 s must not flood the journal.
        log.debug("http request", extra={"client": self.client_address[0], "line": format % args})


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


class _ThreadingServerV6(_ThreadingServer):
    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        # One socket for IPv4 and IPv6, as Go's listeners (and so node_exporter's) do on ":port".
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class HttpServer:
    """Serves ``app`` on ``listen_address`` ("[host]:port"; an empty host means every
    interface) from a background thread."""

    def __init__(self, listen_address: str, app: WSGIApplication) -> None:
        host, port = split_listen_address(listen_address)
        server_class: type[_ThreadingServer] = _ThreadingServer
        if not host:
            if socket.has_ipv6:
                host, server_class = "::", _ThreadingServerV6
            else:
                host = "0.0.0.0"
        elif ":" in host:
            server_class = _ThreadingServerV6
        self._server = server_class((host, port), _Handler)
        self._server.set_app(app)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="pqd-http", kwargs={"poll_interval": 0.2}
        )
        self._thread.daemon = True
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
