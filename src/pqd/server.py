"""The HTTP(S) server around the WSGI app (the app itself is in web.py).

Built so that no client, however slow or hostile, can starve the others (design §5: the stock
server gives each connection a thread, never times out a read, and runs the TLS handshake in the
accepting thread, so one idle TCP connection blocks every TLS scrape):

- One I/O thread owns every socket. It accepts, runs TLS handshakes through memory BIOs (never a
  blocking call), reads request heads and bodies, and writes responses, all non-blocking through
  a selector. Each request must arrive complete (handshake, head and body) within
  ``request_timeout`` of its first byte (of the connection, for the first one); a response must be
  taken within ``write_timeout``; an idle keep-alive connection is closed after ``idle_timeout``.
- Only complete requests reach a fixed pool of worker threads, which run the WSGI app and return
  the whole response as bytes for the I/O thread to send. The thread count never depends on the
  number of connections.
- Open connections are capped; at the cap the least recently active idle connection is closed to
  make room (a scraper reconnects, an idle attacker loses its slot).
- Basic auth is checked here, before the app: a cached verdict in the I/O thread, and the slow
  bcrypt check (70-300 ms) on its own small pool, so password guessing cannot occupy the workers
  that serve authenticated scrapes.
- The web config file and the certificate files it names are watched (stat once a second) and
  re-read when they change; a broken new version is logged once and the last good one kept.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import email.utils
import enum
import errno
import functools
import hashlib
import hmac
import io
import logging
import math
import os
import queue
import re
import resource
import secrets
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final
from urllib.parse import unquote_to_bytes
from wsgiref.types import WSGIApplication, WSGIEnvironment

from pqd.config import ConfigError, split_listen_address
from pqd.webconfig import (
    BCRYPT_MAX_PASSWORD_BYTES,
    RateLimit,
    WebConfig,
    peer_matches_sans,
    referenced_files,
    ssl_context,
    web_config_from_file,
)

__all__ = ["HttpServer", "ServerLimits"]

log = logging.getLogger("pqd.http")

#: A request (TLS handshake, head and body) must arrive within this many seconds of its start.
REQUEST_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class ServerLimits:
    """Every bound the server enforces; the defaults suit a Prometheus exporter."""

    workers: int = 8  # threads running the WSGI app
    auth_workers: int = 2  # threads running uncached bcrypt checks
    max_connections: int = 1024  # further lowered to fit RLIMIT_NOFILE
    request_timeout: float = REQUEST_TIMEOUT_SECONDS  # TLS handshake + head + body of one request
    idle_timeout: float = 120.0  # keep-alive connection waiting for its next request
    write_timeout: float = 30.0  # for the client to take a whole response
    max_head_bytes: int = 16 * 1024  # request line + headers; beyond: 431
    max_headers: int = 100  # beyond: 431
    max_body_bytes: int = 1 << 20  # beyond: 413 (pqd's only POST, /-/reload, has no body)
    config_check_interval: float = (
        1.0  # web config files are stat()ed at most this often, on traffic
    )
    auth_cache_size: int = 1024  # remembered bcrypt verdicts (each of ok and failed)
    # Uncached logins waiting for bcrypt; beyond this, new ones get 503 at once. Without a bound,
    # a flood of guesses would park every connection slot behind the slow checks, while clients
    # whose verdict is cached are never affected by it.
    max_pending_auth: int = 64


_RECV_BYTES: Final = 64 * 1024
_ACCEPT_BATCH: Final = 64
_ACCEPT_PAUSE_SECONDS: Final = 0.1  # after EMFILE with nothing to evict
_CLOSE_GRACE_SECONDS: Final = 1.0  # to send a last error response before closing
# fds left for everything else in the process (cycles start pools, pipes and a Manager).
_FD_HEADROOM_MIN: Final = 128
_REALM: Final = 'Basic realm="pqd"'
#: Answered without basic auth (TLS, a property of the connection, still applies): liveness and
#: readiness probes (the kubelet's, Docker's HEALTHCHECK) carry no credentials, and these
#: pages say only whether pqd is healthy and ready.
AUTH_EXEMPT_PATHS: Final = frozenset({"/-/healthy", "/-/ready"})
# What Go's net/http answers on a TLS port to a plain HTTP request, which is what clients expect.
_PLAIN_TO_TLS: Final = (
    b"HTTP/1.0 400 Bad Request\r\nConnection: close\r\n\r\n"
    b"Client sent an HTTP request to an HTTPS server.\n"
)
_HOP_BY_HOP: Final = frozenset(
    (
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-connection",
    )
)


# --------------------------------------------------------------------------------------------------
# Request parsing (pure)

_TCHAR: Final = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
_TOKEN_RE: Final = re.compile(_TCHAR + rb"+")
_REQUEST_LINE_RE: Final = re.compile(
    rb"(" + _TCHAR + rb"+) ([\x21-\x7e\x80-\xff]+) HTTP/([0-9])\.([0-9])"
)
_HEAD_END_RE: Final = re.compile(rb"\r?\n\r?\n")
_ABSOLUTE_RE: Final = re.compile(rb"https?://[^/?#]*", re.IGNORECASE)


@dataclass(frozen=True)
class _Head:
    method: str
    path_info: str  # percent-decoded, as a latin-1 str (PEP 3333)
    query: str
    protocol: str  # "HTTP/1.0" or "HTTP/1.1"
    headers: tuple[tuple[str, str], ...]  # lower-case names, latin-1 values
    content_length: int
    keep_alive: bool
    expect_continue: bool
    length: int  # bytes of the head in the buffer, leading blank lines included

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True)
class _HttpError:
    status: HTTPStatus
    message: str


def _parse_head(buf: bytes | bytearray, limits: ServerLimits) -> _Head | _HttpError | None:
    """The request head at the start of ``buf``; None while it is incomplete."""
    start = 0
    # RFC 9112 §2.2: ignore empty lines before a request line (some clients send a stray CRLF).
    while start < len(buf) and buf[start] in b"\r\n":
        start += 1
    end = _HEAD_END_RE.search(buf, start, start + limits.max_head_bytes + 4)
    if end is None:
        if len(buf) - start > limits.max_head_bytes:
            return _HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large")
        return None
    lines = [line.removesuffix(b"\r") for line in bytes(buf[start : end.start()]).split(b"\n")]
    match = _REQUEST_LINE_RE.fullmatch(lines[0])
    if match is None:
        return _HttpError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method_b, target, major, minor = match.groups()
    if major != b"1":
        if major == b"0":
            return _HttpError(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not supported")
        return _HttpError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.x is supported")
    protocol = "HTTP/1.0" if minor == b"0" else "HTTP/1.1"

    if len(lines) - 1 > limits.max_headers:
        return _HttpError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        # A line starting with whitespace is an obsolete folded continuation; RFC 9112 lets a
        # server reject it, and accepting it is a request-smuggling risk behind proxies.
        if not sep or _TOKEN_RE.fullmatch(name) is None:
            return _HttpError(HTTPStatus.BAD_REQUEST, "malformed header field")
        value = value.strip(b" \t")
        if b"\r" in value or b"\0" in value:
            return _HttpError(HTTPStatus.BAD_REQUEST, "control character in header field")
        headers.append((name.decode("ascii").lower(), value.decode("latin-1")))

    if any(name == "transfer-encoding" for name, _ in headers):
        # pqd's one request with a body (POST /-/reload) needs none: a client error, not a 5xx.
        return _HttpError(HTTPStatus.LENGTH_REQUIRED, "send Content-Length, not Transfer-Encoding")
    hosts = [value for name, value in headers if name == "host"]
    if protocol == "HTTP/1.1" and len(hosts) != 1:  # RFC 9112 §3.2: exactly one Host
        return _HttpError(HTTPStatus.BAD_REQUEST, "an HTTP/1.1 request needs one Host header")
    lengths = {value for name, value in headers if name == "content-length"}
    content_length = 0
    if lengths:
        if len(lengths) > 1 or not next(iter(lengths)).isdigit():
            return _HttpError(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
        content_length = int(next(iter(lengths)))
        if content_length > limits.max_body_bytes:
            return _HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")

    absolute = _ABSOLUTE_RE.match(target)
    if absolute is not None:  # absolute-form, as sent to proxies; RFC 9112 says accept it
        target = target[absolute.end() :] or b"/"
    if not target.startswith(b"/"):
        return _HttpError(HTTPStatus.BAD_REQUEST, "request target must be a path")
    path, _, query = target.partition(b"#")[0].partition(b"?")

    tokens = {
        token.strip().lower()
        for name, value in headers
        if name == "connection"
        for token in value.split(",")
    }
    keep_alive = "keep-alive" in tokens if protocol == "HTTP/1.0" else "close" not in tokens
    expect = next((value for name, value in headers if name == "expect"), "")
    return _Head(
        method=method_b.decode("ascii"),
        path_info=unquote_to_bytes(path).decode("latin-1"),
        query=query.decode("latin-1"),
        protocol=protocol,
        headers=tuple(headers),
        content_length=content_length,
        keep_alive=keep_alive,
        expect_continue=expect.lower() == "100-continue",
        length=end.end(),
    )


# --------------------------------------------------------------------------------------------------
# Responses


def _response_bytes(
    status: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    keep_alive: bool,
    extra_headers: Iterable[tuple[str, str]] = (),
    content_length: int | None = None,
) -> bytes:
    lines = [f"HTTP/1.1 {status}"]
    extra = list(extra_headers)
    overridden = {name.lower() for name, _ in extra}
    for name, value in headers:
        lower = name.lower()
        if lower in _HOP_BY_HOP or lower in overridden or lower == "content-length":
            continue
        lines.append(f"{name}: {value}")
    lines.extend(f"{name}: {value}" for name, value in extra)
    code = status[:3]
    if not (code.startswith("1") or code in ("204", "304")):
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
    lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def _simple_response(
    status: HTTPStatus,
    message: str,
    *,
    keep_alive: bool,
    extra_headers: Iterable[tuple[str, str]] = (),
    head_only: bool = False,
) -> bytes:
    body = f"{status.phrase}: {message}\n".encode() if message else f"{status.phrase}\n".encode()
    return _response_bytes(
        f"{status.value} {status.phrase}",
        [("Content-Type", "text/plain; charset=utf-8")],
        b"" if head_only else body,
        keep_alive=keep_alive,
        extra_headers=extra_headers,
        content_length=len(body),
    )


_STATUS_RE: Final = re.compile(r"[1-5][0-9][0-9] [^\r\n]*")
_HEADER_VALUE_RE: Final = re.compile(r"[^\r\n\0]*")


class _WsgiErrors(io.TextIOBase):
    """``wsgi.errors``: whatever an app writes there becomes one log line per write."""

    def write(self, text: str) -> int:
        if text.strip():
            log.warning("wsgi error output", extra={"text": text.strip()})
        return len(text)


_WSGI_ERRORS: Final = _WsgiErrors()


def _run_app(
    app: WSGIApplication, environ: WSGIEnvironment
) -> tuple[str, list[tuple[str, str]], bytes]:
    """Call the app and collect the whole response (pqd's pages and /metrics are small)."""
    started: list[tuple[str, list[tuple[str, str]]]] = []
    written: list[bytes] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: object = None
    ) -> Callable[[bytes], object]:
        # Nothing is sent before the app returns, so a second call (an app reporting an error
        # after starting) may simply replace the first, as PEP 3333 allows before sending.
        if started and exc_info is None:
            raise RuntimeError("start_response called twice without exc_info")
        started[:] = [(status, list(headers))]
        return written.append

    result = app(environ, start_response)
    try:
        chunks = [*written, *result]
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if not started:
        raise RuntimeError("the WSGI app returned without calling start_response")
    status, headers = started[0]
    if _STATUS_RE.fullmatch(status) is None:
        raise RuntimeError(f"the WSGI app returned an invalid status {status!r}")
    for name, value in headers:
        if _TOKEN_RE.fullmatch(name.encode("latin-1", "replace")) is None or (
            _HEADER_VALUE_RE.fullmatch(value) is None
        ):
            raise RuntimeError(f"the WSGI app returned an invalid header {name!r}")
    return status, headers, b"".join(chunks)


