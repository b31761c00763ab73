"""Configuration: built-in defaults < TOML file < ``PQD_*`` environment < command-line flags.

The settings are the fields of :class:`Config` (top level) and :class:`~pqd.probe.ProbeConfig` (per
probe), each declared with its kind, range or choices, help and metavar (pqd.settings_table). The
TOML keys, the ``PQD_*`` variables, the flags (pqd.cli), the checks (pqd.config.check), ``--help``
and the example config (pqd.config.doc) all follow from those fields.

Everything here is pure data and validation. Only :func:`config_from_file` does I/O (it reads the
file it is given); the environment is read only through the mappings passed in, so the daemon can
re-run :func:`load_config` on SIGHUP and tests can feed plain dicts.

Every problem becomes one :class:`ConfigError` whose text is a single line naming the setting the
way the user wrote it (``probes.fast.workers``, ``PQD_WORKERS`` or ``--workers``) and the value.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Final

from pqd.config import toml_bounds
from pqd.config.check import (
    ALL_PROBES,
    GLOBAL,
    Source,
    Sources,
    Validator,
    probe_name_problem,
    probe_scope,
)
from pqd.config.kinds import KINDS, toml_path
from pqd.errors import NO_VALUE, ConfigError, decode_utf8, did_you_mean, read_config_bytes
from pqd.probe import ProbeConfig
from pqd.settings_table import Setting, Spec, setting, settings_of

LOG_FORMATS: Final = ("logfmt", "json")
#: Where each probe's processes live (docs/design.md §1a); "auto" picks cgroup where it can.
CONTAINMENT_MODES: Final = ("auto", "cgroup", "subreaper")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")

ENV_PREFIX: Final = "PQD_"
CONFIG_ENV: Final = "PQD_CONFIG"

#: Bounds on what a config file may cost to read (README, "Configuration"): a config file is a
#: regular file of at most MAX_CONFIG_BYTES, with at most MAX_PROBES probes.
MAX_CONFIG_BYTES: Final = 1024 * 1024
MAX_PROBES: Final = 100


@dataclass(frozen=True)
class Config:
    listen_address: str = setting(
        ":10029",
        Spec(
            "listen_address",
            "Address to serve HTTP on, [host]:port; an empty host means all interfaces",
            "HOST:PORT",
            daemon_only=True,
            note="HTTP: /metrics, / (the probes and their recent cycles), /-/healthy, /-/ready.",
        ),
    )
    log_format: str = setting(
        "logfmt",
        Spec(
            "enum",
            "How each log line on stderr is written",
            "FORMAT",
            choices=LOG_FORMATS,
            daemon_only=True,
            note="One line per event (to journald in the systemd unit).",
        ),
    )
    log_level: str = setting(
        "info",
        Spec(
            "enum", "The least severe events logged", "LEVEL", choices=LOG_LEVELS, daemon_only=True
        ),
    )
    history_limit: int = setting(
        50,
        Spec(
            "int",
            "Recent cycles kept per probe for the web pages and /cycles/ID",
            "N",
            # The web history holds whole traces; an unbounded limit is a slow memory leak.
            range=(1, 100_000),
            daemon_only=True,
            note="Failed cycles are kept longer.",
        ),
    )
    enable_reload_endpoint: bool = setting(
        False,
        Spec(
            "bool",
            "Serve POST /-/reload, like Prometheus' --web.enable-lifecycle",
            "BOOL",
            note="When off, SIGHUP (systemctl reload) does the same without exposing it over HTTP.",
        ),
    )
    # Read by the web layer (pqd.http.webconfig).
    web_config_file: str | None = setting(
        None,
        Spec(
            "path",
            "exporter-toolkit web config file (TLS, basic auth), as Prometheus' --web.config.file",
            "PATH",
            daemon_only=True,
            unset="no web config",
            example="/etc/pqd/web.yml",
        ),
    )
    # docs/design.md §1a.
    containment: str = setting(
        "auto",
        Spec(
            "enum",
            "Where each probe's runner and everything it starts live",
            "MODE",
            choices=CONTAINMENT_MODES,
            note='"cgroup": a child cgroup per probe, killed with cgroup.kill; it needs a '
            "writable delegated cgroup v2 subtree, which the unit's Delegate=yes gives. "
            '"subreaper": the runner collects every orphan of its tree. "auto": cgroup where '
            "pqd has one. /metrics shows the choice in pqd_probe_info{containment}.",
        ),
    )
    probes: tuple[ProbeConfig, ...] = (ProbeConfig(),)


#: The table: top-level settings, then per-probe ones (as overrides, they apply to every probe).
GLOBAL_SETTINGS: Final = settings_of(Config, per_probe=False)
PROBE_SETTINGS: Final = settings_of(ProbeConfig, per_probe=True)
SETTINGS: Final[Mapping[str, Setting]] = {s.name: s for s in (*GLOBAL_SETTINGS, *PROBE_SETTINGS)}
GLOBAL_FIELDS: Final = tuple(s.name for s in GLOBAL_SETTINGS)
PROBE_FIELDS: Final = tuple(s.name for s in PROBE_SETTINGS)
#: Keys accepted by :func:`apply_overrides` (and, upper-cased with ``PQD_``, as env variables).
OVERRIDE_FIELDS: Final = GLOBAL_FIELDS + PROBE_FIELDS


#: Each ``one_of`` group's fields, e.g. {"schedule": ("interval", "cron")}.
ONE_OF_GROUPS: Final[Mapping[str, tuple[str, ...]]] = {
    group: tuple(s.name for s in SETTINGS.values() if s.spec.one_of == group)
    for group in dict.fromkeys(s.spec.one_of for s in SETTINGS.values() if s.spec.one_of)
}


def _unset_rest(given: Collection[str]) -> dict[str, None]:
    """A layer that sets one field of a ``one_of`` group (interval or cron) unsets the others it
    leaves out: the newer layer's choice wins."""
    return {
        name: None
        for names in ONE_OF_GROUPS.values()
        if any(name in given for name in names)
        for name in names
        if name not in given
    }


