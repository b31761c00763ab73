"""The running configuration as the web pages show it: a :class:`~pqd.webstate.WebState` the
daemon builds on each request, from its config and probes."""

from __future__ import annotations

import platform
from collections.abc import Iterable

from pqd import __version__
from pqd.config import Config, ProbeConfig, format_duration
from pqd.schedule import schedule_text
from pqd.webstate import ProbeView, WebState


def probe_view(probe: ProbeConfig, containment: str) -> ProbeView:
    """A probe's settings as rows; ``containment`` is the one in use, not the configured one."""
    return ProbeView(
        name=probe.name,
        settings=(
            ("schedule", schedule_text(probe)),
            ("containment", containment),
            ("start_method", probe.start_method),
            ("workers", str(probe.workers)),
            ("queue_maxsize", str(probe.queue_maxsize)),
            ("rounds", str(probe.rounds)),
            ("items_per_producer", str(probe.items_per_producer)),
            ("job_pause", format_duration(probe.job_pause)),
            ("timeout", format_duration(probe.timeout)),
        ),
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
        global_settings=(
            ("listen_address", config.listen_address),
            ("log_format", config.log_format),
            ("log_level", config.log_level),
            ("history_limit", str(config.history_limit)),
            ("enable_reload_endpoint", str(config.enable_reload_endpoint).lower()),
            ("web_config_file", config.web_config_file or "none"),
            ("containment", f"{config.containment} (in use: {containment})"),
        ),
    )
