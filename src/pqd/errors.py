"""ConfigError, and what every reader of a config file (pqd.config.load, pqd.http.webconfig) shares:
one way to show a value in an error, one "did you mean", one bounded file reader.

Kept free of heavy imports: the web layer, the CLI and the config loaders all raise ConfigError.
"""

from __future__ import annotations

import difflib
import os
import reprlib
import stat
from collections.abc import Callable, Iterable
from typing import Final

#: An echoed value longer than this is cut, with its length: errors stay one readable line.
MAX_ECHO_CHARS: Final = 80
#: Shown instead of a value that may be a secret (a private key, a password hash).
SECRET: Final = "<secret>"
#: Nesting and lengths echo() shows of a table or an array: a hostile value may be 1,000 levels
#: deep, and repr() of it recurses past the stack.
_ECHO_REPR = reprlib.Repr()
_ECHO_REPR.maxlevel = 3
_ECHO_REPR.maxstring = 1 << 20  # cut() shortens the whole line afterwards
_ECHO_REPR.maxother = 1 << 20


class _NoValue:
    """The value of an error about a whole file (its syntax, its size): there is none to echo."""

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE: Final = _NoValue()


def one_line(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


def cut(text: str) -> str:
    """``text``, or its first MAX_ECHO_CHARS characters and its length."""
    if len(text) <= MAX_ECHO_CHARS:
        return text
    return f"{text[:MAX_ECHO_CHARS]}... ({len(text)} characters)"


def echo(value: object) -> str:
    """repr() of a value, cut short: a bad 50 MB value must not become a 50 MB error line, nor a
    deeply nested one a RecursionError."""
    if isinstance(value, str | bytes):
        if len(value) > MAX_ECHO_CHARS:
            return f"{value[:MAX_ECHO_CHARS]!r}... ({len(value)} characters)"
        return repr(value)
    if isinstance(value, dict | list | tuple | set | frozenset):
        return cut(_ECHO_REPR.repr(value))
    return cut(repr(value))


class ConfigError(Exception):
    """One clear line: which field (as the user wrote it), which value, what is wrong.

    ``field`` is the dotted TOML or YAML path (``probes.fast.workers``), the environment variable
    (``PQD_WORKERS``), the flag (``--workers``) or, for problems with the file itself, its path.
    """

    field: str
    value: object
    problem: str

    def __init__(self, field: str, value: object, problem: str) -> None:
        # Passing the raw arguments to Exception keeps the error picklable.
        super().__init__(field, value, problem)
        self.field = one_line(field)
        self.value = value
        self.problem = one_line(problem)

    def __str__(self) -> str:
        if self.value is NO_VALUE:
            return one_line(f"{cut(self.field)}: {self.problem}")
        return one_line(f"{cut(self.field)}={echo(self.value)}: {self.problem}")


def did_you_mean(
    word: str,
    choices: Iterable[str],
    *,
    spell: Callable[[str], str] = str,
    list_known: bool = True,
) -> str:
    """``"did you mean X?"`` for the closest of ``choices``; else ``"known: A, B"`` (or ``""``
    without ``list_known``). ``spell`` turns a choice into what the user would write."""
    options = tuple(choices)
    close = difflib.get_close_matches(word, options, n=1)
    if close:
        return f"did you mean {spell(close[0])}?"
    return f"known: {', '.join(spell(c) for c in options)}" if list_known else ""


def read_bounded_file(path: str, limit: int) -> bytes:
    """The contents of a regular file of at most ``limit`` bytes. Raises OSError or ValueError
    with a message for anything else: a FIFO would block, /dev/zero never ends."""
    # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        chunks, size = [], 0
        while chunk := os.read(fd, min(65536, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise ValueError(f"larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_config_bytes(path: str, limit: int, *, field: str, cannot: str) -> bytes:
    """:func:`read_bounded_file`, any problem one ConfigError ``field=path: {cannot}: why``."""
    try:
        return read_bounded_file(path, limit)
    except OSError as err:
        raise ConfigError(field, path, f"{cannot}: {err.strerror or err}") from None
    except ValueError as err:  # not a regular file, too large, a NUL byte in the path
        raise ConfigError(field, path, f"{cannot}: {err}") from None


def decode_utf8(data: bytes, path: str) -> str:
    """``data`` as UTF-8 text; a ConfigError naming ``path`` and the first bad byte otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(path, path, f"not UTF-8 text (byte {err.start})") from None