#: What is wrong with a probe's ``python`` as an interpreter, or None: the check that runs it
#: (pqd.supervisor.interpreter.Interpreters.problem), passed in by the commands that need it.
PythonCheck = Callable[[str], "str | None"]


def _validate(config: Config, sources: Sources, python: PythonCheck | None = None) -> None:
    Validator(config, sources, GLOBAL_SETTINGS, PROBE_SETTINGS, python).run()


def _unknown_key(key: str, known: tuple[str, ...]) -> str:
    hint = did_you_mean(key, known, list_known=False)
    return f"unknown key ({hint})" if hint else "unknown key"


def _misplaced_key(key: str, *, top_level: bool) -> str | None:
    """Why a known setting is refused where it stands, or None if it is not one: a probe
    setting at the top level (``workers = 4`` before any table) or a top-level one in a
    probe's table (written after its header)."""
    if top_level and key in PROBE_FIELDS:
        return (
            f"not a top-level key: {key} is a probe setting and belongs under [probes.NAME] "
            f"({env_origin(key)} or {flag_origin(key)} sets it for every probe)"
        )
    if not top_level and key in GLOBAL_FIELDS:
        return f"not a probe setting: {key} is a top-level key and belongs before any [probes.NAME]"
    return None


# --------------------------------------------------------------------------------------------------
# Layers


def _from_toml(setting: Setting, value: object, where: str) -> object:
    try:
        return KINDS[setting.spec.kind].from_toml(setting, value)
    except ValueError as err:
        raise ConfigError(where, value, str(err)) from None


