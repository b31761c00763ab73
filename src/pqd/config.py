"""Configuration: built-in defaults < TOML file < ``PQD_*`` environment < command-line flags.

Everything here is pure data and validation. Only :func:`config_from_file` does I/O (it reads the
file it is given); the environment is read only through the mappings passed in, so the daemon can
re-run :func:`load_config` on SIGHUP and tests can feed plain dicts.

Every problem becomes one :class:`ConfigError` whose text is a single line naming the setting the
way the user wrote it (``probes.fast.workers``, ``PQD_WORKERS`` or ``--workers``) and the value.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import math
import os
import re
import stat
import tomllib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, NoReturn

from pqd.containment import CONTAINMENT_MODES
from pqd.probe import ProbeConfig as ProbeConfig  # re-exported: callers load configs here

START_METHODS: Final = ("forkserver", "spawn", "fork")
LOG_FORMATS: Final = ("logfmt", "json")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")

#: Top-level settings, in the order they are documented and checked.
GLOBAL_FIELDS: Final = (
    "listen_address",
    "log_format",
    "log_level",
    "history_limit",
    "enable_reload_endpoint",
    "web_config_file",
    "containment",
)
#: Per-probe settings; as overrides they apply to every probe.
PROBE_FIELDS: Final = (
    "start_method",
    "workers",
    "queue_maxsize",
    "rounds",
    "items_per_producer",
    "job_pause",
    "timeout",
    "interval",
    "cron",
)
#: Keys accepted by :func:`apply_overrides` (and, upper-cased with ``PQD_``, as env variables).
OVERRIDE_FIELDS: Final = GLOBAL_FIELDS + PROBE_FIELDS

ENV_PREFIX: Final = "PQD_"
CONFIG_ENV: Final = "PQD_CONFIG"

MAX_PROBE_NAME: Final = 128
#: Bounds on what a config file may cost to read (README, "Configuration"): a config file is a
#: regular file of at most MAX_CONFIG_BYTES, with at most MAX_PROBES probes.
MAX_CONFIG_BYTES: Final = 1024 * 1024
MAX_PROBES: Final = 100
#: An echoed value longer than this is cut, with its length: errors stay one readable line.
MAX_ECHO_CHARS: Final = 80
#: The shortest interval accepted: a default cycle takes 50-100 ms, and a schedule no host can
#: honour only produces skips (1 ms gave 680 skip warnings a second and 40% of a core).
MIN_INTERVAL_SECONDS: Final = 0.1

_INT_RANGES: Final[Mapping[str, tuple[int, int]]] = {
    "workers": (1, 256),
    "queue_maxsize": (1, 1_000_000),
    "rounds": (1, 100_000),
    "items_per_producer": (1, 1_000_000),
    # The web history holds whole traces; an unbounded limit is a slow memory leak.
    "history_limit": (1, 100_000),
}
_DURATION_FIELDS: Final = ("job_pause", "timeout", "interval")
_ENUMS: Final[Mapping[str, tuple[str, ...]]] = {
    "start_method": START_METHODS,
    "log_format": LOG_FORMATS,
    "containment": CONTAINMENT_MODES,
    "log_level": LOG_LEVELS,
}
_TRUE: Final = ("true", "1", "yes")
_FALSE: Final = ("false", "0", "no")

_MS_PER_UNIT: Final[Mapping[str, int]] = {
    "y": 365 * 24 * 3600 * 1000,
    "w": 7 * 24 * 3600 * 1000,
    "d": 24 * 3600 * 1000,
    "h": 3600 * 1000,
    "m": 60 * 1000,
    "s": 1000,
    "ms": 1,
}
# Same grammar as prometheus/common model.ParseDuration: each unit at most once, biggest first.
_DURATION_RE: Final = re.compile(
    r"(?:([0-9]+)y)?(?:([0-9]+)w)?(?:([0-9]+)d)?(?:([0-9]+)h)?"
    r"(?:([0-9]+)m)?(?:([0-9]+)s)?(?:([0-9]+)ms)?"
)
# Prometheus stores durations as int64 nanoseconds; accept exactly what it accepts.
_MAX_DURATION_MS: Final = (2**63 - 1) // 1_000_000
# Timeouts and sleeps beyond threading.TIMEOUT_MAX (~292 years) raise OverflowError in the daemon;
# a year is far beyond any sensible probe setting and still a round, explainable limit.
_MAX_SETTING_MS: Final = _MS_PER_UNIT["y"]

_DURATION_EXAMPLE: Final = 'a duration like "500ms", "30s" or "1h30m"'
_LISTEN_EXAMPLE: Final = '"[host]:port", e.g. ":10029", "127.0.0.1:10029" or "[::1]:10029"'
_HOST_LABEL_RE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_BARE_KEY_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
_INT_TEXT_RE: Final = re.compile(r"-?[0-9]+")
# APScheduler 3 numbers weekdays from Monday=0 while crontab uses Sunday=0 (its issue #286), so
# "1-5" would silently run Tuesday..Saturday; only names mean the same thing in both.
_CRON_DOW_RE: Final = re.compile(r"[A-Za-z*,-]+")


def _one_line(text: str) -> str:
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text
    )


class ConfigError(Exception):
    """One clear line: which field (as the user wrote it), which value, what is wrong.

    ``field`` is the dotted TOML path (``probes.fast.workers``), the environment variable
    (``PQD_WORKERS``), the flag (``--workers``) or, for problems with the file itself, its path.
    """

    field: str
    value: object
    problem: str

    def __init__(self, field: str, value: object, problem: str) -> None:
        # Passing the raw arguments to Exception keeps the error picklable.
        super().__init__(field, value, problem)
        self.field = _one_line(field)
        self.value = value
        self.problem = _one_line(problem)

    def __str__(self) -> str:
        return _one_line(f"{_cut(self.field)}={_echo(self.value)}: {self.problem}")


def _cut(text: str) -> str:
    if len(text) <= MAX_ECHO_CHARS:
        return text
    return f"{text[:MAX_ECHO_CHARS]}... ({len(text)} characters)"


def _echo(value: object) -> str:
    """repr() of a value, cut short: a bad 50 MB value must not become a 50 MB error line."""
    if isinstance(value, str | bytes) and len(value) > MAX_ECHO_CHARS:
        return f"{value[:MAX_ECHO_CHARS]!r}... ({len(value)} characters)"
    text = repr(value)
    if len(text) > MAX_ECHO_CHARS:
        return f"{text[:MAX_ECHO_CHARS]}... ({len(text)} characters)"
    return text


# --------------------------------------------------------------------------------------------------
# Durations


def _duration_ms(text: str) -> int:
    """Milliseconds in a Prometheus duration; ValueError's message says what is wrong, not where."""
    if text == "0":  # Prometheus allows a bare zero.
        return 0
    match = _DURATION_RE.fullmatch(text) if text else None
    if match is None or not any(match.groups()):
        if re.fullmatch(r"[0-9]+", text):
            raise ValueError(f'needs a unit, e.g. "{text}s"; expected {_DURATION_EXAMPLE}')
        if re.fullmatch(r"[0-9]*\.[0-9]+[a-z]+", text):
            raise ValueError(f'takes integers only, e.g. "1s500ms"; expected {_DURATION_EXAMPLE}')
        raise ValueError(f"expected {_DURATION_EXAMPLE}")
    total = sum(
        int(number) * mult
        for number, mult in zip(match.groups(), _MS_PER_UNIT.values(), strict=True)
        if number is not None
    )
    if total > _MAX_DURATION_MS:
        raise ValueError("duration out of range (at most about 292y)")
    return total


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as ``"500ms"``, ``"30s"``, ``"1h30m"`` or ``"0s"``.

    Units ``y w d h m s ms`` (a year is 365 days), each at most once, biggest first, integers only.
    Raises ValueError for anything Prometheus would reject.
    """
    try:
        return _duration_ms(text) / 1000
    except ValueError as err:
        raise ValueError(f"invalid duration {text!r}: {err}") from None


def format_duration(seconds: float) -> str:
    """The Prometheus spelling of ``seconds`` (rounded to milliseconds): ``"1m30s"``, ``"0s"``.

    Matches ``model.Duration.String()``: years and weeks only when they divide exactly, so 90 days
    reads ``"90d"``, not ``"12w6d"``. Raises ValueError for negative or non-finite input.
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format {seconds!r} as a duration")
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    parts = []
    for unit, mult in _MS_PER_UNIT.items():
        if unit in ("y", "w") and ms % mult:
            continue
        count, ms = divmod(ms, mult)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


