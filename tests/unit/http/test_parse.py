"""HTTP/1.1 request heads and responses as byte strings: no sockets, no threads."""

from __future__ import annotations

from http import HTTPStatus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pqd.http.parse import (
    RequestError,
    RequestHead,
    ServerLimits,
    parse_head,
    response_bytes,
    simple_response,
)

LIMITS = ServerLimits()


def parsed(raw: bytes, limits: ServerLimits = LIMITS) -> RequestHead:
    head = parse_head(raw, limits)
    assert isinstance(head, RequestHead), head
    return head


def refused(raw: bytes, limits: ServerLimits = LIMITS) -> tuple[HTTPStatus, str]:
    error = parse_head(raw, limits)
    assert isinstance(error, RequestError), error
    return error.status, error.message


# --- request line ----------------------------------------------------------------------------


def test_a_simple_get() -> None:
    raw = b"GET /metrics?name[]=up HTTP/1.1\r\nHost: pqd:9000\r\nAccept: text/plain\r\n\r\n"
    head = parsed(raw + b"next request")
    assert head.method == "GET"
    assert head.path_info == "/metrics"
    assert head.query == "name[]=up"
    assert head.protocol == "HTTP/1.1"
    assert head.headers == (("host", "pqd:9000"), ("accept", "text/plain"))
    assert head.header("accept") == "text/plain"
    assert head.header("cookie") is None
    assert head.content_length == 0
    assert head.keep_alive
    assert not head.expect_continue
    assert head.length == len(raw)


def test_an_incomplete_head_waits_for_more() -> None:
    for partial in (b"", b"GET / HTTP/1.1", b"GET / HTTP/1.1\r\nHost: x\r\n", b"\r\n"):
        assert parse_head(partial, LIMITS) is None
    assert parse_head(bytearray(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), LIMITS) is not None


def test_blank_lines_before_the_request_line_are_skipped_and_counted() -> None:
    raw = b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert parsed(raw).length == len(raw)


def test_bare_lf_line_endings() -> None:
    head = parsed(b"GET /a HTTP/1.1\nHost: x\n\n")
    assert head.path_info == "/a"
    assert head.headers == (("host", "x"),)


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"GET /\r\n\r\n", HTTPStatus.BAD_REQUEST, "malformed request line"),
        (b"GET  / HTTP/1.1\r\n\r\n", HTTPStatus.BAD_REQUEST, "malformed request line"),
        (b"G(T / HTTP/1.1\r\n\r\n", HTTPStatus.BAD_REQUEST, "malformed request line"),
        (b"GET / HTTP/1.1 \r\n\r\n", HTTPStatus.BAD_REQUEST, "malformed request line"),
        (b"GET / HTTP/0.9\r\n\r\n", HTTPStatus.BAD_REQUEST, "HTTP/0.9 is not supported"),
        (b"GET / HTTP/2.0\r\n\r\n", HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, "only HTTP/1.x"),
        (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", HTTPStatus.BAD_REQUEST, "must be a path"),
        (b"GET http://x HTTP/1.1\r\nHost: x\r\n\r\n", None, None),
    ],
)
def test_request_line(raw: bytes, status: HTTPStatus | None, message: str | None) -> None:
    if status is None:
        assert parsed(raw).path_info == "/"
        return
    got_status, got_message = refused(raw)
    assert got_status == status
    assert message is not None and message in got_message


