"""The grammars of pqd's setting values: Prometheus durations, ``[host]:port`` listen addresses
and 5-field cron schedules. Pure functions; problems are ValueErrors (or texts) saying what is
wrong, not where: the caller names the setting.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from typing import Final

__all__ = [
    "MAX_SETTING_MS",
    "cron_problem",
    "duration_seconds",
    "format_duration",
    "parse_duration",
    "split_listen_address",
]

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
#: Timeouts and sleeps beyond threading.TIMEOUT_MAX (~292 years) raise OverflowError in the
#: daemon; a year is far beyond any sensible probe setting and still a round, explainable limit.
MAX_SETTING_MS: Final = _MS_PER_UNIT["y"]

_DURATION_EXAMPLE: Final = 'a duration like "500ms", "30s" or "1h30m"'
_LISTEN_EXAMPLE: Final = '"[host]:port", e.g. ":10029", "127.0.0.1:10029" or "[::1]:10029"'
_HOST_LABEL_RE: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# APScheduler 3 numbers weekdays from Monday=0 while crontab uses Sunday=0 (its issue #286), so
# "1-5" would silently run Tuesday..Saturday; only names mean the same thing in both.
_CRON_DOW_RE: Final = re.compile(r"[A-Za-z*,-]+")


# --------------------------------------------------------------------------------------------------
# Durations


def duration_seconds(text: str) -> float:
    """Seconds in a Prometheus duration; ValueError's message says what is wrong, not where."""
    if text == "0":  # Prometheus allows a bare zero.
        return 0.0
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
    return total / 1000


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus duration such as ``"500ms"``, ``"30s"``, ``"1h30m"`` or ``"0s"``.

    Units ``y w d h m s ms`` (a year is 365 days), each at most once, biggest first, integers only.
    Raises ValueError for anything Prometheus would reject.
    """
    try:
        return duration_seconds(text)
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
# Cron


def cron_problem(expr: str) -> str | None:
    """What is wrong with a 5-field crontab expression, or None."""
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