# --------------------------------------------------------------------------------------------------
# Listen address


def split_listen_address(address: str) -> tuple[str, int]:
    """``"[host]:port"`` -> ``(host, port)``, IPv6 brackets removed, ``""`` meaning all interfaces.

    Raises ValueError saying what is wrong (without repeating the address).
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or address.endswith("]"):
        raise ValueError(f"must be {_LISTEN_EXAMPLE}")
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or int(port_text) > 65535:
        raise ValueError("port must be an integer from 0 to 65535")
    port = int(port_text)
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"{host} is not an IPv6 address in brackets") from None
        return host[1:-1], port
    if ":" in host:
        raise ValueError('an IPv6 host needs brackets, e.g. "[::1]:10029"')
    if host and not _valid_host(host):
        raise ValueError("host must be empty, an IPv4 address, a host name or [IPv6 address]")
    return host, port


def _valid_host(host: str) -> bool:
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    name = host.removesuffix(".")
    return len(name) <= 253 and all(_HOST_LABEL_RE.fullmatch(label) for label in name.split("."))


# --------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class Config:
    listen_address: str = ":10029"
    log_format: str = "logfmt"
    log_level: str = "info"
    history_limit: int = 50
    enable_reload_endpoint: bool = False
    web_config_file: str | None = None  # exporter-toolkit web-config YAML; read by the web layer
    # Where each probe's runner and its processes live (design §1a): "cgroup" needs a writable
    # delegated cgroup v2 subtree (systemd Delegate=yes); "auto" uses one where there is one.
    containment: str = "auto"
    probes: tuple[ProbeConfig, ...] = (ProbeConfig(),)


# --------------------------------------------------------------------------------------------------
# Where each value came from, so that a problem found after merging layers names what the user wrote


_Scope = tuple[str, ...]
_GLOBAL: Final[_Scope] = ("global",)
_ALL_PROBES: Final[_Scope] = ("all probes",)


def _probe_scope(name: str) -> _Scope:
    return ("probe", name)


@dataclass(frozen=True)
class _Source:
    rank: int  # higher layers win: file 0, environment 1, flags 2
    field: str  # as the user wrote it
    value: object  # as the user wrote it
    all_probes: bool = False  # an override that applies to every probe


class _Sources:
    def __init__(self) -> None:
        self._by_key: dict[tuple[_Scope, str], _Source] = {}

    def add(self, scope: _Scope, field: str, source: _Source) -> None:
        self._by_key[(scope, field)] = source

    def find(self, probe: str | None, field: str) -> _Source | None:
        if probe is None:
            return self._by_key.get((_GLOBAL, field))
        hits = [
            hit
            for hit in (
                self._by_key.get((_probe_scope(probe), field)),
                self._by_key.get((_ALL_PROBES, field)),
            )
            if hit is not None
        ]
        return max(hits, key=lambda hit: hit.rank, default=None)


def _toml_string(text: str) -> str:
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


def _toml_key(key: str) -> str:
    return key if _BARE_KEY_RE.fullmatch(key) else _toml_string(key)


def _toml_path(*keys: str) -> str:
    return ".".join(_toml_key(key) for key in keys)


def _did_you_mean(word: str, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


# --------------------------------------------------------------------------------------------------
# Converting what the user wrote (TOML values or raw strings) into typed values


def _int_problem(field: str) -> str:
    low, high = _INT_RANGES[field]
    return f"must be an integer from {low} to {high}"


def _from_toml(field: str, value: object, where: str) -> object:
    if field in _INT_RANGES:
        # bool is an int subclass in Python but not in TOML: workers = true is a mistake.
        if type(value) is not int:
            raise ConfigError(where, value, _int_problem(field))
        return value
    if field in _DURATION_FIELDS:
        if not isinstance(value, str):
            raise ConfigError(where, value, 'expected a duration string like "30s"')
        try:
            return _duration_ms(value) / 1000
        except ValueError as err:
            raise ConfigError(where, value, str(err)) from None
    if field == "enable_reload_endpoint":
        if not isinstance(value, bool):
            raise ConfigError(where, value, "must be true or false")
        return value
    if not isinstance(value, str):
        raise ConfigError(where, value, "must be a string")
    if field == "web_config_file" and not value:
        raise ConfigError(where, value, "must not be empty (leave it out for no web config)")
    return value


def _from_text(field: str, raw: str, where: str) -> object:
    if field in _INT_RANGES:
        # int() would also take " 4", "+4", "4_0" and non-ASCII digits; keep it to plain decimal.
        if not _INT_TEXT_RE.fullmatch(raw):
            raise ConfigError(where, raw, _int_problem(field))
        return int(raw)
    if field in _DURATION_FIELDS:
        try:
            return _duration_ms(raw) / 1000
        except ValueError as err:
            raise ConfigError(where, raw, str(err)) from None
    if field == "enable_reload_endpoint":
        word = raw.lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ConfigError(where, raw, "must be true/false, yes/no or 1/0")
    if field == "web_config_file" and raw == "":
        # An empty override switches off a web config set by a lower layer.
        return None
    return raw


def _display(field: str, value: object) -> object:
    """A value that came from code rather than the user, shown the way the user would write it."""
    if field in _DURATION_FIELDS and isinstance(value, float) and 0 <= value < math.inf:
        return format_duration(value)
    return value


# --------------------------------------------------------------------------------------------------
# Validation of a complete Config


def _cron_problem(expr: str) -> str | None:
    # Imported here, not at the top: only a cron schedule needs APScheduler's parser, and with
    # it asyncio; `pqd once` and check-config of an interval config never pay for them.
    from apscheduler.triggers.cron import CronTrigger

    try:
        # A fixed zone keeps validation independent of the host's (possibly unset) local zone.
        CronTrigger.from_crontab(expr, timezone="UTC")
    except ValueError as err:
        return f"not a valid 5-field cron expression: {err}"
    if not _CRON_DOW_RE.fullmatch(expr.split()[4]):
        return (
            'the day-of-week field must use names such as "mon-fri" or "sun": APScheduler 3 '
            "numbers weekdays from Monday, crontab from Sunday"
        )
    return None


def _probe_name_problem(name: str) -> str | None:
    if not 1 <= len(name) <= MAX_PROBE_NAME:
        return f"probe names must be 1 to {MAX_PROBE_NAME} characters"
    # Line and paragraph separators would break one-line logs and errors; format characters
    # (U+202E RIGHT-TO-LEFT OVERRIDE, zero-width ones) make a name look like another.
    for c in name:
        category = unicodedata.category(c)
        if category in ("Cc", "Cf", "Zl", "Zp"):
            kind = "a format" if category == "Cf" else "a control"
            return f"probe names must not contain {kind} character (U+{ord(c):04X})"
    if name != name.strip():
        return "probe names must not start or end with white space"
    return None


class _Validator:
    def __init__(self, config: Config, sources: _Sources) -> None:
        self.config = config
        self.sources = sources

    def fail(
        self,
        probe: ProbeConfig | None,
        field: str,
        problem: str,
        blame: tuple[str, ...] = (),
        blame_problem: str = "",
    ) -> NoReturn:
        """Raise, naming the field the user set most recently among ``(field, *blame)``.

        When one of ``blame`` is named, ``blame_problem`` explains what it did to ``field``.
        """
        scope = None if probe is None else probe.name
        candidates = [(f, self.sources.find(scope, f)) for f in (field, *blame)]
        written = [(f, src) for f, src in candidates if src is not None]
        if written:
            # Ties go to the earlier candidate: ``field`` itself is the primary suspect.
            blamed, src = max(written, key=lambda item: item[1].rank)
            if blamed != field:
                problem = blame_problem
            if src.all_probes and probe is not None and len(self.config.probes) > 1:
                # The override names no probe, so say which one it broke.
                problem = f"probe {probe.name!r}: {problem}"
            raise ConfigError(src.field, src.value, problem)
        obj: object = self.config if probe is None else probe
        path = (field,) if probe is None else ("probes", probe.name, field)
        raise ConfigError(_toml_path(*path), _display(field, getattr(obj, field)), problem)

    def run(self) -> None:
        config = self.config
        for field, allowed in _ENUMS.items():
            if field in GLOBAL_FIELDS and getattr(config, field) not in allowed:
                self.fail(None, field, f"must be one of {', '.join(allowed)}")
        try:
            split_listen_address(config.listen_address)
        except ValueError as err:
            self.fail(None, "listen_address", str(err))
        low, high = _INT_RANGES["history_limit"]
        if not low <= config.history_limit <= high:
            self.fail(None, "history_limit", _int_problem("history_limit"))
        if config.web_config_file is not None and (
            not config.web_config_file or "\0" in config.web_config_file
        ):
            self.fail(None, "web_config_file", "must be a non-empty path without NUL characters")
        if not config.probes:
            raise ConfigError("probes", config.probes, "at least one probe is required")
        seen: set[str] = set()
        for probe in config.probes:
            problem = _probe_name_problem(probe.name)
            if problem is None and probe.name in seen:
                problem = "duplicate probe name"
            if problem is not None:
                raise ConfigError("probes", probe.name, problem)
            seen.add(probe.name)
            self.run_probe(probe)

    def run_probe(self, probe: ProbeConfig) -> None:
        if probe.start_method not in START_METHODS:
            self.fail(probe, "start_method", f"must be one of {', '.join(START_METHODS)}")
        for field in ("workers", "queue_maxsize", "rounds", "items_per_producer"):
            low, high = _INT_RANGES[field]
            if not low <= getattr(probe, field) <= high:
                self.fail(probe, field, _int_problem(field))
        limit = format_duration(_MAX_SETTING_MS / 1000)
        for field, positive in (("job_pause", False), ("timeout", True), ("interval", True)):
            value = getattr(probe, field)
            if value is None:
                continue
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                self.fail(probe, field, "must be longer than 0s" if positive else "must be >= 0s")
            if value * 1000 > _MAX_SETTING_MS:
                self.fail(probe, field, f"must be at most {limit}")
        if probe.interval is not None and 0 < probe.interval < MIN_INTERVAL_SECONDS:
            floor = format_duration(MIN_INTERVAL_SECONDS)
            self.fail(probe, "interval", f"must be at least {floor}")
        if probe.interval is not None and probe.cron is not None:
            self.fail(probe, "cron", "cannot be combined with interval; set only one of them")
        if probe.interval is None and probe.cron is None:
            self.fail(probe, "interval", "needs a schedule: set interval or cron")
        if probe.cron is not None:
            problem = _cron_problem(probe.cron)
            if problem is not None:
                self.fail(probe, "cron", problem)
        # Jobs run one after the other and each sleeps job_pause, so the cycle needs at least this.
        # Integer milliseconds keep 2 * 5 * 0.1 from comparing unequal to 1.
        if probe.job_pause > 0:
            needed_ms = 2 * probe.rounds * round(probe.job_pause * 1000)
            if round(probe.timeout * 1000) <= needed_ms:
                minimum = f"2 * rounds * job_pause = {format_duration(needed_ms / 1000)}"
                self.fail(
                    probe,
                    "timeout",
                    f"must be longer than {minimum}",
                    blame=("job_pause", "rounds"),
                    blame_problem=(
                        f"leaves timeout {format_duration(probe.timeout)} too short: "
                        f"it must be longer than {minimum}"
                    ),
                )


def _validate(config: Config, sources: _Sources) -> None:
    _Validator(config, sources).run()


# --------------------------------------------------------------------------------------------------
# Layers


def _mapping_layer(data: Mapping[str, object], sources: _Sources) -> Config:
    settings: dict[str, object] = {}
    for key, value in data.items():
        if key == "probes":
            continue
        if key not in GLOBAL_FIELDS:
            problem = "unknown key" + _did_you_mean(key, (*GLOBAL_FIELDS, "probes"))
            raise ConfigError(_toml_path(key), value, problem)
        settings[key] = _from_toml(key, value, _toml_path(key))
        sources.add(_GLOBAL, key, _Source(0, _toml_path(key), value))
    if "probes" in data:
        settings["probes"] = _probes_from_toml(data["probes"], sources)
    return dataclasses.replace(Config(), **settings)  # type: ignore[arg-type]


def _probes_from_toml(tables: object, sources: _Sources) -> tuple[ProbeConfig, ...]:
    if not isinstance(tables, Mapping):
        raise ConfigError("probes", tables, "must be a table of probes, e.g. [probes.default]")
    if not tables:
        raise ConfigError(
            "probes", dict(tables), "must define at least one probe, e.g. [probes.default]"
        )
    if len(tables) > MAX_PROBES:
        raise ConfigError("probes", f"{len(tables)} probes", f"at most {MAX_PROBES} are allowed")
    probes = []
    for name, table in tables.items():
        where = _toml_path("probes", name)
        problem = _probe_name_problem(name)
        if problem is not None:
            raise ConfigError("probes", name, problem)
        if not isinstance(table, Mapping):
            raise ConfigError(where, table, f"must be a table: [{where}]")
        settings: dict[str, object] = {"name": name}
        for key, value in table.items():
            path = _toml_path("probes", name, key)
            if key not in PROBE_FIELDS:
                raise ConfigError(path, value, "unknown key" + _did_you_mean(key, PROBE_FIELDS))
            settings[key] = _from_toml(key, value, path)
            sources.add(_probe_scope(name), key, _Source(0, path, value))
        if "cron" in table and "interval" not in table:
            settings["interval"] = None
        probes.append(ProbeConfig(**settings))  # type: ignore[arg-type]
    return tuple(probes)


def _overrides_layer(
    config: Config,
    overrides: Mapping[str, str],
    origin: Callable[[str], str],
    rank: int,
    sources: _Sources,
) -> Config:
    for key, raw in overrides.items():
        if key not in OVERRIDE_FIELDS:
            raise ConfigError(origin(key), raw, "unknown setting")
        if not isinstance(raw, str):
            raise ConfigError(origin(key), raw, "must be given as a string")
    if "interval" in overrides and "cron" in overrides:
        raise ConfigError(
            origin("cron"),
            overrides["cron"],
            f"cannot be combined with {origin('interval')}; set only one of them",
        )
    settings: dict[str, object] = {}
    probe_settings: dict[str, object] = {}
    for field in OVERRIDE_FIELDS:
        if field not in overrides:
            continue
        raw = overrides[field]
        value = _from_text(field, raw, origin(field))
        if field in GLOBAL_FIELDS:
            settings[field] = value
            sources.add(_GLOBAL, field, _Source(rank, origin(field), raw))
        else:
            probe_settings[field] = value
            sources.add(_ALL_PROBES, field, _Source(rank, origin(field), raw, all_probes=True))
    # A schedule is either an interval or a cron expression; the newer layer's choice wins.
    if "interval" in overrides:
        probe_settings["cron"] = None
    elif "cron" in overrides:
        probe_settings["interval"] = None
    if probe_settings:
        settings["probes"] = tuple(
            dataclasses.replace(probe, **probe_settings)  # type: ignore[arg-type]
            for probe in config.probes
        )
    return dataclasses.replace(config, **settings)  # type: ignore[arg-type]


def _toml_layer(text: str, source: str, sources: _Sources) -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise _syntax_error(err, text, source) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(source, source, "invalid TOML: nested too deeply") from None
    config = _mapping_layer(data, sources)
    _validate(config, sources)
    return config


def _syntax_error(err: tomllib.TOMLDecodeError, text: str, source: str) -> ConfigError:
    message = str(err)
    # Python 3.11's TOMLDecodeError carries the position only inside its message.
    match = re.search(r" \(at line (\d+), column (\d+)\)$", message)
    if match is None:
        lines = text.split("\n")
        where = "at end of document"
        line_text = lines[-1] if lines else ""
    else:
        line_no, column = int(match[1]), int(match[2])
        where = f"at line {line_no}, column {column}"
        line_text = text.split("\n")[line_no - 1] if line_no <= text.count("\n") + 1 else ""
    message = re.sub(r" \(at (line \d+, column \d+|end of document)\)$", "", message)
    return ConfigError(source, line_text.rstrip("\r")[:200], f"invalid TOML {where}: {message}")


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


def _file_layer(path: str, sources: _Sources) -> Config:
    try:
        data = read_bounded_file(path, MAX_CONFIG_BYTES)
    except OSError as err:
        raise ConfigError(path, path, f"cannot read config file: {err.strerror or err}") from None
    except ValueError as err:  # not a regular file, too large, a NUL byte in the path
        raise ConfigError(path, path, f"cannot read config file: {err}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(path, path, f"not UTF-8 text (byte {err.start})") from None
    return _toml_layer(text, path, sources)


# --------------------------------------------------------------------------------------------------
# Public entry points


def env_origin(field: str) -> str:
    """How a setting is spelled as an environment variable: ``workers`` -> ``PQD_WORKERS``."""
    return ENV_PREFIX + field.upper()


def flag_origin(field: str) -> str:
    """How a setting is spelled as a flag: ``queue_maxsize`` -> ``--queue-maxsize``."""
    return "--" + field.replace("_", "-")


def config_from_mapping(data: Mapping[str, object]) -> Config:
    """A parsed TOML document -> validated Config (missing keys keep their defaults)."""
    sources = _Sources()
    config = _mapping_layer(data, sources)
    _validate(config, sources)
    return config


def config_from_toml(text: str, *, source: str = "<toml>") -> Config:
    """TOML text -> validated Config; ``source`` names the text in syntax errors."""
    return _toml_layer(text, source, _Sources())


def config_from_file(path: str) -> Config:
    """Read and validate a TOML config file; a missing or unreadable file is a ConfigError."""
    return _file_layer(path, _Sources())


def config_path_from_env(environ: Mapping[str, str]) -> str | None:
    """``PQD_CONFIG``; empty counts as unset, like an empty ``PATH`` entry would."""
    return environ.get(CONFIG_ENV) or None


def overrides_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``PQD_<FIELD>`` variables as raw override strings keyed by field name.

    ``PQD_CONFIG`` is left out (see :func:`config_path_from_env`). Any other ``PQD_*`` variable
    that is not a setting is an error: a typo must not be ignored silently.
    """
    overrides: dict[str, str] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        field = name.removeprefix(ENV_PREFIX).lower()
        if field not in OVERRIDE_FIELDS or env_origin(field) != name:
            # Compare without the shared prefix, which would make every name look alike.
            close = difflib.get_close_matches(field, (*OVERRIDE_FIELDS, "config"), n=1)
            known = (*(env_origin(f) for f in OVERRIDE_FIELDS), CONFIG_ENV)
            hint = (
                f"did you mean {env_origin(close[0])}?" if close else f"known: {', '.join(known)}"
            )
            raise ConfigError(name, raw, f"unknown environment variable ({hint})")
        overrides[field] = raw
    return overrides