def _mapping_layer(data: Mapping[str, object], sources: Sources) -> Config:
    settings: dict[str, object] = {}
    for key, value in data.items():
        if key == "probes":
            continue
        if key not in GLOBAL_FIELDS:
            problem = _misplaced_key(key, top_level=True)
            known = (*GLOBAL_FIELDS, "probes")
            raise ConfigError(toml_path(key), value, problem or _unknown_key(key, known))
        settings[key] = _from_toml(SETTINGS[key], value, toml_path(key))
        sources.add(GLOBAL, key, Source(0, toml_path(key), value))
    if "probes" in data:
        settings["probes"] = _probes_from_toml(data["probes"], sources)
    return dataclasses.replace(Config(), **settings)  # type: ignore[arg-type]


def _probes_from_toml(tables: object, sources: Sources) -> tuple[ProbeConfig, ...]:
    if not isinstance(tables, Mapping):
        raise ConfigError("probes", tables, "must be a table of probes, e.g. [probes.default]")
    if not tables:
        raise ConfigError(
            "probes", dict(tables), "must define at least one probe, e.g. [probes.default]"
        )
    if len(tables) > MAX_PROBES:
        raise ConfigError("probes", f"{len(tables)} probes", f"at most {MAX_PROBES} are allowed")
    return tuple(_probe_from_toml(name, table, sources) for name, table in tables.items())


def _probe_from_toml(name: str, table: object, sources: Sources) -> ProbeConfig:
    where = toml_path("probes", name)
    problem = probe_name_problem(name)
    if problem is not None:
        raise ConfigError("probes", name, problem)
    if not isinstance(table, Mapping):
        raise ConfigError(where, table, f"must be a table: [{where}]")
    settings: dict[str, object] = {"name": name}
    for key, value in table.items():
        path = toml_path("probes", name, key)
        if key not in PROBE_FIELDS:
            problem = _misplaced_key(key, top_level=False)
            raise ConfigError(path, value, problem or _unknown_key(key, PROBE_FIELDS))
        settings[key] = _from_toml(SETTINGS[key], value, path)
        sources.add(probe_scope(name), key, Source(0, path, value))
    settings.update(_unset_rest(table))
    return ProbeConfig(**settings)  # type: ignore[arg-type]


def _overrides_layer(
    config: Config,
    overrides: Mapping[str, str],
    origin: Callable[[str], str],
    rank: int,
    sources: Sources,
) -> Config:
    for key, raw in overrides.items():
        if key not in OVERRIDE_FIELDS:
            raise ConfigError(origin(key), raw, "unknown setting")
        if not isinstance(raw, str):
            raise ConfigError(origin(key), raw, "must be given as a string")
    _check_one_of(overrides, origin)
    settings: dict[str, object] = {}
    probe_settings: dict[str, object] = {}
    for field in OVERRIDE_FIELDS:
        if field not in overrides:
            continue
        raw, setting = overrides[field], SETTINGS[field]
        try:
            value = KINDS[setting.spec.kind].from_text(setting, raw)
        except ValueError as err:
            raise ConfigError(origin(field), raw, str(err)) from None
        if setting.per_probe:
            probe_settings[field] = value
            sources.add(ALL_PROBES, field, Source(rank, origin(field), raw, all_probes=True))
        else:
            settings[field] = value
            sources.add(GLOBAL, field, Source(rank, origin(field), raw))
    for field, unset in _unset_rest(overrides).items():
        (probe_settings if SETTINGS[field].per_probe else settings)[field] = unset
    if probe_settings:
        settings["probes"] = tuple(
            dataclasses.replace(probe, **probe_settings)  # type: ignore[arg-type]
            for probe in config.probes
        )
    return dataclasses.replace(config, **settings)  # type: ignore[arg-type]


def _check_one_of(overrides: Mapping[str, str], origin: Callable[[str], str]) -> None:
    """Two fields of one ``one_of`` group (interval and cron) in one layer: which one is meant?"""
    for names in ONE_OF_GROUPS.values():
        given = [name for name in names if name in overrides]
        if len(given) > 1:
            raise ConfigError(
                origin(given[1]),
                overrides[given[1]],
                f"cannot be combined with {origin(given[0])}; set only one of them",
            )


