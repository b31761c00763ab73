"""What the web pages show of the daemon: plain, immutable data the daemon hands to the web app.

Apart from pqd.web so that the page modules can use it without importing the WSGI app.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ProbeView", "WebState"]

Settings = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ProbeView:
    """One configured probe: its settings as (name, value) rows, e.g. ("workers", "4").

    The status table reads the rows named "schedule" and "containment" from ``settings``.
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