def test_request_target_forms() -> None:
    head = parsed(b"GET HTTP://pqd:9000/cycles/a%20b%C3%A9?x=%41#frag HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.path_info == "/cycles/a b\xc3\xa9"  # decoded bytes as latin-1 (PEP 3333)
    assert head.query == "x=%41"  # the query stays encoded
    assert parsed(b"GET /p#frag?q HTTP/1.1\r\nHost: x\r\n\r\n").query == ""


# --- header fields ---------------------------------------------------------------------------


def test_header_names_are_lower_cased_and_values_trimmed() -> None:
    head = parsed(b"GET / HTTP/1.1\r\nHOST: x\r\nX-Thing:  \t a b \t\r\nX-Empty:\r\n\r\n")
    assert head.headers == (("host", "x"), ("x-thing", "a b"), ("x-empty", ""))


def test_a_latin1_value_survives() -> None:
    assert parsed(b"GET / HTTP/1.1\r\nHost: x\r\nX-Name: caf\xe9\r\n\r\n").header("x-name") == (
        "caf\xe9"
    )


@pytest.mark.parametrize(
    ("field", "message"),
    [
        (b"No-Colon", "malformed header field"),
        (b" folded: continuation", "malformed header field"),  # obs-fold
        (b"\tfolded: continuation", "malformed header field"),
        (b"Bad Name: x", "malformed header field"),
        (b": no name", "malformed header field"),
        (b"X: a\rb", "control character"),
        (b"X: a\0b", "control character"),
    ],
)
def test_malformed_fields_are_refused(field: bytes, message: str) -> None:
    status, got = refused(b"GET / HTTP/1.1\r\nHost: x\r\n" + field + b"\r\n\r\n")
    assert status == HTTPStatus.BAD_REQUEST
    assert message in got


def test_obs_fold_after_a_field_is_refused_not_joined() -> None:
    status, _ = refused(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n")
    assert status == HTTPStatus.BAD_REQUEST


def test_host_rules() -> None:
    assert refused(b"GET / HTTP/1.1\r\n\r\n")[0] == HTTPStatus.BAD_REQUEST
    status, message = refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert (status, message) == (
        HTTPStatus.BAD_REQUEST,
        "an HTTP/1.1 request needs one Host header",
    )
    assert parsed(b"GET / HTTP/1.0\r\n\r\n").protocol == "HTTP/1.0"  # 1.0 needs none


# --- body framing ----------------------------------------------------------------------------


def test_content_length() -> None:
    head = parsed(b"POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
    assert head.content_length == 5
    # The same value twice is one length.
    same = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n"
    assert parsed(same).content_length == 2


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        (b"Content-Length: 1\r\nContent-Length: 2", HTTPStatus.BAD_REQUEST),
        (b"Content-Length: -1", HTTPStatus.BAD_REQUEST),
        (b"Content-Length: 1e3", HTTPStatus.BAD_REQUEST),
        (b"Content-Length: ", HTTPStatus.BAD_REQUEST),
        (b"Content-Length: 1048577", HTTPStatus.REQUEST_ENTITY_TOO_LARGE),
        (b"Transfer-Encoding: chunked", HTTPStatus.LENGTH_REQUIRED),
        # Both: a request-smuggling classic; refused whatever the length says.
        (b"Content-Length: 3\r\nTransfer-Encoding: chunked", HTTPStatus.LENGTH_REQUIRED),
        (b"Transfer-Encoding: identity\r\nContent-Length: 3", HTTPStatus.LENGTH_REQUIRED),
    ],
)
def test_framing_that_is_refused(fields: bytes, status: HTTPStatus) -> None:
    assert refused(b"POST / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n\r\n")[0] == status


def test_the_body_limit_is_the_configured_one() -> None:
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n"
    assert parsed(raw, ServerLimits(max_body_bytes=11)).content_length == 11
    assert refused(raw, ServerLimits(max_body_bytes=10))[0] == HTTPStatus.REQUEST_ENTITY_TOO_LARGE


def test_expect_100_continue() -> None:
    raw = b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n"
    assert parsed(raw).expect_continue
    assert not parsed(raw.replace(b"100-Continue", b"200-ok")).expect_continue


# --- size limits -----------------------------------------------------------------------------


def test_oversize_head() -> None:
    limits = ServerLimits(max_head_bytes=64)
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 64
    assert refused(raw, limits) == (
        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
        "request head too large",
    )
    # Still incomplete but within the limit: wait for more.
    assert parse_head(raw[:60], limits) is None
    # Complete, but the end comes after the limit: too large all the same.
    assert refused(raw + b"\r\n\r\n", limits)[0] == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


def test_too_many_header_fields() -> None:
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(4))
    raw = b"GET / HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"
    assert parsed(raw, ServerLimits(max_headers=5)).header("x-3") == "v"
    assert refused(raw, ServerLimits(max_headers=4)) == (
        HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
        "too many header fields",
    )


