"""What the table of settings says to people: the ``--help`` line of each setting's flag, and the
commented example config (systemd/pqd.toml), both written from the fields' Specs.

    python -m pqd.config.doc > systemd/pqd.toml    # after adding or changing a setting

tests/ops/test_example_config.py fails when the committed example differs from what this writes.
"""

from __future__ import annotations

import textwrap
from typing import Final

from pqd.config.kinds import KINDS, toml_path
from pqd.config.load import GLOBAL_SETTINGS, PROBE_SETTINGS, Config
from pqd.probe import ProbeConfig
from pqd.settings_table import Setting

__all__ = ["EXAMPLE", "example_config", "flag_help"]

_WIDTH: Final = 99

_HEADER: Final = """\
# Example configuration for pqd, read by `pqd run --config /etc/pqd/pqd.toml` (systemd/pqd.service)
# and shipped in the container image. Precedence: built-in defaults < this file < PQD_*
# environment < command-line flags. Every setting is also a PQD_<SETTING> variable and a
# --<setting> flag (`pqd run --help`); a probe setting given that way applies to every probe.
# Durations are written as Prometheus writes them: "500ms", "30s", "5m". Check a file before
# installing it: `pqd check-config /etc/pqd/pqd.toml` (exit 78 on a bad file; `systemctl reload
# pqd` refuses it and keeps the old one running).
"""

_PROBES_INTRO: Final = """\
Each [probes.NAME] table is a probe: a cycle of its own, on its own schedule, in a process tree \
of its own. A setting left out takes the default given in the first probe's comments."""

#: The example: the top-level settings, then each probe with a comment that introduces it.
EXAMPLE: Final = Config(
    history_limit=100,
    probes=(
        ProbeConfig(name="default", timeout=60.0, interval=30.0),
        ProbeConfig(
            name="spawn",
            start_method="spawn",
            workers=2,
            rounds=2,
            timeout=60.0,
            interval=None,
            cron="*/5 * * * *",
        ),
        ProbeConfig(
            name="data_loader",
            start_method="spawn",
            workers=2,
            rounds=1,
            shared_memory_bytes=64 * 2**20,
            timeout=60.0,
            interval=300.0,
        ),
    ),
)
_PROBE_NOTES: Final = {
    "default": "The seed's own cycle: 4 workers, a queue of 3, 5 rounds of a producer putting 5 "
    "items and a consumer draining them: 10 jobs and 10 full-queue events per successful cycle.",
    "spawn": 'The same cycle with the "spawn" start method, the default on macOS and Windows and '
    "the one that re-imports everything in every worker; once every 5 minutes is enough to "
    "notice when it breaks or slows down.",
    "data_loader": "Shaped like an ML data loader (PyTorch's DataLoader with 2 spawn workers): "
    "each cycle also passes a 64 MiB batch through /dev/shm. It fails with cause shm_full "
    "where /dev/shm cannot hold it, e.g. under Docker's default --shm-size of 64 MB, as such "
    "a loader would; drop it where no data loader runs.",
}


def _shown_default(setting: Setting) -> str:
    if setting.default is None:
        return f"none, {setting.spec.unset}" if setting.spec.unset else ""
    return KINDS[setting.spec.kind].text(setting.default).strip('"')


def _details(setting: Setting, *, every_probe: bool) -> str:
    """``1 to 256; every probe; default: 4``: what the Spec says beyond the help sentence."""
    default = _shown_default(setting)
    parts = [
        KINDS[setting.spec.kind].constraint(setting),
        "every probe" if every_probe and setting.per_probe else "",
        f"default: {default}" if default else "",
    ]
    return "; ".join(part for part in parts if part)


def flag_help(setting: Setting) -> str:
    """The --help text of a setting's flag (``%`` escaped for argparse)."""
    details = _details(setting, every_probe=True)
    text = f"{setting.spec.help} ({details})" if details else setting.spec.help
    return text.replace("%", "%%")


def _comment(text: str) -> list[str]:
    return textwrap.wrap(
        text,
        _WIDTH,
        initial_indent="# ",
        subsequent_indent="# ",
        break_long_words=False,
        break_on_hyphens=False,
    )


def _lines(settings: tuple[Setting, ...], obj: object, *, documented: bool) -> list[str]:
    """``key = value`` lines; ``documented``: each after its help, an unset one commented out."""
    lines = []
    for setting in settings:
        value, kind = getattr(obj, setting.name), KINDS[setting.spec.kind]
        if documented:
            details = _details(setting, every_probe=False)
            text = f"{setting.spec.help} ({details})." if details else f"{setting.spec.help}."
            lines += _comment(f"{text} {setting.spec.note}".strip())
        if value is not None:
            lines.append(f"{setting.name} = {kind.text(value)}")
        elif documented and setting.spec.example:
            lines.append(f"# {setting.name} = {kind.text(setting.spec.example)}")
    return lines


def example_config(config: Config = EXAMPLE) -> str:
    """The commented example config: every setting explained, from the table."""
    lines = [*_HEADER.splitlines(), ""]
    lines += _lines(GLOBAL_SETTINGS, config, documented=True)
    lines += ["", *_comment(_PROBES_INTRO)]
    for index, probe in enumerate(config.probes):
        note = _PROBE_NOTES.get(probe.name, "")
        lines += ["", *(_comment(note) if note else []), f"[{toml_path('probes', probe.name)}]"]
        lines += _lines(PROBE_SETTINGS, probe, documented=index == 0)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(example_config(), end="")
