"""The rules of each kind of setting (pqd.settings_table.Kind): how a value is read from TOML and
from a string (``PQD_*``, flags), what is wrong with it, and how it is written back.

Problems are ValueErrors (or texts) saying what is wrong, not where: pqd.config.load names the
setting the way the user wrote it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Final

from pqd.config.syntax import (
    MAX_SETTING_MS,
    cron_problem,
    duration_seconds,
    format_duration,
    split_listen_address,
)
from pqd.settings_table import Kind, Setting

__all__ = ["KINDS", "SettingKind", "toml_path", "toml_string"]

_TRUE: Final = ("true", "1", "yes")
_FALSE: Final = ("false", "0", "no")
_INT_TEXT_RE: Final = re.compile(r"-?[0-9]+")
_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Bounds on a probe's environment table (it is copied into every runner start).
MAX_ENVIRONMENT: Final = 100
MAX_ENVIRONMENT_VALUE: Final = 4096


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string."""
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c in "\b\t\n\f\r":
            out.append(c.encode("unicode_escape").decode("ascii").replace("\\x08", "\\b"))
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_path(*keys: str) -> str:
    """A dotted TOML key, each part quoted only if it must be: ``probes."a b".workers``."""
    return ".".join(key if _BARE_KEY_RE.fullmatch(key) else toml_string(key) for key in keys)


class SettingKind:
    """A string setting (enum, listen_address, cron): the base every kind refines."""

    def from_toml(self, setting: Setting, value: object) -> object:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value

    def from_text(self, setting: Setting, raw: str) -> object:
        return raw

    def problem(self, setting: Setting, value: object) -> str | None:
        """What is wrong with a value, whoever wrote it (a file, a variable, code), or None."""
        return None

    def shown(self, value: object) -> object:
        """How an error shows a value that came from code: as the user would write it."""
        return value

    def text(self, value: object) -> str:
        """The value as a TOML value: what ``config_to_toml`` and the example config write."""
        return toml_string(str(value))

    def constraint(self, setting: Setting) -> str:
        """What values are accepted, for --help and the example config ("" if the help says)."""
        return ""


class _Int(SettingKind):
    def _problem(self, setting: Setting) -> str:
        low, high = setting.spec.range
        return f"must be an integer from {low} to {high}"

    def from_toml(self, setting: Setting, value: object) -> object:
        # bool is an int subclass in Python but not in TOML: workers = true is a mistake.
        if type(value) is not int:
            raise ValueError(self._problem(setting))
        return value

    def from_text(self, setting: Setting, raw: str) -> object:
        # int() would also take " 4", "+4", "4_0" and non-ASCII digits; keep it to plain decimal.
        if not _INT_TEXT_RE.fullmatch(raw):
            raise ValueError(self._problem(setting))
        return int(raw)

    def problem(self, setting: Setting, value: object) -> str | None:
        low, high = setting.spec.range
        if isinstance(value, int) and low <= value <= high:
            return None
        return self._problem(setting)

    def text(self, value: object) -> str:
        return str(value)

    def constraint(self, setting: Setting) -> str:
        low, high = setting.spec.range
        return f"{low} to {high}"


class _Duration(SettingKind):
    def from_toml(self, setting: Setting, value: object) -> object:
        if not isinstance(value, str):
            raise ValueError('expected a duration string like "30s"')
        return duration_seconds(value)

    def from_text(self, setting: Setting, raw: str) -> object:
        return duration_seconds(raw)

    def problem(self, setting: Setting, value: object) -> str | None:
        if not isinstance(value, float | int):
            return None  # unset (an interval when cron is used)
        spec = setting.spec
        if not math.isfinite(value) or value < 0 or (spec.positive and value == 0):
            return "must be longer than 0s" if spec.positive else "must be >= 0s"
        if value * 1000 > MAX_SETTING_MS:
            return f"must be at most {format_duration(MAX_SETTING_MS / 1000)}"
        if 0 < value < spec.minimum:
            return f"must be at least {format_duration(spec.minimum)}"
        return None

    def shown(self, value: object) -> object:
        if isinstance(value, float) and 0 <= value < math.inf:
            return format_duration(value)
        return value

    def text(self, value: object) -> str:
        if isinstance(value, float | int):
            return toml_string(format_duration(value))
        return super().text(value)

    def constraint(self, setting: Setting) -> str:
        low = f"at least {format_duration(setting.spec.minimum)}" if setting.spec.minimum else ""
        return low or ("longer than 0s" if setting.spec.positive else "")


