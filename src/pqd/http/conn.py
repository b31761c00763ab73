"""One client connection: its socket, TLS state, buffers and deadline, driven by the I/O thread.

Nothing here blocks. TLS runs through memory BIOs, so a handshake is bytes in and bytes out like
the rest; whatever cannot be sent now waits in :attr:`Connection.out` for the socket to be
writable. The server (server.py) decides what a request gets; a connection only moves bytes,
frames requests and keeps its own clock.
"""

from __future__ import annotations

import enum
import logging
import math
import selectors
import socket
import ssl
from collections.abc import Callable
from typing import Final

from pqd.http.parse import RequestError, RequestHead, ServerLimits, parse_head
from pqd.http.webconfig import peer_matches_sans

__all__ = ["CLOSE_GRACE_SECONDS", "RECV_BYTES", "ConnState", "Connection"]

log = logging.getLogger("pqd.http")

RECV_BYTES: Final = 64 * 1024
#: How long a connection may take to send a last error response before it is closed.
CLOSE_GRACE_SECONDS: Final = 1.0
# What Go's net/http answers on a TLS port to a plain HTTP request, which is what clients expect.
_PLAIN_TO_TLS: Final = (
    b"HTTP/1.0 400 Bad Request\r\nConnection: close\r\n\r\n"
    b"Client sent an HTTP request to an HTTPS server.\n"
)


class ConnState(enum.Enum):
    HANDSHAKE = "handshake"  # TLS handshake in progress
    READ = "read"  # waiting for (the rest of) a request
    BUSY = "busy"  # a worker has the request
    WRITE = "write"  # sending a response
    CLOSING = "closing"  # sending a last error response, then closing
    CLOSED = "closed"


