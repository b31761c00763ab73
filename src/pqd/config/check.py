"""Checking a complete Config, after all its layers are merged, and naming what the user wrote.

Each setting is checked by the rules of its kind (pqd.config.kinds), in table order; then the
rules between settings: a ``one_of`` group has exactly one member set, a probe's timeout leaves
room for its work, probe names are distinct and printable. A problem is blamed on the layer that
set the value last (the file's key, ``PQD_*`` or the flag), recorded in :class:`Sources`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, NoReturn

from pqd.config.kinds import KINDS, toml_path
from pqd.config.syntax import format_duration
from pqd.errors import ConfigError
from pqd.probe import ProbeConfig
from pqd.settings_table import Setting

if TYPE_CHECKING:
    from pqd.config.load import Config

__all__ = ["ALL_PROBES", "GLOBAL", "Source", "Sources", "probe_name_problem", "probe_scope"]

MAX_PROBE_NAME: Final = 128

Scope = tuple[str, ...]
GLOBAL: Final[Scope] = ("global",)
ALL_PROBES: Final[Scope] = ("all probes",)


def probe_scope(name: str) -> Scope:
    return ("probe", name)


@dataclass(frozen=True)
class Source:
    """Where a value came from, so that a problem found after merging names what the user wrote."""

    rank: int  # higher layers win: file 0, environment 1, flags 2
    field: str  # as the user wrote it
    value: object  # as the user wrote it
    all_probes: bool = False  # an override that applies to every probe


class Sources:
    def __init__(self) -> None:
        self._by_key: dict[tuple[Scope, str], Source] = {}

    def add(self, scope: Scope, field: str, source: Source) -> None:
        self._by_key[(scope, field)] = source

    def find(self, probe: str | None, field: str) -> Source | None:
        if probe is None:
            return self._by_key.get((GLOBAL, field))
        hits = [
            hit
            for hit in (
                self._by_key.get((probe_scope(probe), field)),
                self._by_key.get((ALL_PROBES, field)),
            )
            if hit is not None
        ]
        return max(hits, key=lambda hit: hit.rank, default=None)


def probe_name_problem(name: str) -> str | None:
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


class Validator:
    def __init__(
        self,
        config: Config,
        sources: Sources,
        global_settings: Sequence[Setting],
        probe_settings: Sequence[Setting],
        python_problem: Callable[[str], str | None] | None = None,
    ) -> None:
        self.config = config
        self.sources = sources
        self.global_settings = global_settings
        self.probe_settings = probe_settings
        # What is wrong with a probe's ``python`` as an interpreter (it is run to find out:
        # pqd.supervisor.interpreter); None checks only how it is written.
        self.python_problem = python_problem

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
        kind = KINDS[self._setting(probe, field).spec.kind]
        raise ConfigError(toml_path(*path), kind.shown(getattr(obj, field)), problem)

    def _setting(self, probe: ProbeConfig | None, field: str) -> Setting:
        settings = self.global_settings if probe is None else self.probe_settings
        return next(s for s in settings if s.name == field)

    def run(self) -> None:
        self.check_settings(None, self.global_settings)
        config = self.config
        if not config.probes:
            raise ConfigError("probes", config.probes, "at least one probe is required")
        seen: set[str] = set()
        for probe in config.probes:
            problem = probe_name_problem(probe.name)
            if problem is None and probe.name in seen:
                problem = "duplicate probe name"
            if problem is not None:
                raise ConfigError("probes", probe.name, problem)
            seen.add(probe.name)
            self.check_settings(probe, self.probe_settings)
            self.check_work_fits(probe)
            if probe.python is not None and self.python_problem is not None:
                problem = self.python_problem(probe.python)
                if problem is not None:
                    self.fail(probe, "python", problem)

    def check_settings(self, probe: ProbeConfig | None, settings: Sequence[Setting]) -> None:
        """Each setting by its kind, then each ``one_of`` group: exactly one member set."""
        obj: object = self.config if probe is None else probe
        groups: dict[str, list[Setting]] = {}
        for setting in settings:
            value = getattr(obj, setting.name)
            problem = KINDS[setting.spec.kind].problem(setting, value)
            if problem is not None:
                self.fail(probe, setting.name, problem)
            if setting.spec.one_of:
                groups.setdefault(setting.spec.one_of, []).append(setting)
        for group, members in groups.items():
            names = [s.name for s in members]
            chosen = [name for name in names if getattr(obj, name) is not None]
            if len(chosen) > 1:
                problem = f"cannot be combined with {chosen[0]}; set only one of them"
                self.fail(probe, chosen[1], problem)
            if not chosen:
                self.fail(probe, names[0], f"needs a {group}: set {' or '.join(names)}")

    def check_work_fits(self, probe: ProbeConfig) -> None:
        """Jobs run one after the other and each sleeps job_pause, so the cycle needs at least
        ``2 * rounds * job_pause``. Integer milliseconds keep 2 * 5 * 0.1 from comparing unequal
        to 1."""
        if probe.job_pause <= 0:
            return
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
