"""Hostile input: malformed HTTP requests against a running pqd and random config files against
the config loader. Never a crash, never a traceback; always a 4xx or a clear config error."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pqd.cli import main
from pqd.config.load import OVERRIDE_FIELDS
from tests.helpers.pqd_process import PqdProcess

FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def pqd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PqdProcess]:
    tmp = tmp_path_factory.mktemp("fuzz")
    process = PqdProcess(tmp, '[probes.a]\ninterval = "2s"\n').wait_ready()
    try:
        yield process
    finally:
        process.stop()


def send_raw(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(payload)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def status_of(response: bytes) -> int | None:
    if not response.startswith(b"HTTP/1."):
        return None
    return int(response.split(b" ", 2)[1])


ODD_PATHS = [
    b"/cycles/../../etc/passwd",
    b"/cycles/%2e%2e/%2e%2e/etc/passwd",
    b"/../../../../etc/passwd",
    b"/cycles/\xff\xfe",
    b"/%ff%fe%00",
    b"/cycles/" + b"A" * 10000,
    b"*",
]


@pytest.mark.parametrize("path", ODD_PATHS)
def test_odd_paths_get_a_4xx(pqd: PqdProcess, path: bytes) -> None:
    response = send_raw(pqd.port, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")

    status = status_of(response)
    assert status is not None and 400 <= status < 500, response[:200]
    assert b"Traceback" not in response


@pytest.mark.parametrize(
    "target",
    # A long query string, and the absolute form every HTTP/1.1 server must accept (RFC 9112).
    [b"/metrics?" + b"x=" * 2000, b"http://example.com/metrics"],
)
def test_unusual_but_valid_targets_are_still_a_scrape(pqd: PqdProcess, target: bytes) -> None:
    response = send_raw(pqd.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")

    assert status_of(response) == 200


def test_huge_headers_get_a_4xx(pqd: PqdProcess) -> None:
    response = send_raw(
        pqd.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    )

    status = status_of(response)
    assert status is not None and 400 <= status < 500, response[:200]


@FUZZ_SETTINGS
@given(
    method=st.sampled_from([b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"\x00\xff", b"G E T"]),
    path=st.binary(min_size=0, max_size=300),
    version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/9.9", b"", b"\xff"]),
    headers=st.lists(st.binary(max_size=200), max_size=8),
)
def test_random_requests_never_break_pqd(
    pqd: PqdProcess, method: bytes, path: bytes, version: bytes, headers: list[bytes]
) -> None:
    payload = b" ".join(x for x in (method, path, version) if x) + b"\r\n"
    payload += b"".join(h.replace(b"\r\n", b"") + b"\r\n" for h in headers) + b"\r\n"

    response = send_raw(pqd.port, payload)

    status = status_of(response)
    # A request that parses may answer 200 (e.g. "GET /"); anything else gets a 4xx (505 for an
    # HTTP version other than 1.x, as RFC 9110 says), or the connection is closed without a
    # word: never a server error, never a traceback.
    assert status is None or status < 500 or status == 505, response[:300]
    assert b"Traceback" not in response
    assert pqd.proc.poll() is None


def test_after_the_fuzzing_pqd_still_serves_and_logged_no_traceback(pqd: PqdProcess) -> None:
    assert pqd.get("/metrics")[0] == 200
    assert "Traceback" not in pqd.log_text()


# -- config files ----------------------------------------------------------------------------

KEYS = st.sampled_from([*OVERRIDE_FIELDS, "probes", "bogus"])
SCALARS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(["30s", "0s", "-1s", "1y", "5m", "*/5 * * * *", "spawn", "fork", ":10029"]),
)
TOML_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.encode("unicode_escape").decode().replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + "}"


@FUZZ_SETTINGS
@given(
    document=st.dictionaries(KEYS, TOML_VALUES, max_size=6),
    probes=st.dictionaries(st.text(max_size=12), st.dictionaries(KEYS, TOML_VALUES, max_size=6)),
)
def test_random_config_files_get_ok_or_one_clear_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    document: dict[str, Any],
    probes: dict[str, dict[str, Any]],
) -> None:
    lines = [f'"{k}" = {toml_value(v)}' for k, v in document.items() if k != "probes"]
    for name, table in probes.items():
        lines.append(f"[probes.{toml_value(name)}]")
        lines.extend(f'"{k}" = {toml_value(v)}' for k, v in table.items())
    assert_ok_or_one_clear_line(tmp_path, capsys, "\n".join(lines) + "\n")


@FUZZ_SETTINGS
@given(text=st.text(max_size=400))
def test_random_text_as_a_config_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    assert_ok_or_one_clear_line(tmp_path, capsys, text)


def assert_ok_or_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config_text: str
) -> None:
    path = tmp_path / "fuzz.toml"
    path.write_text(config_text, errors="surrogatepass")

    code = main(["check-config", str(path)], environ={})

    captured = capsys.readouterr()
    assert code in (0, 78)
    assert "Traceback" not in captured.err
    if code == 78:
        assert len(captured.err.splitlines()) == 1