class Connection:
    """One client connection; touched only by the I/O thread.

    ``forget`` is called once, when the connection closes, so the server can drop it.
    """

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, int],
        *,
        tls_context: ssl.SSLContext | None,
        allowed_sans: tuple[str, ...],
        limits: ServerLimits,
        selector: selectors.BaseSelector,
        forget: Callable[[Connection], None],
        now: float,
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self._limits = limits
        self._selector = selector
        self._forget = forget
        self.tls: ssl.SSLObject | None = None
        self._tls_in: ssl.MemoryBIO | None = None  # bytes from the socket, for TLS to decrypt
        self._tls_out: ssl.MemoryBIO | None = None  # bytes TLS has encrypted, for the socket
        if tls_context is not None:
            self._tls_in, self._tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            self.tls = tls_context.wrap_bio(self._tls_in, self._tls_out, server_side=True)
        self._allowed_sans = allowed_sans
        self.state = ConnState.HANDSHAKE if self.tls is not None else ConnState.READ
        # The first request's clock starts at accept: handshake and head share it.
        self.deadline = now + limits.request_timeout
        self.last_active = now
        self.inbuf = bytearray()  # received (decrypted) bytes not yet part of a request
        self.out = bytearray()  # bytes for the socket (encrypted) not yet sent
        self._head: RequestHead | None = None  # parsed, waiting for its body
        self.in_request = False  # bytes of a request (or handshake) have arrived
        self.keep_alive = False  # after the response being written
        self._events = 0  # selector events registered

    @property
    def closed(self) -> bool:
        return self.state is ConnState.CLOSED

    # -- state -----

    def close(self) -> None:
        if self.state is ConnState.CLOSED:
            return
        if self._events:
            self._selector.unregister(self.sock)
            self._events = 0
        self.state = ConnState.CLOSED
        self.sock.close()
        self._forget(self)
        self.inbuf.clear()
        self.out.clear()

    def watch(self) -> None:
        """Register for the events the state needs: readable while reading, writable while
        there is output."""
        if self.state is ConnState.CLOSED:
            return
        events = 0
        if self.state in (ConnState.HANDSHAKE, ConnState.READ):
            events |= selectors.EVENT_READ
        if self.out:
            events |= selectors.EVENT_WRITE
        if events == self._events:
            return
        if self._events == 0:
            self._selector.register(self.sock, events, self)
        elif events == 0:
            self._selector.unregister(self.sock)
        else:
            self._selector.modify(self.sock, events, self)
        self._events = events

    def settle(self, now: float, *, may_keep_alive: bool) -> bool:
        """After any change: once a response is sent, close or wait for the next request; then
        re-arm the selector. True if the next request is already buffered (pipelined)."""
        if self.state is ConnState.CLOSED:
            return False
        pipelined = False
        if not self.out:
            if self.state is ConnState.CLOSING:
                self.close()
                return False
            if self.state is ConnState.WRITE:
                if not (self.keep_alive and may_keep_alive):
                    self.close()
                    return False
                self.state = ConnState.READ
                self.in_request = pipelined = bool(self.inbuf)
                self.deadline = now + (
                    self._limits.request_timeout if self.in_request else self._limits.idle_timeout
                )
        self.watch()
        return pipelined

    def start_work(self) -> None:
        """A worker has the request: a running app cannot be interrupted, nothing times out."""
        self.state = ConnState.BUSY
        self.deadline = math.inf

    def respond(self, data: bytes, *, keep_alive: bool, now: float) -> None:
        self.state = ConnState.WRITE
        self.keep_alive = keep_alive
        self.deadline = now + self._limits.write_timeout
        self.send(data)

    def respond_and_close(self, data: bytes, now: float) -> None:
        """A last response (an error) and then close, sent within a short grace period."""
        self.state = ConnState.CLOSING
        self.deadline = now + CLOSE_GRACE_SECONDS
        self.send(data)

    # -- requests -----

    def next_request(self) -> tuple[RequestHead, bytes] | RequestError | None:
        """The request now complete in the buffer (head and body), an error to answer with, or
        None while it is incomplete. Answers ``Expect: 100-continue`` on the way."""
        if self.state is not ConnState.READ:
            return None
        if self._head is None:
            parsed = parse_head(self.inbuf, self._limits)
            if parsed is None or isinstance(parsed, RequestError):
                return parsed
            self._head = parsed
            del self.inbuf[: parsed.length]
            if parsed.expect_continue and len(self.inbuf) < parsed.content_length:
                self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
                if self.closed:
                    return None
        head = self._head
        if len(self.inbuf) < head.content_length:
            return None
        body = bytes(self.inbuf[: head.content_length])
        del self.inbuf[: head.content_length]
        self._head = None
        return head, body

    # -- bytes in -----

    def receive(self, now: float) -> bool:
        """Read what the socket has; True if request bytes may have arrived."""
        try:
            data = self.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            self.close()
            return False
        if not data:
            self.close()
            return False
        self.last_active = now
        if not self.in_request:
            self.in_request = True
            self.deadline = min(self.deadline, now + self._limits.request_timeout)
        if self.tls is None:
            self.inbuf += data
            return True
        assert self._tls_in is not None
        self._tls_in.write(data)
        if self.state is ConnState.HANDSHAKE and not self._handshake(now):
            return False
        return self._read_tls()

    def _handshake(self, now: float) -> bool:
        """Advance the TLS handshake; True once it is done and the client is allowed."""
        assert self.tls is not None
        try:
            self.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._take_tls_output()
            self.flush()
            return False
        except ssl.SSLError as err:
            self._refuse_handshake(err, now)
            return False
        self._take_tls_output()
        if self._allowed_sans and not peer_matches_sans(
            self.tls.getpeercert() or {}, self._allowed_sans
        ):
            log.debug("client certificate has no allowed SAN", extra={"client": self.peer[0]})
            self.close()
            return False
        self.state = ConnState.READ
        self.flush()
        return self.state is ConnState.READ

    def _refuse_handshake(self, err: ssl.SSLError, now: float) -> None:
        log.debug("TLS handshake failed", extra={"client": self.peer[0], "err": str(err.reason)})
        self.state = ConnState.CLOSING
        self.deadline = now + CLOSE_GRACE_SECONDS
        if err.reason == "HTTP_REQUEST":
            self.tls = None
            self.out[:] = _PLAIN_TO_TLS
        else:
            self._take_tls_output()  # the alert saying why
        self.flush()

    def _read_tls(self) -> bool:
        """Decrypt what has arrived into :attr:`inbuf`; False if the connection closed."""
        assert self.tls is not None
        # More than a whole request never needs to be held: the rest waits in the BIO.
        limit = self._limits.max_head_bytes + self._limits.max_body_bytes + RECV_BYTES
        try:
            while len(self.inbuf) < limit:
                chunk = self.tls.read(RECV_BYTES)
                if not chunk:
                    break
                self.inbuf += chunk
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:  # close_notify: the client is done
            if not self.inbuf:
                self.close()
                return False
        except ssl.SSLError:
            self.close()
            return False
        self._take_tls_output()  # e.g. TLS 1.3 key updates
        return True

    # -- bytes out -----

    def _take_tls_output(self) -> None:
        """Move what TLS wants sent (records, alerts) to the socket's output."""
        if self._tls_out is not None and self._tls_out.pending:
            self.out += self._tls_out.read()

    def send(self, data: bytes) -> None:
        """Send ``data`` (through TLS if on): as much as the socket takes now, the rest later."""
        if self.tls is not None:
            try:
                self.tls.write(data)
            except ssl.SSLError:
                self.close()
                return
            self._take_tls_output()
        else:
            self.out += data
        self.flush()

    def flush(self) -> None:
        while self.out and self.state is not ConnState.CLOSED:
            try:
                sent = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            del self.out[:sent]
