"""HTTP/1.1 on bytes: the server's limits, reading a request head and writing a response.

Pure functions over bytes, no sockets, so every rule can be tested with a byte string. The
server (server.py) decides when to call them; nothing here blocks or keeps state.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final
from urllib.parse import unquote_to_bytes

__all__ = [
    "REQUEST_TIMEOUT_SECONDS",
    "RequestError",
    "RequestHead",
    "ServerLimits",
    "is_token",
    "parse_head",
    "response_bytes",
    "simple_response",
]

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


# --------------------------------------------------------------------------------------------------
# Request heads

_TCHAR: Final = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
_TOKEN_RE: Final = re.compile(_TCHAR + rb"+")
_REQUEST_LINE_RE: Final = re.compile(
    rb"(" + _TCHAR + rb"+) ([\x21-\x7e\x80-\xff]+) HTTP/([0-9])\.([0-9])"
)
_HEAD_END_RE: Final = re.compile(rb"\r?\n\r?\n")
_ABSOLUTE_RE: Final = re.compile(rb"https?://[^/?#]*", re.IGNORECASE)

_Fields = list[tuple[str, str]]


@dataclass(frozen=True)
class RequestHead:
    """A parsed request line and header fields, with what they say about framing."""

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


class RequestError(Exception):
    """A request the server refuses: the status to answer with, and why (one line)."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def is_token(name: bytes) -> bool:
    """True if ``name`` is an RFC 9110 token, as a header field name must be."""
    return _TOKEN_RE.fullmatch(name) is not None


def parse_head(buf: bytes | bytearray, limits: ServerLimits) -> RequestHead | RequestError | None:
    """The request head at the start of ``buf``; None while it is incomplete."""
    start = 0
    # RFC 9112 §2.2: ignore empty lines before a request line (some clients send a stray CRLF).
    while start < len(buf) and buf[start] in b"\r\n":
        start += 1
    end = _HEAD_END_RE.search(buf, start, start + limits.max_head_bytes + 4)
    if end is None:
        if len(buf) - start > limits.max_head_bytes:
            return RequestError(
                HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"
            )
        return None
    lines = [line.removesuffix(b"\r") for line in bytes(buf[start : end.start()]).split(b"\n")]
    try:
        return _head_from_lines(lines, limits, end.end())
    except RequestError as err:
        return err


def _head_from_lines(lines: list[bytes], limits: ServerLimits, length: int) -> RequestHead:
    method, target, protocol = _request_line(lines[0])
    if len(lines) - 1 > limits.max_headers:
        raise RequestError(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "too many header fields")
    headers = [_header_field(line) for line in lines[1:]]
    content_length = _content_length(headers, protocol, limits.max_body_bytes)
    path, query = _path_and_query(target)
    return RequestHead(
        method=method,
        path_info=unquote_to_bytes(path).decode("latin-1"),
        query=query.decode("latin-1"),
        protocol=protocol,
        headers=tuple(headers),
        content_length=content_length,
        keep_alive=_keep_alive(headers, protocol),
        expect_continue=next(iter(_values(headers, "expect")), "").lower() == "100-continue",
        length=length,
    )