class _Enum(SettingKind):
    def problem(self, setting: Setting, value: object) -> str | None:
        choices = setting.spec.choices
        return None if value in choices else f"must be one of {', '.join(choices)}"

    def constraint(self, setting: Setting) -> str:
        return "one of " + ", ".join(setting.spec.choices)


class _Bool(SettingKind):
    def from_toml(self, setting: Setting, value: object) -> object:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value

    def from_text(self, setting: Setting, raw: str) -> object:
        word = raw.lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ValueError("must be true/false, yes/no or 1/0")

    def text(self, value: object) -> str:
        return "true" if value else "false"

    def constraint(self, setting: Setting) -> str:
        return "true or false"


class _ListenAddress(SettingKind):
    def problem(self, setting: Setting, value: object) -> str | None:
        try:
            split_listen_address(str(value))
        except ValueError as err:
            return str(err)
        return None


class _Path(SettingKind):
    """A file; unset (None) by default. An empty override unsets it."""

    def from_toml(self, setting: Setting, value: object) -> object:
        text = super().from_toml(setting, value)
        if not text:
            raise ValueError(f"must not be empty (leave it out for {setting.spec.unset})")
        return text

    def from_text(self, setting: Setting, raw: str) -> object:
        # An empty override switches off a file set by a lower layer.
        return raw or None

    def problem(self, setting: Setting, value: object) -> str | None:
        if value is None or (isinstance(value, str) and value and "\0" not in value):
            return None
        return "must be a non-empty path without NUL characters"


class _Python(_Path):
    """An interpreter: a path, or a name looked up in PATH; unset (None) is pqd's own. What it
    really is gets asked of it by pqd.supervisor.interpreter (check-config, start-up)."""

    def problem(self, setting: Setting, value: object) -> str | None:
        if value is None or (isinstance(value, str) and value and "\0" not in value):
            return None
        return "must be a non-empty path or name without NUL characters"


class _Environment(SettingKind):
    """Variables, as a TOML table of strings or ``VAR=TEXT,VAR=TEXT`` text; unset is None."""

    def from_toml(self, setting: Setting, value: object) -> object:
        if not isinstance(value, Mapping):
            raise ValueError('must be a table of strings, e.g. { TMPDIR = "/var/tmp" }')
        for name, text in value.items():
            if not isinstance(text, str):
                raise ValueError(f"{name}: must be a string")
        return tuple((str(name), text) for name, text in value.items())

    def from_text(self, setting: Setting, raw: str) -> object:
        if not raw:
            return None
        pairs = []
        for item in raw.split(","):
            name, equals, text = item.partition("=")
            if not equals:
                raise ValueError(f"{item[:40]!r}: expected VAR=TEXT")
            pairs.append((name, text))
        return tuple(pairs)

    def problem(self, setting: Setting, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, tuple) or len(value) > MAX_ENVIRONMENT:
            return f"must be at most {MAX_ENVIRONMENT} variables"
        names = [name for name, _ in value]
        for name, text in value:
            if not _ENV_NAME_RE.fullmatch(name):
                return f"{name[:40]!r}: a variable name is letters, digits and _"
            if name.startswith("PQD_"):
                return f"{name}: PQD_ variables are pqd's own"
            if "\0" in text or len(text) > MAX_ENVIRONMENT_VALUE:
                return f"{name}: at most {MAX_ENVIRONMENT_VALUE} characters, no NUL"
            if names.count(name) > 1:
                return f"{name}: given twice"
        return None

    def shown(self, value: object) -> object:
        if isinstance(value, tuple):
            return ",".join(f"{name}={text}" for name, text in value)
        return value

    def text(self, value: object) -> str:
        if isinstance(value, str):  # the example in the Spec, written as TOML already
            return value
        assert isinstance(value, tuple)
        items = ", ".join(f"{toml_path(name)} = {toml_string(text)}" for name, text in value)
        return "{ " + items + " }" if items else "{}"


class _Cron(SettingKind):
    def problem(self, setting: Setting, value: object) -> str | None:
        return None if value is None else cron_problem(str(value))


KINDS: Final[Mapping[Kind, SettingKind]] = {
    "int": _Int(),
    "duration": _Duration(),
    "enum": _Enum(),
    "bool": _Bool(),
    "listen_address": _ListenAddress(),
    "path": _Path(),
    "cron": _Cron(),
    "python": _Python(),
    "environment": _Environment(),
}