def _toml_layer(
    text: str, source: str, sources: Sources, python: PythonCheck | None = None
) -> Config:
    toml_bounds.check(text, source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise _syntax_error(err, text, source) from None
    except RecursionError:  # tomllib parses nested arrays and inline tables recursively
        raise ConfigError(source, NO_VALUE, "invalid TOML: nested too deeply") from None
    config = _mapping_layer(data, sources)
    _validate(config, sources, python)
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
    shown = line_text.rstrip("\r")[:200]
    return ConfigError(source, shown or NO_VALUE, f"invalid TOML {where}: {message}")


def _file_layer(path: str, sources: Sources, python: PythonCheck | None = None) -> Config:
    data = read_config_bytes(path, MAX_CONFIG_BYTES, field=path, cannot="cannot read config file")
    return _toml_layer(decode_utf8(data, path), path, sources, python)


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
    sources = Sources()
    config = _mapping_layer(data, sources)
    _validate(config, sources)
    return config


def config_from_toml(text: str, *, source: str = "<toml>") -> Config:
    """TOML text -> validated Config; ``source`` names the text in syntax errors."""
    return _toml_layer(text, source, Sources())


def config_from_file(path: str, *, python: PythonCheck | None = None) -> Config:
    """Read and validate a TOML config file; a missing or unreadable file is a ConfigError.
    ``python`` also checks each probe's interpreter."""
    return _file_layer(path, Sources(), python)


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
            hint = did_you_mean(field, (*OVERRIDE_FIELDS, "config"), spell=env_origin)
            raise ConfigError(name, raw, f"unknown environment variable ({hint})")
        overrides[field] = raw
    return overrides


def apply_overrides(
    config: Config, overrides: Mapping[str, str], *, origin: Callable[[str], str]
) -> Config:
    """Apply raw string overrides (probe fields to every probe) and validate the result.

    ``origin(field)`` is how errors name a setting, e.g. :func:`env_origin` or :func:`flag_origin`.
    """
    sources = Sources()
    config = _overrides_layer(config, overrides, origin, 1, sources)
    _validate(config, sources)
    return config


def load_config(
    path: str | None,
    environ: Mapping[str, str],
    flag_overrides: Mapping[str, str],
    *,
    python: PythonCheck | None = None,
) -> Config:
    """Defaults < TOML file (``path``, else ``PQD_CONFIG``) < ``PQD_*`` environment < flags.

    The file is validated on its own; environment and flags are validated together, so a flag can
    repair what an environment variable alone would break. ``python`` also checks each probe's
    interpreter, once all layers are merged.
    """
    sources = Sources()
    if path is None:
        path = config_path_from_env(environ)
    config = Config() if path is None else _file_layer(path, sources)
    env = overrides_from_env(environ)
    config = _overrides_layer(config, env, env_origin, 1, sources)
    config = _overrides_layer(config, flag_overrides, flag_origin, 2, sources)
    _validate(config, sources, python)
    return config


def config_to_toml(config: Config) -> str:
    """The TOML that :func:`config_from_toml` reads back into an equal Config (values must be
    valid: durations are written in milliseconds precision)."""
    lines = [_toml_line(s, config) for s in GLOBAL_SETTINGS if getattr(config, s.name) is not None]
    for probe in config.probes:
        lines += ["", f"[{toml_path('probes', probe.name)}]"]
        lines += [
            _toml_line(s, probe) for s in PROBE_SETTINGS if getattr(probe, s.name) is not None
        ]
    return "\n".join(lines) + "\n"


def _toml_line(setting: Setting, obj: object) -> str:
    return f"{setting.name} = {KINDS[setting.spec.kind].text(getattr(obj, setting.name))}"
