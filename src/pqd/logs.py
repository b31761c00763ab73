"""One line per event on stderr, logfmt (as Prometheus and its exporters write) or JSON."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

# Attributes every LogRecord has; anything else passed through ``extra=`` is a field.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED}


def _timestamp(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _logfmt_value(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\\') and text.isprintable():
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _problem(record: logging.LogRecord) -> str | None:
    # Expected errors are logged as one line; an unexpected one keeps its type and message
    # but not a multi-line traceback, so a log line is always one line.
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        return f"{type(exc).__name__}: {exc}"
    return None


def _event(record: logging.LogRecord) -> dict[str, object]:
    """The fields of one log line, in order: the fixed ones, then the record's own."""
    data: dict[str, object] = {
        "ts": _timestamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    data.update(_fields(record))
    problem = _problem(record)
    if problem is not None:
        data["err"] = problem
    return data


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _event(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_event(record), default=str, ensure_ascii=False)


def configure(log_format: str, level: str, stream: TextIO | None = None) -> None:
    """Route the root logger to one stderr handler in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # APScheduler logs every run at INFO and every skip at WARNING; pqd logs its own line for
    # both ("cycle finished", "cycle skipped"), so only APScheduler's errors come through.
    logging.getLogger("apscheduler").setLevel(max(logging.ERROR, root.level))