# --------------------------------------------------------------------------------------------------
# Basic auth


@dataclass(frozen=True)
class _AuthCheck:
    """A bcrypt check still to be made (on an auth worker)."""

    user: str
    password: bytes = field(repr=False)
    hashed: bytes = field(repr=False)
    known_user: bool
    key: bytes


@functools.lru_cache(maxsize=32)
def _dummy_hash(cost: int) -> bytes:
    # An unknown user is checked against a hash of the same cost as a real one, so the time a
    # failed login takes does not tell whether the user exists.
    import bcrypt  # only a pqd with basic auth users gets here

    return bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))


def _basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
        user_b, sep, password = decoded.partition(b":")
        user = user_b.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    return (user, password) if sep else None


class _Authenticator:
    """Remembers bcrypt verdicts so that a scrape every second pays the 70-300 ms only once.

    Keyed by an HMAC-SHA256 (with a per-process random key) of user, password and hash: a rotated
    hash or password misses the cache by construction, and the memory holds no password.
    Failures are remembered too, so repeating a wrong password costs nothing either.
    """

    def __init__(self, size: int) -> None:
        self._secret = secrets.token_bytes(32)
        self._size = size
        self._ok: collections.OrderedDict[bytes, str] = collections.OrderedDict()
        self._failed: collections.OrderedDict[bytes, None] = collections.OrderedDict()
        self._lock = threading.Lock()

    def preflight(self, header: str | None, config: WebConfig) -> str | _AuthCheck | None:
        """The user if cached as good, None to refuse now, or a check to run on a worker."""
        credentials = _basic_credentials(header)
        if credentials is None:
            return None
        user, password = credentials
        hashed_text = config.password_hash(user)
        known = hashed_text is not None
        if hashed_text is None:
            first = config.basic_auth_users[0][1] if config.basic_auth_users else "$2b$10$"
            hashed = b"dummy:" + first[4:6].encode()  # replaced by a real dummy on the worker
        else:
            hashed = hashed_text.encode("ascii")
        key = hmac.new(self._secret, digestmod=hashlib.sha256)
        for part in (user.encode(), hashed, password):
            key.update(len(part).to_bytes(8, "big"))
            key.update(part)
        digest = key.digest()
        with self._lock:
            if digest in self._ok:
                self._ok.move_to_end(digest)
                return self._ok[digest]
            if digest in self._failed:
                self._failed.move_to_end(digest)
                return None
        return _AuthCheck(user, password, hashed, known, digest)

    def verify(self, check: _AuthCheck) -> bool:
        """The slow part: run on an auth worker, never on the I/O thread."""
        hashed = check.hashed
        if hashed.startswith(b"dummy:"):
            hashed = _dummy_hash(int(hashed[6:]) if hashed[6:].isdigit() else 10)
        import bcrypt  # only a pqd with basic auth users gets here

        try:
            # Go's bcrypt refuses passwords beyond 72 bytes rather than truncating them; so does
            # pqd, whatever the installed bcrypt package would do.
            ok = len(check.password) <= BCRYPT_MAX_PASSWORD_BYTES and bcrypt.checkpw(
                check.password, hashed
            )
        except ValueError:  # a hash bcrypt cannot parse
            ok = False
        ok = ok and check.known_user
        with self._lock:
            if ok:
                self._ok[check.key] = check.user
                cache: (
                    collections.OrderedDict[bytes, str] | collections.OrderedDict[bytes, None]
                ) = self._ok
            else:
                self._failed[check.key] = None
                cache = self._failed
            while len(cache) > self._size:
                cache.popitem(last=False)
        return ok


