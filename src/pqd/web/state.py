"""What the web pages show of the daemon: plain, immutable data (:class:`WebState`) that the
daemon builds on each request from its running config and probes (:func:`web_state`).

Apart from pqd.web.app so that the page modules can use it without importing the WSGI app.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

from pqd import __version__
from pqd.config.kinds import KINDS
from pqd.config.load import GLOBAL_SETTINGS, PROBE_SETTINGS, Config
from pqd.config.syntax import format_duration
from pqd.probe import ProbeConfig
from pqd.settings_table import Setting

__all__ = ["ProbeView", "WebState", "schedule_text", "web_state"]

Settings = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ProbeView:
    """One configured probe: its settings as (name, value) rows, e.g. ("workers", "4").

    The status table reads the rows named "schedule", "containment" and "python" from
    ``settings``.
    """

    name: str
    settings: Settings


@dataclass(frozen=True)
class WebState:
    """A snapshot of the daemon that the pages show; plain data handed over by the daemon."""

    version: str
    python_version: str
    started_at: float  # Unix time the daemon started
    probes: tuple[ProbeView, ...]  # in the config file's order
    reload_enabled: bool
    ready: bool
    # Why cycles are not progressing (the check that withholds the watchdog ping); "" if they are.
    unhealthy_reason: str = ""
    # The running configuration's top-level settings as (name, value) rows, for /config.
    global_settings: Settings = ()


#: Shown as one "schedule" row instead (an interval or a cron expression, whichever is set).
_SCHEDULE_SETTINGS: Final = ("interval", "cron")


def _shown(setting: Setting, value: object) -> str:
    """A setting's value as a page shows it: as the user would write it in pqd.toml."""
    if value is None:
        return "none"
    shown = KINDS[setting.spec.kind].shown(value)
    return str(shown).lower() if isinstance(shown, bool) else str(shown)


def schedule_text(probe: ProbeConfig) -> str:
    """The probe's schedule for people: "every 30s" or "cron */5 * * * * (UTC)"."""
    if probe.cron is not None:
        return f"cron {probe.cron} (UTC)"
    assert probe.interval is not None
    return f"every {format_duration(probe.interval)}"


def probe_view(probe: ProbeConfig, containment: str, python: str = "") -> ProbeView:
    """A probe's settings as rows, every per-probe setting of the table (pqd.settings_table);
    ``containment`` is the one in use, not the configured one; ``python`` what the probe's
    interpreter is ("CPython 3.13.0"), shown with its path."""
    rows = [
        (s.name, _python_text(probe, python) if s.name == "python" else _shown(s, value))
        for s in PROBE_SETTINGS
        if s.name not in _SCHEDULE_SETTINGS
        for value in (getattr(probe, s.name),)
    ]
    return ProbeView(
        name=probe.name,
        settings=(("schedule", schedule_text(probe)), ("containment", containment), *rows),
    )


def _python_text(probe: ProbeConfig, python: str) -> str:
    """``CPython 3.13.0 (/usr/bin/python3.13)``; the default is ``CPython 3.11.7 (pqd's own)``;
    a path that is not an interpreter (any more) is shown with "not usable"."""
    where = "pqd's own" if probe.python is None else probe.python
    return f"{python or 'not usable'} ({where})"


def web_state(
    config: Config,
    probes: Iterable[ProbeConfig],  # in the config file's order
    *,
    containment: str,  # in use
    started_at: float,
    ready: bool,
    unhealthy_reason: str,
    python: Callable[[ProbeConfig], str] = lambda probe: "",
) -> WebState:
    """``python``: what a probe's interpreter is, "CPython 3.13.0" ("" when it is not one)."""
    return WebState(
        version=__version__,
        python_version=platform.python_version(),
        started_at=started_at,
        probes=tuple(probe_view(probe, containment, python(probe)) for probe in probes),
        reload_enabled=config.enable_reload_endpoint,
        ready=ready,
        unhealthy_reason=unhealthy_reason,
        # Every top-level setting; none holds a secret (web_config_file is only a path).
        global_settings=tuple(_global_row(s, config, containment) for s in GLOBAL_SETTINGS),
    )


def _global_row(setting: Setting, config: Config, containment: str) -> tuple[str, str]:
    shown = _shown(setting, getattr(config, setting.name))
    if setting.name == "containment":
        shown += f" (in use: {containment})"
    return setting.name, shown
