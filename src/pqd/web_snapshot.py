"""The running configuration as the web pages show it: a :class:`~pqd.webstate.WebState` the
daemon builds on each request, from its config and probes."""

from __future__ import annotations

import platform
from collections.abc import Iterable
from typing import Final

from pqd import __version__
from pqd.config import GLOBAL_SETTINGS, PROBE_SETTINGS, Config, ProbeConfig
from pqd.config_kinds import KINDS
from pqd.fields import Setting
from pqd.schedule import schedule_text
from pqd.webstate import ProbeView, WebState

#: Shown as one "schedule" row instead (an interval or a cron expression, whichever is set).
_SCHEDULE_SETTINGS: Final = ("interval", "cron")


def _shown(setting: Setting, value: object) -> str:
    """A setting's value as a page shows it: as the user would write it in pqd.toml."""
    if value is None:
        return "none"
    shown = KINDS[setting.spec.kind].shown(value)
    return str(shown).lower() if isinstance(shown, bool) else str(shown)


def probe_view(probe: ProbeConfig, containment: str) -> ProbeView:
    """A probe's settings as rows, every per-probe setting of the table (pqd.fields);
    ``containment`` is the one in use, not the configured one."""
    rows = [
        (s.name, _shown(s, getattr(probe, s.name)))
        for s in PROBE_SETTINGS
        if s.name not in _SCHEDULE_SETTINGS
    ]
    return ProbeView(
        name=probe.name,
        settings=(("schedule", schedule_text(probe)), ("containment", containment), *rows),
    )


def web_state(
    config: Config,
    probes: Iterable[ProbeConfig],  # in the config file's order
    *,
    containment: str,  # in use
    started_at: float,
    ready: bool,
    unhealthy_reason: str,
) -> WebState:
    return WebState(
        version=__version__,
        python_version=platform.python_version(),
        started_at=started_at,
        probes=tuple(probe_view(probe, containment) for probe in probes),
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
