"""Log lines: one line per event, logfmt or JSON, quoting and errors without tracebacks."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from pqd import logs


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit(log_format: str, *, exc: bool = False) -> str:
    stream = io.StringIO()
    logs.configure(log_format, "info", stream)
    log = logging.getLogger("pqd.test")
    fields = {"probe": 'a "quoted" name', "jobs": 10, "detail": "line one\nline two"}
    if exc:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("cycle crashed", extra=fields)
    else:
        log.info("cycle finished", extra=fields)
    logging.getLogger("pqd.test").debug("not shown at info")
    return stream.getvalue()


@pytest.mark.usefixtures("restore_root")
def test_logfmt_is_one_quoted_line() -> None:
    out = emit("logfmt")

    assert out.count("\n") == 1
    assert ' level=info logger=pqd.test msg="cycle finished" ' in out
    assert 'probe="a \\"quoted\\" name"' in out
    assert "jobs=10" in out
    assert 'detail="line one\\nline two"' in out
    assert out.startswith("ts=") and "Z " in out


@pytest.mark.usefixtures("restore_root")
def test_json_is_one_object_per_line() -> None:
    record = json.loads(emit("json"))

    assert record["msg"] == "cycle finished"
    assert record["level"] == "info"
    assert record["probe"] == 'a "quoted" name'
    assert record["jobs"] == 10


@pytest.mark.usefixtures("restore_root")
@pytest.mark.parametrize("log_format", ["logfmt", "json"])
def test_an_exception_is_one_line_without_traceback(log_format: str) -> None:
    out = emit(log_format, exc=True)

    assert out.count("\n") == 1
    assert "Traceback" not in out
    assert "ValueError: boom" in out
