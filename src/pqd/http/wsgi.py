"""PEP 3333 on the server side: the environ of a parsed request, and calling the app.

The app's whole response is collected before anything is sent (pqd's pages and /metrics are
small), so the server frames it itself and a failing app costs one 500, never a half response.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from wsgiref.types import WSGIApplication, WSGIEnvironment

from pqd.http.parse import RequestHead, is_token

__all__ = ["Caller", "run_app", "wsgi_environ"]

log = logging.getLogger("pqd.http")

_STATUS_RE: Final = re.compile(r"[1-5][0-9][0-9] [^\r\n]*")
_HEADER_VALUE_RE: Final = re.compile(r"[^\r\n\0]*")


class _WsgiErrors(io.TextIOBase):
    """``wsgi.errors``: whatever an app writes there becomes one log line per write."""

    def write(self, text: str) -> int:
        if text.strip():
            log.warning("wsgi error output", extra={"text": text.strip()})
        return len(text)


_WSGI_ERRORS: Final = _WsgiErrors()


@dataclass(frozen=True)
class Caller:
    """Where a request came from, as the environ tells the app."""

    server_name: str
    server_port: str
    peer: tuple[str, int]
    tls: bool
    user: str | None  # authenticated by basic auth


def wsgi_environ(head: RequestHead, body: bytes, caller: Caller) -> WSGIEnvironment:
    environ: WSGIEnvironment = {
        "REQUEST_METHOD": head.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": head.path_info,
        "QUERY_STRING": head.query,
        "SERVER_NAME": caller.server_name,
        "SERVER_PORT": caller.server_port,
        "SERVER_PROTOCOL": head.protocol,
        "REMOTE_ADDR": caller.peer[0],
        "REMOTE_PORT": str(caller.peer[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https" if caller.tls else "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": _WSGI_ERRORS,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if caller.tls:
        environ["HTTPS"] = "on"
    if caller.user is not None:
        environ["REMOTE_USER"] = caller.user
        environ["AUTH_TYPE"] = "Basic"
    for name, value in head.headers:
        # Credentials stay in the server layer. A name with "_" would be indistinguishable from
        # one with "-" once in the environ, a known header-spoofing trick: dropped.
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


def run_app(
    app: WSGIApplication, environ: WSGIEnvironment
) -> tuple[str, list[tuple[str, str]], bytes]:
    """Call the app and collect its whole response: status, headers and body."""
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
    _check_response_head(status, headers)
    return status, headers, b"".join(chunks)


def _check_response_head(status: str, headers: list[tuple[str, str]]) -> None:
    """Refuse what would corrupt the response's framing (a CR or LF would split it)."""
    if _STATUS_RE.fullmatch(status) is None:
        raise RuntimeError(f"the WSGI app returned an invalid status {status!r}")
    for name, value in headers:
        if not is_token(name.encode("latin-1", "replace")) or (
            _HEADER_VALUE_RE.fullmatch(value) is None
        ):
            raise RuntimeError(f"the WSGI app returned an invalid header {name!r}")