def _request_line(line: bytes) -> tuple[str, bytes, str]:
    """Method, request target and protocol ("HTTP/1.0" or "HTTP/1.1")."""
    match = _REQUEST_LINE_RE.fullmatch(line)
    if match is None:
        raise RequestError(HTTPStatus.BAD_REQUEST, "malformed request line")
    method, target, major, minor = match.groups()
    if major != b"1":
        if major == b"0":
            raise RequestError(HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not supported")
        raise RequestError(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.x is supported")
    return method.decode("ascii"), target, "HTTP/1.0" if minor == b"0" else "HTTP/1.1"


def _header_field(line: bytes) -> tuple[str, str]:
    """A header line as (lower-case name, latin-1 value)."""
    name, sep, value = line.partition(b":")
    # A line starting with whitespace is an obsolete folded continuation; RFC 9112 lets a server
    # reject it, and accepting it is a request-smuggling risk behind proxies.
    if not sep or not is_token(name):
        raise RequestError(HTTPStatus.BAD_REQUEST, "malformed header field")
    value = value.strip(b" \t")
    if b"\r" in value or b"\0" in value:
        raise RequestError(HTTPStatus.BAD_REQUEST, "control character in header field")
    return name.decode("ascii").lower(), value.decode("latin-1")


def _values(headers: _Fields, name: str) -> list[str]:
    return [value for key, value in headers if key == name]


def _content_length(headers: _Fields, protocol: str, max_body_bytes: int) -> int:
    """The body's length, once the head is known to frame it safely."""
    if _values(headers, "transfer-encoding"):
        # pqd's one request with a body (POST /-/reload) needs none: a client error, not a 5xx.
        raise RequestError(HTTPStatus.LENGTH_REQUIRED, "send Content-Length, not Transfer-Encoding")
    if protocol == "HTTP/1.1" and len(_values(headers, "host")) != 1:  # RFC 9112 §3.2
        raise RequestError(HTTPStatus.BAD_REQUEST, "an HTTP/1.1 request needs one Host header")
    lengths = set(_values(headers, "content-length"))
    if not lengths:
        return 0
    if len(lengths) > 1 or not next(iter(lengths)).isdigit():
        raise RequestError(HTTPStatus.BAD_REQUEST, "invalid Content-Length")
    content_length = int(next(iter(lengths)))
    if content_length > max_body_bytes:
        raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
    return content_length


def _path_and_query(target: bytes) -> tuple[bytes, bytes]:
    """The request target's path (still percent-encoded) and query; the fragment dropped."""
    absolute = _ABSOLUTE_RE.match(target)
    if absolute is not None:  # absolute-form, as sent to proxies; RFC 9112 says accept it
        target = target[absolute.end() :] or b"/"
    if not target.startswith(b"/"):
        raise RequestError(HTTPStatus.BAD_REQUEST, "request target must be a path")
    path, _, query = target.partition(b"#")[0].partition(b"?")
    return path, query


def _keep_alive(headers: _Fields, protocol: str) -> bool:
    """HTTP/1.0 closes unless asked to keep alive; HTTP/1.1 keeps alive unless asked to close."""
    tokens = {
        token.strip().lower()
        for value in _values(headers, "connection")
        for token in value.split(",")
    }
    return "keep-alive" in tokens if protocol == "HTTP/1.0" else "close" not in tokens


# --------------------------------------------------------------------------------------------------
# Responses

# Framing is the server's: whatever an app says about these is dropped.
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


def response_bytes(
    status: str,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    *,
    keep_alive: bool,
    extra_headers: Iterable[tuple[str, str]] = (),
    head_only: bool = False,
) -> bytes:
    """A whole HTTP/1.1 response; the one place that sets Content-Length and drops HEAD bodies.

    ``extra_headers`` (the web config's) replace the app's of the same name. For HEAD
    (``head_only``) the response says what GET's would: the app's own Content-Length if it gave
    one (an app may leave out the body of a HEAD response itself), else the body's length.
    """
    headers = list(headers)
    content_length = len(body)
    if head_only:
        given = next((v for k, v in headers if k.lower() == "content-length"), None)
        if given is not None and given.isdigit():
            content_length = int(given)
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
        lines.append(f"Content-Length: {content_length}")
    lines.append(f"Date: {email.utils.formatdate(usegmt=True)}")
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


def simple_response(
    status: HTTPStatus,
    message: str,
    *,
    keep_alive: bool,
    extra_headers: Iterable[tuple[str, str]] = (),
    head_only: bool = False,
) -> bytes:
    """The server's own answer (an error, a refusal): one line of plain text."""
    body = f"{status.phrase}: {message}\n".encode() if message else f"{status.phrase}\n".encode()
    return response_bytes(
        f"{status.value} {status.phrase}",
        [("Content-Type", "text/plain; charset=utf-8")],
        body,
        keep_alive=keep_alive,
        extra_headers=extra_headers,
        head_only=head_only,
    )