class _TokenBucket:
    """The toolkit's rate_limit (golang.org/x/time/rate): ``burst`` tokens, one per interval."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.limit = limit
        self._tokens = float(limit.burst)
        self._at = now

    def allow(self, now: float) -> bool:
        self._tokens = min(
            float(self.limit.burst), self._tokens + (now - self._at) / self.limit.interval
        )
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


# --------------------------------------------------------------------------------------------------
# The web config as served, and watching its files


_Signature = tuple[tuple[str, int, int, int, int] | tuple[str], ...]


def _signature(paths: Iterable[str]) -> _Signature:
    out: list[tuple[str, int, int, int, int] | tuple[str]] = []
    for path in paths:
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            out.append((path,))
        else:
            out.append((path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


@dataclass(frozen=True)
class _Active:
    """A web config and the TLS context built from it."""

    config: WebConfig
    context: ssl.SSLContext | None


_PLAIN: Final = _Active(WebConfig(), None)


def _attempt_load(path: str) -> tuple[_Active | ConfigError, tuple[str, ...], _Signature]:
    """Load ``path``; also return which files the attempt depended on and their signature, so
    that a failed attempt is retried only once one of them changes."""
    # Stat before reading: a change racing with the read then shows up as a new signature.
    signature = _signature((path,))
    try:
        config = web_config_from_file(path)
    except ConfigError as err:
        return err, (path,), signature
    files = referenced_files(config)
    signature += _signature(files)
    try:
        context = ssl_context(config.tls) if config.tls is not None else None
    except ConfigError as err:
        return err, (path, *files), signature
    return _Active(config, context), (path, *files), signature


# --------------------------------------------------------------------------------------------------
# Connections


class _State(enum.Enum):
    HANDSHAKE = "handshake"  # TLS handshake in progress
    READ = "read"  # waiting for (the rest of) a request
    BUSY = "busy"  # a worker has the request
    WRITE = "write"  # sending a response
    CLOSING = "closing"  # sending a last error response, then closing
    CLOSED = "closed"


@dataclass(eq=False)
class _Conn:
    """One client connection; touched only by the I/O thread."""

    sock: socket.socket
    fd: int
    peer: tuple[str, int]
    tls: ssl.SSLObject | None
    tls_in: ssl.MemoryBIO | None
    tls_out: ssl.MemoryBIO | None
    allowed_sans: tuple[str, ...]
    state: _State
    deadline: float
    last_active: float
    inbuf: bytearray = field(default_factory=bytearray)
    out: bytearray = field(default_factory=bytearray)
    head: _Head | None = None  # parsed, waiting for its body
    in_request: bool = False  # bytes of a request (or handshake) have arrived
    keep_alive: bool = False  # after the response being written
    mask: int = 0  # selector events registered

    @property
    def closed(self) -> bool:
        return self.state is _State.CLOSED


@dataclass(frozen=True)
class _Job:
    conn: _Conn
    head: _Head
    body: bytes
    active: _Active
    user: str | None
    check: _AuthCheck | None
    keep_alive: bool
    tls: bool
    peer: tuple[str, int]


def _fd_budget(wanted: int) -> int:
    """At most ``wanted`` connections, and never so many that the rest of pqd runs out of fds."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    headroom = max(_FD_HEADROOM_MIN, soft // 4)
    return max(8, min(wanted, soft - headroom))


