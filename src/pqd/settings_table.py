"""What a setting is, carried by its dataclass field: the one table of pqd's settings.

Each setting of :class:`pqd.config.load.Config` (top level) and :class:`pqd.probe.ProbeConfig` (per
probe) is declared with :func:`setting`, which stores a :class:`Spec` in the field's metadata.
Everything else is derived from these fields, in their order: the TOML keys, the ``PQD_*``
variables, the command-line flags, the checks, ``--help`` and the example config
(pqd.config.load, pqd.config.check, pqd.cli, pqd.config.doc). Adding a setting is one field of
Config or ProbeConfig plus its use; then ``python -m pqd.config.doc > systemd/pqd.toml``.

Plain data only: a probe's runner imports pqd.probe, and with it this module.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final, Literal, TypeVar

__all__ = ["Kind", "Setting", "Spec", "setting", "settings_of"]

#: How a value is written and checked (the rules of each kind are in pqd.config.kinds):
#: int (with ``range``), duration (a Prometheus duration, in seconds), enum (one of ``choices``),
#: bool, listen_address (``[host]:port``), path (a file; unset is None), cron (5 fields), python
#: (an interpreter: a path or a name in PATH; unset is pqd's own), environment (variables).
Kind = Literal[
    "int", "duration", "enum", "bool", "listen_address", "path", "cron", "python", "environment"
]

_SPEC: Final = "pqd.setting"
_T = TypeVar("_T")


@dataclass(frozen=True)
class Spec:
    kind: Kind
    help: str  # one sentence, no final stop: --help shows it, the example config starts with it
    metavar: str  # the value's placeholder in --help: N, DURATION, HOST:PORT, PATH...
    range: tuple[int, int] = (0, 0)  # int: the lowest and highest accepted
    choices: tuple[str, ...] = ()  # enum: the accepted values, in the order errors list them
    positive: bool = False  # duration: 0s is refused
    minimum: float = 0.0  # duration: below this (but above 0s) is refused
    # Exactly one field of the group is set; a layer (file, environment, flags) that sets one
    # clears the others, and setting two in one layer is an error.
    one_of: str = ""
    daemon_only: bool = False  # only `pqd run` has the flag; `pqd once` has no use for it
    note: str = ""  # more explanation, for the example config only
    unset: str = ""  # what leaving out a setting unset by default means, e.g. "no web config"
    example: str = ""  # a value the example config shows, commented out, when unset by default


@dataclass(frozen=True)
class Setting:
    """One row of the table: a field with a Spec, of Config (top level) or ProbeConfig."""

    name: str
    spec: Spec
    default: object
    per_probe: bool  # a ProbeConfig field: set per probe, or by an override for every probe


def setting(default: _T, spec: Spec) -> _T:
    """A dataclass field: its default, and its Spec in the metadata."""
    field: _T = dataclasses.field(default=default, metadata={_SPEC: spec})
    return field


def settings_of(cls: type, *, per_probe: bool) -> tuple[Setting, ...]:
    """The settings of a dataclass, in field order; fields without a Spec are not settings."""
    return tuple(
        Setting(f.name, f.metadata[_SPEC], f.default, per_probe)
        for f in dataclasses.fields(cls)
        if _SPEC in f.metadata
    )