# --- keep-alive ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "connection", "keep_alive"),
    [
        (b"HTTP/1.0", None, False),
        (b"HTTP/1.0", b"keep-alive", True),
        (b"HTTP/1.0", b"Keep-Alive", True),
        (b"HTTP/1.0", b"close", False),
        (b"HTTP/1.1", None, True),
        (b"HTTP/1.1", b"close", False),
        (b"HTTP/1.1", b"Upgrade, Close", False),
        (b"HTTP/1.1", b"keep-alive", True),
    ],
)
def test_keep_alive(protocol: bytes, connection: bytes | None, keep_alive: bool) -> None:
    raw = b"GET / " + protocol + b"\r\nHost: x\r\n"
    if connection is not None:
        raw += b"Connection: " + connection + b"\r\n"
    assert parsed(raw + b"\r\n").keep_alive is keep_alive


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_head_an_error_or_none(raw: bytes) -> None:
    result = parse_head(b"GET / HTTP/1.1\r\n" + raw, ServerLimits(max_head_bytes=128))
    assert result is None or isinstance(result, RequestHead | RequestError)


# --- responses -------------------------------------------------------------------------------


def split_response(data: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(": ")
        assert name.lower() not in headers, f"{name} twice"
        headers[name.lower()] = value
    return status, headers, body


def test_response_frames_the_body_itself() -> None:
    data = response_bytes(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Content-Length", "999"),  # the app's is not trusted
            ("Transfer-Encoding", "chunked"),
            ("Connection", "upgrade"),
            ("X-Frame-Options", "SAMEORIGIN"),
        ],
        b"hello",
        keep_alive=True,
        extra_headers=[("x-frame-options", "DENY")],
    )
    status, headers, body = split_response(data)
    assert status == "HTTP/1.1 200 OK"
    assert body == b"hello"
    assert headers["content-length"] == "5"
    assert headers["connection"] == "keep-alive"
    assert headers["x-frame-options"] == "DENY"  # the web config's replaces the app's
    assert "transfer-encoding" not in headers
    assert "date" in headers


def test_head_response_says_what_get_would_without_the_body() -> None:
    _, headers, body = split_response(
        response_bytes(
            "200 OK", [("Content-Type", "text/plain")], b"hello", keep_alive=False, head_only=True
        )
    )
    assert (headers["content-length"], body) == ("5", b"")
    assert headers["connection"] == "close"
    # An app that left out the body of a HEAD response itself: its Content-Length stands.
    _, headers, body = split_response(
        response_bytes("200 OK", [("Content-Length", "42")], b"", keep_alive=True, head_only=True)
    )
    assert (headers["content-length"], body) == ("42", b"")


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified", "101 Switching"])
def test_no_content_length_where_there_can_be_no_body(status: str) -> None:
    _, headers, _ = split_response(response_bytes(status, [], b"", keep_alive=True))
    assert "content-length" not in headers


def test_simple_response() -> None:
    status, headers, body = split_response(
        simple_response(HTTPStatus.REQUEST_TIMEOUT, "request too slow", keep_alive=False)
    )
    assert status == "HTTP/1.1 408 Request Timeout"
    assert body == b"Request Timeout: request too slow\n"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-length"] == str(len(body))
    status, headers, body = split_response(
        simple_response(HTTPStatus.UNAUTHORIZED, "", keep_alive=True, head_only=True)
    )
    assert body == b""
    assert headers["content-length"] == str(len(b"Unauthorized\n"))