def _listen(host: str, port: int) -> socket.socket:
    dual_stack = not host
    if not host:
        host = "::" if socket.has_ipv6 else "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as err:
        if dual_stack and family == socket.AF_INET6 and err.errno == errno.EAFNOSUPPORT:
            return _listen("0.0.0.0", port)  # IPv6 switched off in the kernel
        raise
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if dual_stack and family == socket.AF_INET6:
            # One socket for IPv4 and IPv6, as Go's listeners (and so node_exporter's) do.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


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
        limits: ServerLimits = ServerLimits(),
    ) -> None:
        host, port = split_listen_address(listen_address)
        self._app = app
        self._limits = limits
        self._max_connections = _fd_budget(limits.max_connections)
        self._config_path = web_config_file
        self._active = _PLAIN
        self._watched: tuple[str, ...] = ()
        self._watched_signature: _Signature = ()
        if web_config_file is not None:
            loaded, self._watched, self._watched_signature = _attempt_load(web_config_file)
            if isinstance(loaded, ConfigError):
                raise loaded
            self._active = loaded
        self._tls = self._active.context is not None
        self._listener = _listen(host, port)
        self._server_name = host or "localhost"
        self._server_port = str(self.port)
        self._auth = _Authenticator(limits.auth_cache_size)
        self._bucket: _TokenBucket | None = None
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._conns: dict[int, _Conn] = {}
        self._finished: collections.deque[tuple[_Job, bytes, bool]] = collections.deque()
        self._auth_pending = 0  # jobs on the auth queue or its workers; I/O thread only
        self._ready: collections.deque[_Conn] = collections.deque()
        self._work: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._auth_work: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._next_config_check = 0.0
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
                    target=self._worker, args=(self._work,), name=f"pqd-http-{i}", daemon=True
                )
            )
        for i in range(self._limits.auth_workers):
            self._threads.append(
                threading.Thread(
                    target=self._worker,
                    args=(self._auth_work,),
                    name=f"pqd-http-auth-{i}",
                    daemon=True,
                )
            )
        for thread in self._threads:
            thread.start()
        log.info(
            "http server listening",
            extra={"port": self.port, "tls": self._tls, "max_connections": self._max_connections},
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

    # -- I/O thread -----

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
                    elif isinstance(conn, _Conn) and conn.state is not _State.CLOSED:
                        self._on_event(conn, mask, now)
                self._take_finished(now)
                self._serve_ready(now)
                self._sweep(now)
                if events:
                    # Web config files are looked at when there is traffic to serve with them
                    # (at most once per config_check_interval), never on a timer.
                    self._check_config(now)
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
            if conn.state is not _State.BUSY and conn.deadline != math.inf
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
            self._close(conn)
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
            self._adopt(sock, peer, now)

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

    def _adopt(self, sock: socket.socket, peer: tuple[str, int], now: float) -> None:
        if len(self._conns) >= self._max_connections and not self._evict(now):
            sock.close()
            return
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            sock.close()
            return
        active = self._active
        tls = tls_in = tls_out = None
        sans: tuple[str, ...] = ()
        if active.context is not None:
            tls_in, tls_out = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = active.context.wrap_bio(tls_in, tls_out, server_side=True)
            if active.config.tls is not None:
                sans = active.config.tls.client_allowed_sans
        conn = _Conn(
            sock=sock,
            fd=sock.fileno(),
            peer=(str(peer[0]), int(peer[1])),
            tls=tls,
            tls_in=tls_in,
            tls_out=tls_out,
            allowed_sans=sans,
            state=_State.HANDSHAKE if tls is not None else _State.READ,
            # The first request's clock starts at accept: handshake and head share it.
            deadline=now + self._limits.request_timeout,
            last_active=now,
        )
        self._conns[conn.fd] = conn
        self._update_interest(conn)

    def _evict(self, now: float) -> bool:
        """Close the connection that matters least: idle before half-sent, least recently
        active first. False if every connection is being served."""
        victim: _Conn | None = None
        for conn in self._conns.values():
            if conn.state not in (_State.READ, _State.HANDSHAKE):
                continue
            if victim is None or (conn.in_request, conn.last_active) < (
                victim.in_request,
                victim.last_active,
            ):
                victim = conn
        if victim is None:
            return False
        log.debug("closing connection to make room", extra={"client": victim.peer[0]})
        self._close(victim)
        return True

    def _sweep(self, now: float) -> None:
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self._selector.register(self._listener, selectors.EVENT_READ, None)
        for conn in list(self._conns.values()):
            if conn.state is _State.BUSY or now < conn.deadline:
                continue
            if conn.state is _State.READ and conn.in_request:
                # Tell a slow client why (best effort), then close: RFC 9110's 408.
                conn.deadline = now + _CLOSE_GRACE_SECONDS
                conn.state = _State.CLOSING
                self._send(conn, self._error(HTTPStatus.REQUEST_TIMEOUT, "request too slow"))
                self._after(conn, now)
            else:
                log.debug("connection timed out", extra={"client": conn.peer[0]})
                self._close(conn)

    def _check_config(self, now: float) -> None:
        if self._config_path is None or now < self._next_config_check:
            return
        self._next_config_check = now + self._limits.config_check_interval
        if _signature(self._watched) == self._watched_signature:
            return
        loaded, self._watched, self._watched_signature = _attempt_load(self._config_path)
        if not isinstance(loaded, ConfigError) and (loaded.context is not None) != self._tls:
            loaded = ConfigError(
                self._config_path,
                self._config_path,
                "TLS cannot be switched on or off while pqd runs; restart pqd",
            )
        if isinstance(loaded, ConfigError):
            # Logged once: the attempt is retried only when one of its files changes again.
            log.error(
                "web config not reloaded, keeping the previous one",
                extra={"path": self._config_path, "err": str(loaded)},
            )
            return
        self._active = loaded
        log.info("web config reloaded", extra={"path": self._config_path})

    def _update_interest(self, conn: _Conn) -> None:
        if conn.state is _State.CLOSED:
            return
        mask = 0
        if conn.state in (_State.HANDSHAKE, _State.READ):
            mask |= selectors.EVENT_READ
        if conn.out:
            mask |= selectors.EVENT_WRITE
        if mask == conn.mask:
            return
        if conn.mask == 0:
            self._selector.register(conn.sock, mask, conn)
        elif mask == 0:
            self._selector.unregister(conn.sock)
        else:
            self._selector.modify(conn.sock, mask, conn)
        conn.mask = mask

    def _close(self, conn: _Conn) -> None:
        if conn.state is _State.CLOSED:
            return
        if conn.mask:
            self._selector.unregister(conn.sock)
            conn.mask = 0
        conn.state = _State.CLOSED
        conn.sock.close()
        self._conns.pop(conn.fd, None)
        conn.inbuf.clear()
        conn.out.clear()

    def _on_event(self, conn: _Conn, mask: int, now: float) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(conn, now)
        if mask & selectors.EVENT_READ and conn.state in (_State.HANDSHAKE, _State.READ):
            self._read(conn, now)
        self._after(conn, now)

    def _after(self, conn: _Conn, now: float) -> None:
        """Settle a connection after any change: finish writes, close, re-arm the selector."""
        if conn.state is _State.CLOSED:
            return
        if not conn.out:
            if conn.state is _State.CLOSING:
                self._close(conn)
                return
            if conn.state is _State.WRITE:
                if conn.keep_alive and not self._stopping.is_set():
                    conn.state = _State.READ
                    conn.in_request = bool(conn.inbuf)
                    conn.deadline = now + (
                        self._limits.request_timeout
                        if conn.in_request
                        else self._limits.idle_timeout
                    )
                    if conn.inbuf:  # a pipelined request: handle it from the main loop
                        self._ready.append(conn)
                else:
                    self._close(conn)
                    return
        self._update_interest(conn)

    def _read(self, conn: _Conn, now: float) -> None:
        try:
            data = conn.sock.recv(_RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.last_active = now
        if not conn.in_request:
            conn.in_request = True
            conn.deadline = min(conn.deadline, now + self._limits.request_timeout)
        if conn.tls is None:
            conn.inbuf += data
        else:
            assert conn.tls_in is not None
            conn.tls_in.write(data)
            if conn.state is _State.HANDSHAKE and not self._handshake(conn, now):
                return
            if not self._tls_read(conn):
                return
        self._process(conn, now)

    def _handshake(self, conn: _Conn, now: float) -> bool:
        assert conn.tls is not None
        try:
            conn.tls.do_handshake()
        except ssl.SSLWantReadError:
            self._pump(conn)
            self._flush(conn, now)
            return False
        except ssl.SSLError as err:
            log.debug(
                "TLS handshake failed", extra={"client": conn.peer[0], "err": str(err.reason)}
            )
            conn.state = _State.CLOSING
            conn.deadline = now + _CLOSE_GRACE_SECONDS
            if err.reason == "HTTP_REQUEST":
                conn.tls = None
                conn.out[:] = _PLAIN_TO_TLS
            else:
                self._pump(conn)  # the alert saying why
            self._flush(conn, now)
            return False
        self._pump(conn)
        if conn.allowed_sans and not peer_matches_sans(
            conn.tls.getpeercert() or {}, conn.allowed_sans
        ):
            log.debug("client certificate has no allowed SAN", extra={"client": conn.peer[0]})
            self._close(conn)
            return False
        conn.state = _State.READ
        self._flush(conn, now)
        return conn.state is _State.READ

    def _tls_read(self, conn: _Conn) -> bool:
        assert conn.tls is not None
        limit = self._limits.max_head_bytes + self._limits.max_body_bytes + _RECV_BYTES
        try:
            while len(conn.inbuf) < limit:
                chunk = conn.tls.read(_RECV_BYTES)
                if not chunk:
                    break
                conn.inbuf += chunk
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLZeroReturnError:  # close_notify: the client is done
            if not conn.inbuf:
                self._close(conn)
                return False
        except ssl.SSLError:
            self._close(conn)
            return False
        self._pump(conn)  # e.g. TLS 1.3 key updates
        return True

    def _pump(self, conn: _Conn) -> None:
        if conn.tls_out is not None and conn.tls_out.pending:
            conn.out += conn.tls_out.read()

    def _send(self, conn: _Conn, data: bytes) -> None:
        if conn.tls is not None:
            try:
                conn.tls.write(data)
            except ssl.SSLError:
                self._close(conn)
                return
            self._pump(conn)
        else:
            conn.out += data
        self._flush(conn, time.monotonic())

    def _flush(self, conn: _Conn, now: float) -> None:
        while conn.out and conn.state is not _State.CLOSED:
            try:
                sent = conn.sock.send(conn.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(conn)
                return
            del conn.out[:sent]

    def _process(self, conn: _Conn, now: float) -> None:
        """Parse what has arrived; dispatch a complete request or answer a bad one."""
        if conn.state is not _State.READ:
            return
        if conn.head is None:
            parsed = _parse_head(conn.inbuf, self._limits)
            if parsed is None:
                return
            if isinstance(parsed, _HttpError):
                log.debug("bad request", extra={"client": conn.peer[0], "problem": parsed.message})
                conn.state = _State.CLOSING
                conn.deadline = now + _CLOSE_GRACE_SECONDS
                self._send(conn, self._error(parsed.status, parsed.message))
                return
            conn.head = parsed
            del conn.inbuf[: parsed.length]
            if parsed.expect_continue and len(conn.inbuf) < parsed.content_length:
                self._send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
                if conn.closed:
                    return
        head = conn.head
        if len(conn.inbuf) < head.content_length:
            return
        body = bytes(conn.inbuf[: head.content_length])
        del conn.inbuf[: head.content_length]
        conn.head = None
        self._dispatch(conn, head, body, now)

    def _error(self, status: HTTPStatus, message: str) -> bytes:
        return _simple_response(
            status,
            message,
            keep_alive=False,
            extra_headers=self._active.config.http.headers,
        )

    def _dispatch(self, conn: _Conn, head: _Head, body: bytes, now: float) -> None:
        active = self._active
        keep_alive = head.keep_alive and not self._stopping.is_set()
        head_only = head.method == "HEAD"
        limit = active.config.rate_limit
        if limit is not None:
            if self._bucket is None or self._bucket.limit != limit:
                self._bucket = _TokenBucket(limit, now)
            if not self._bucket.allow(now):
                self._respond(
                    conn,
                    _simple_response(
                        HTTPStatus.TOO_MANY_REQUESTS,
                        "",
                        keep_alive=keep_alive,
                        extra_headers=active.config.http.headers,
                        head_only=head_only,
                    ),
                    keep_alive,
                    now,
                )
                return
        user: str | None = None
        check: _AuthCheck | None = None
        if active.config.basic_auth_users and head.path_info not in AUTH_EXEMPT_PATHS:
            verdict = self._auth.preflight(head.header("authorization"), active.config)
            if verdict is None:
                self._respond(conn, _unauthorized(active, keep_alive, head_only), keep_alive, now)
                return
            if isinstance(verdict, _AuthCheck):
                if self._auth_pending >= self._limits.max_pending_auth:
                    busy = _simple_response(
                        HTTPStatus.SERVICE_UNAVAILABLE,
                        "too many logins being checked, retry",
                        keep_alive=keep_alive,
                        extra_headers=(*active.config.http.headers, ("Retry-After", "1")),
                        head_only=head_only,
                    )
                    self._respond(conn, busy, keep_alive, now)
                    return
                check = verdict
            else:
                user = verdict
        job = _Job(
            conn=conn,
            head=head,
            body=body,
            active=active,
            user=user,
            check=check,
            keep_alive=keep_alive,
            tls=conn.tls is not None,
            peer=conn.peer,
        )
        conn.state = _State.BUSY
        conn.deadline = math.inf  # a running app cannot be interrupted; nothing to time out
        if check is not None:
            self._auth_pending += 1
            self._auth_work.put(job)
        else:
            self._work.put(job)

    def _respond(self, conn: _Conn, data: bytes, keep_alive: bool, now: float) -> None:
        conn.state = _State.WRITE
        conn.keep_alive = keep_alive
        conn.deadline = now + self._limits.write_timeout
        self._send(conn, data)

    def _take_finished(self, now: float) -> None:
        while self._finished:
            job, data, keep_alive = self._finished.popleft()
            if job.check is not None:
                self._auth_pending -= 1
            conn = job.conn
            if conn.state is not _State.BUSY:
                continue  # closed meanwhile (server stopping)
            self._respond(conn, data, keep_alive and not self._stopping.is_set(), now)
            self._after(conn, now)

    def _serve_ready(self, now: float) -> None:
        # Pipelined requests, handled here rather than recursively so that a client sending
        # thousands of them in one packet cannot exhaust the stack.
        for _ in range(len(self._ready)):
            conn = self._ready.popleft()
            if conn.state is _State.READ:
                self._process(conn, now)
                self._after(conn, now)

    # -- worker threads -----

    def _worker(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            try:
                data = self._serve(job)
                keep_alive = job.keep_alive
            except Exception:
                log.exception(
                    "error serving request",
                    extra={"method": job.head.method, "path": job.head.path_info},
                )
                data = _simple_response(
                    HTTPStatus.INTERNAL_SERVER_ERROR,
                    "",
                    keep_alive=False,
                    extra_headers=job.active.config.http.headers,
                )
                keep_alive = False
            self._finished.append((job, data, keep_alive))
            self._wake()

    def _serve(self, job: _Job) -> bytes:
        head_only = job.head.method == "HEAD"
        user = job.user
        if job.check is not None:
            if not self._auth.verify(job.check):
                return _unauthorized(job.active, job.keep_alive, head_only)
            user = job.check.user
        status, headers, body = _run_app(self._app, self._environ(job, user))
        content_length: int | None = None
        if head_only:
            # HEAD gets GET's headers, Content-Length included, and no body.
            given = next((v for k, v in headers if k.lower() == "content-length"), None)
            content_length = int(given) if given is not None and given.isdigit() else len(body)
            body = b""
        return _response_bytes(
            status,
            headers,
            body,
            keep_alive=job.keep_alive,
            extra_headers=job.active.config.http.headers,
            content_length=content_length,
        )

    def _environ(self, job: _Job, user: str | None) -> WSGIEnvironment:
        head = job.head
        environ: WSGIEnvironment = {
            "REQUEST_METHOD": head.method,
            "SCRIPT_NAME": "",
            "PATH_INFO": head.path_info,
            "QUERY_STRING": head.query,
            "SERVER_NAME": self._server_name,
            "SERVER_PORT": self._server_port,
            "SERVER_PROTOCOL": head.protocol,
            "REMOTE_ADDR": job.peer[0],
            "REMOTE_PORT": str(job.peer[1]),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if job.tls else "http",
            "wsgi.input": io.BytesIO(job.body),
            "wsgi.errors": _WSGI_ERRORS,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        if job.tls:
            environ["HTTPS"] = "on"
        if user is not None:
            environ["REMOTE_USER"] = user
            environ["AUTH_TYPE"] = "Basic"
        for name, value in head.headers:
            # Credentials stay in the server layer. A name with "_" would be indistinguishable
            # from one with "-" once in the environ, a known header-spoofing trick: dropped.
            if name == "authorization" or "_" in name:
                continue
            if name in ("content-type", "content-length"):
                key = name.upper().replace("-", "_")
            else:
                key = "HTTP_" + name.upper().replace("-", "_")
            if key in environ:
                value = f"{environ[key]}{'; ' if key == 'HTTP_COOKIE' else ', '}{value}"
            environ[key] = value
        return environ


def _unauthorized(active: _Active, keep_alive: bool, head_only: bool) -> bytes:
    return _simple_response(
        HTTPStatus.UNAUTHORIZED,
        "",
        keep_alive=keep_alive,
        extra_headers=(*active.config.http.headers, ("WWW-Authenticate", _REALM)),
        head_only=head_only,
    )
