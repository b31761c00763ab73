"""``pqd hash-password``: a password in, a bcrypt hash for basic_auth_users out."""

from __future__ import annotations

import io
from collections.abc import Iterator

import bcrypt
import pytest

from pqd.cli import main
from pqd.http.webconfig import web_config_from_yaml


class FakeStdin(io.TextIOWrapper):
    def __init__(self, data: bytes, *, tty: bool) -> None:
        super().__init__(io.BytesIO(data))
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def run(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    data: bytes = b"",
    *,
    prompts: Iterator[str] | None = None,
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", FakeStdin(data, tty=prompts is not None))
    if prompts is not None:
        monkeypatch.setattr("getpass.getpass", lambda prompt="": next(prompts))
    code = main(["hash-password"], environ={})
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("stdin", "password"),
    [
        (b"s3cret\n", b"s3cret"),
        (b"s3cret", b"s3cret"),
        (b"s3cret\r\nsecond line\n", b"s3cret"),
        ("pässwörd\n".encode(), "pässwörd".encode()),
    ],
    ids=["line", "no-newline", "first-line-only", "utf-8"],
)
def test_hash_from_stdin(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stdin: bytes,
    password: bytes,
) -> None:
    code, out, err = run(monkeypatch, capsys, stdin)
    assert (code, err) == (0, "")
    hashed = out.strip()
    assert out == hashed + "\n"
    assert hashed.startswith("$2b$10$")  # cost 10, as exporter-toolkit's docs use
    assert bcrypt.checkpw(password, hashed.encode())
    # ... and the web config accepts it as it is printed.
    assert web_config_from_yaml(f"basic_auth_users:\n  alice: {hashed}\n").password_hash("alice")


def test_prompted_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(monkeypatch, capsys, prompts=iter(["typed", "typed"]))
    assert code == 0
    assert bcrypt.checkpw(b"typed", out.strip().encode())


@pytest.mark.parametrize(
    ("stdin", "prompts", "message"),
    [
        (b"", None, "the password is empty"),
        (b"\n", None, "the password is empty"),
        (b"x" * 73 + b"\n", None, "longer than 72 bytes"),
        (b"", ["one", "two"], "the passwords do not match"),
    ],
    ids=["eof", "empty-line", "too-long", "mismatch"],
)
def test_bad_password_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stdin: bytes,
    prompts: list[str] | None,
    message: str,
) -> None:
    code, out, err = run(
        monkeypatch, capsys, stdin, prompts=None if prompts is None else iter(prompts)
    )
    assert code == 2
    assert out == ""
    assert err.startswith("pqd: error: ")
    assert message in err
    assert err.count("\n") == 1