def apply_overrides(
    config: Config, overrides: Mapping[str, str], *, origin: Callable[[str], str]
) -> Config:
    """Apply raw string overrides (probe fields to every probe) and validate the result.

    ``origin(field)`` is how errors name a setting, e.g. :func:`env_origin` or :func:`flag_origin`.
    """
    sources = _Sources()
    config = _overrides_layer(config, overrides, origin, 1, sources)
    _validate(config, sources)
    return config


def load_config(
    path: str | None, environ: Mapping[str, str], flag_overrides: Mapping[str, str]
) -> Config:
    """Defaults < TOML file (``path``, else ``PQD_CONFIG``) < ``PQD_*`` environment < flags.

    The file is validated on its own; environment and flags are validated together, so a flag can
    repair what an environment variable alone would break.
    """
    sources = _Sources()
    if path is None:
        path = config_path_from_env(environ)
    config = Config() if path is None else _file_layer(path, sources)
    env = overrides_from_env(environ)
    config = _overrides_layer(config, env, env_origin, 1, sources)
    config = _overrides_layer(config, flag_overrides, flag_origin, 2, sources)
    _validate(config, sources)
    return config


def config_to_toml(config: Config) -> str:
    """The TOML that :func:`config_from_toml` reads back into an equal Config (values must be
    valid: durations are written in milliseconds precision)."""
    lines = []
    for field in GLOBAL_FIELDS:
        value = getattr(config, field)
        if value is not None:
            lines.append(f"{field} = {_toml_value(field, value)}")
    for probe in config.probes:
        lines += ["", f"[{_toml_path('probes', probe.name)}]"]
        for field in PROBE_FIELDS:
            value = getattr(probe, field)
            if value is not None:
                lines.append(f"{field} = {_toml_value(field, value)}")
    return "\n".join(lines) + "\n"


def _toml_value(field: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if field in _DURATION_FIELDS and isinstance(value, float):
        return _toml_string(format_duration(value))
    return _toml_string(str(value))
