"""Unit tests for pqd.config.load: plain data in, Config or one-line ConfigError out."""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from pqd.config.kinds import KINDS
from pqd.config.load import (
    GLOBAL_FIELDS,
    ONE_OF_GROUPS,
    OVERRIDE_FIELDS,
    PROBE_FIELDS,
    SETTINGS,
    Config,
    apply_overrides,
    config_from_file,
    config_from_mapping,
    config_from_toml,
    config_path_from_env,
    config_to_toml,
    env_origin,
    flag_origin,
    load_config,
    overrides_from_env,
)
from pqd.config.syntax import format_duration, parse_duration, split_listen_address
from pqd.errors import ConfigError, did_you_mean, echo
from pqd.probe import ProbeConfig

FULL_TOML = """\
listen_address = "127.0.0.1:9999"
log_format = "json"
log_level = "debug"
history_limit = 20
enable_reload_endpoint = true
web_config_file = "/etc/pqd/web.yml"

[probes.fast]
start_method = "spawn"
workers = 2
queue_maxsize = 7
rounds = 3
items_per_producer = 9
job_pause = "250ms"
timeout = "1m30s"
interval = "5s"

[probes.nightly]
start_method = "fork"
workers = 8
cron = "*/5 * * * *"
"""


# --------------------------------------------------------------------------------------------------
# Defaults and TOML


def test_defaults_are_the_seed_shape() -> None:
    config = load_config(None, {}, {})
    assert config == Config()
    assert config.listen_address == ":10029"
    assert (config.log_format, config.log_level) == ("logfmt", "info")
    assert config.history_limit == 50
    assert config.enable_reload_endpoint is False
    assert config.web_config_file is None
    (probe,) = config.probes
    assert probe == ProbeConfig(
        name="default",
        start_method="forkserver",
        workers=4,
        queue_maxsize=3,
        rounds=5,
        items_per_producer=5,
        job_pause=0.0,
        timeout=30.0,
        interval=15.0,
        cron=None,
    )


def test_config_is_frozen() -> None:
    config = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.log_level = "debug"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.probes[0].workers = 1  # type: ignore[misc]


def test_full_toml_with_two_probes() -> None:
    config = config_from_toml(FULL_TOML)
    assert config.listen_address == "127.0.0.1:9999"
    assert config.log_format == "json"
    assert config.log_level == "debug"
    assert config.history_limit == 20
    assert config.enable_reload_endpoint is True
    assert config.web_config_file == "/etc/pqd/web.yml"
    assert config.probes == (
        ProbeConfig(
            name="fast",
            start_method="spawn",
            workers=2,
            queue_maxsize=7,
            rounds=3,
            items_per_producer=9,
            job_pause=0.25,
            timeout=90.0,
            interval=5.0,
            cron=None,
        ),
        # Unset keys keep the defaults; cron without interval means no interval.
        ProbeConfig(
            name="nightly", start_method="fork", workers=8, interval=None, cron="*/5 * * * *"
        ),
    )


def test_config_to_toml_round_trips() -> None:
    config = config_from_toml(FULL_TOML)
    text = config_to_toml(config)
    assert config_from_toml(text) == config
    assert 'interval = "5s"' in text
    assert 'cron = "*/5 * * * *"' in text


def test_round_trip_of_odd_probe_names_keeps_file_order() -> None:
    names = ["zeta", "<script>alert(1)</script>", 'quote " and \\ back', "ünïcødé name", "a"]
    config = Config(probes=tuple(ProbeConfig(name=n) for n in names))
    again = config_from_toml(config_to_toml(config))
    assert [p.name for p in again.probes] == names
    assert again == config


def test_no_probes_table_gives_the_default_probe() -> None:
    config = config_from_toml('log_level = "warning"\n')
    assert config.log_level == "warning"
    assert config.probes == (ProbeConfig(),)


def test_empty_document_gives_defaults() -> None:
    assert config_from_toml("") == Config()
    assert config_from_mapping({}) == Config()


def test_config_from_mapping_takes_a_parsed_document() -> None:
    config = config_from_mapping({"probes": {"p": {"workers": 16, "timeout": "2m"}}})
    assert config.probes == (ProbeConfig(name="p", workers=16, timeout=120.0),)


def test_config_from_file_reads_toml(tmp_path: Path) -> None:
    path = tmp_path / "pqd.toml"
    path.write_text(FULL_TOML, encoding="utf-8")
    assert config_from_file(str(path)) == config_from_toml(FULL_TOML)


@pytest.mark.parametrize(
    ("setup", "problem"),
    [
        (lambda p: None, "No such file or directory"),
        (lambda p: p.mkdir(), "not a regular file"),
        (lambda p: p.write_bytes(b'log_level = "\xff"\n'), "not UTF-8"),
    ],
    ids=["missing", "directory", "not-utf8"],
)
def test_config_from_file_problems_name_the_path(
    tmp_path: Path, setup: Callable[[Path], object], problem: str
) -> None:
    path = tmp_path / "pqd.toml"
    setup(path)
    with pytest.raises(ConfigError) as info:
        config_from_file(str(path))
    assert info.value.field == str(path)
    assert problem in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('log_level = "info"\nworkers = = 4\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config_from_file(str(path))
    err = info.value
    assert err.field == str(path)
    assert err.value == "workers = = 4"
    assert "line 2, column 11" in err.problem
    assert "\n" not in str(err)


def test_config_error_format_and_pickling() -> None:
    err = ConfigError("probes.fast.workers", 0, "must be an integer >= 1")
    assert str(err) == "probes.fast.workers=0: must be an integer >= 1"
    again = pickle.loads(pickle.dumps(err))
    assert (again.field, again.value, again.problem) == (err.field, err.value, err.problem)
    assert str(again) == str(err)


def test_config_error_escapes_line_breaks() -> None:
    err = ConfigError("a\nb", "x\r\ny\u2028", "bad\nthing")
    assert len(str(err).splitlines()) == 1
    assert str(err) == "a\\nb='x\\r\\ny\\u2028': bad\\nthing"


# --------------------------------------------------------------------------------------------------
# Precedence and overrides


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "pqd.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'log_level = "debug"\nhistory_limit = 7\n[probes.a]\nworkers = 2\ntimeout = "10s"\n',
    )
    env = {"PQD_WORKERS": "3", "PQD_HISTORY_LIMIT": "8", "HOME": "/root"}
    flags = {"workers": "5"}

    from_file = load_config(path, {}, {})
    assert (from_file.probes[0].workers, from_file.history_limit) == (2, 7)

    with_env = load_config(path, env, {})
    assert (with_env.probes[0].workers, with_env.history_limit) == (3, 8)

    with_flags = load_config(path, env, flags)
    assert (with_flags.probes[0].workers, with_flags.history_limit) == (5, 8)
    # Whatever no higher layer touched still comes from the file, then the defaults.
    assert with_flags.log_level == "debug"
    assert with_flags.probes[0].timeout == 10.0
    assert with_flags.probes[0].queue_maxsize == 3


def test_config_path_from_env_is_used_only_without_a_path(tmp_path: Path) -> None:
    env_file = tmp_path / "env.toml"
    env_file.write_text('log_level = "error"\n', encoding="utf-8")
    flag_file = tmp_path / "flag.toml"
    flag_file.write_text('log_level = "warning"\n', encoding="utf-8")
    environ = {"PQD_CONFIG": str(env_file)}
    assert config_path_from_env(environ) == str(env_file)
    assert config_path_from_env({}) is None
    assert config_path_from_env({"PQD_CONFIG": ""}) is None
    assert load_config(None, environ, {}).log_level == "error"
    assert load_config(str(flag_file), environ, {}).log_level == "warning"


def test_overrides_from_env_keeps_only_settings() -> None:
    environ = {
        "PQD_CONFIG": "/etc/pqd.toml",
        "PQD_WORKERS": "8",
        "PQD_LISTEN_ADDRESS": ":9",
        "PATH": "/bin",
        "XPQD_WHATEVER": "1",
    }
    assert overrides_from_env(environ) == {"workers": "8", "listen_address": ":9"}


def test_every_override_field_has_an_env_variable() -> None:
    environ = {env_origin(f): "x" for f in OVERRIDE_FIELDS}
    assert set(overrides_from_env(environ)) == set(OVERRIDE_FIELDS)


def test_probe_overrides_apply_to_every_probe() -> None:
    config = config_from_toml(FULL_TOML)
    changed = apply_overrides(config, {"workers": "16", "rounds": "2"}, origin=flag_origin)
    assert [p.workers for p in changed.probes] == [16, 16]
    assert [p.rounds for p in changed.probes] == [2, 2]
    assert [p.start_method for p in changed.probes] == ["spawn", "fork"]
    assert config.probes[0].workers == 2  # the input is untouched


def test_interval_override_clears_cron_and_vice_versa() -> None:
    config = config_from_toml(FULL_TOML)
    by_interval = apply_overrides(config, {"interval": "1m"}, origin=env_origin)
    assert [(p.interval, p.cron) for p in by_interval.probes] == [(60.0, None), (60.0, None)]
    by_cron = apply_overrides(config, {"cron": "0 * * * mon-fri"}, origin=env_origin)
    assert [(p.interval, p.cron) for p in by_cron.probes] == [(None, "0 * * * mon-fri")] * 2


def test_flag_schedule_beats_env_schedule() -> None:
    config = load_config(None, {"PQD_CRON": "*/2 * * * *"}, {"interval": "45s"})
    assert (config.probes[0].interval, config.probes[0].cron) == (45.0, None)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *[("true", True), ("TRUE", True), ("Yes", True), ("1", True)],
        *[("false", False), ("No", False), ("0", False), ("FaLsE", False)],
    ],
)
def test_boolean_overrides(raw: str, expected: bool) -> None:
    start = Config(enable_reload_endpoint=not expected)
    config = apply_overrides(start, {"enable_reload_endpoint": raw}, origin=flag_origin)
    assert config.enable_reload_endpoint is expected


def test_empty_web_config_override_switches_it_off() -> None:
    start = Config(web_config_file="/etc/pqd/web.yml")
    assert (
        apply_overrides(start, {"web_config_file": ""}, origin=env_origin).web_config_file is None
    )
    changed = apply_overrides(start, {"web_config_file": "/x.yml"}, origin=env_origin)
    assert changed.web_config_file == "/x.yml"


def test_all_fields_override_from_strings() -> None:
    flags = {
        "listen_address": "[::1]:9100",
        "log_format": "json",
        "log_level": "error",
        "history_limit": "3",
        "enable_reload_endpoint": "yes",
        "web_config_file": "/w.yml",
        "start_method": "spawn",
        "workers": "1",
        "queue_maxsize": "1000000",
        "rounds": "100000",
        "items_per_producer": "1",
        "job_pause": "0s",
        "timeout": "1y",
        "cron": "0 0 1 jan *",
    }
    config = apply_overrides(Config(), flags, origin=flag_origin)
    assert config == Config(
        listen_address="[::1]:9100",
        log_format="json",
        log_level="error",
        history_limit=3,
        enable_reload_endpoint=True,
        web_config_file="/w.yml",
        probes=(
            ProbeConfig(
                start_method="spawn",
                workers=1,
                queue_maxsize=1_000_000,
                rounds=100_000,
                items_per_producer=1,
                job_pause=0.0,
                timeout=365 * 86400.0,
                interval=None,
                cron="0 0 1 jan *",
            ),
        ),
    )


def test_timeout_check_blames_the_override_that_broke_it(tmp_path: Path) -> None:
    path = _write(tmp_path, '[probes.a]\ntimeout = "10s"\n[probes.b]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, {"PQD_JOB_PAUSE": "2s"}, {})
    err = info.value
    assert (err.field, err.value) == ("PQD_JOB_PAUSE", "2s")
    # It names the timeout it broke, its value, the minimum and which probe.
    assert "timeout 10s" in err.problem
    assert "20s" in err.problem
    assert "'a'" in err.problem


def test_flags_can_repair_what_env_alone_would_break() -> None:
    environ = {"PQD_JOB_PAUSE": "20s"}
    with pytest.raises(ConfigError):
        load_config(None, environ, {})
    config = load_config(None, environ, {"timeout": "10m"})
    assert (config.probes[0].job_pause, config.probes[0].timeout) == (20.0, 600.0)


def test_timeout_must_strictly_exceed_the_work() -> None:
    # 2 * 5 rounds * 100ms = 1s exactly: not enough; float sums must not blur the boundary.
    ok = apply_overrides(Config(), {"job_pause": "100ms", "timeout": "1001ms"}, origin=flag_origin)
    assert ok.probes[0].timeout == 1.001
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), {"job_pause": "100ms", "timeout": "1s"}, origin=flag_origin)
    assert (info.value.field, info.value.value) == ("--timeout", "1s")
    assert "1s" in info.value.problem


def test_toml_timeout_error_names_the_key_the_user_wrote() -> None:
    text = '[probes.slow]\njob_pause = "3s"\n'
    with pytest.raises(ConfigError) as info:
        config_from_toml(text)
    assert (info.value.field, info.value.value) == ("probes.slow.job_pause", "3s")
    assert "timeout 30s" in info.value.problem
    with pytest.raises(ConfigError) as info:
        config_from_toml(text + 'timeout = "30s"\n')
    assert (info.value.field, info.value.value) == ("probes.slow.timeout", "30s")


def test_invalid_config_built_in_code_is_named_by_toml_path() -> None:
    config = Config(probes=(ProbeConfig(name="x", job_pause=-1.0),))
    with pytest.raises(ConfigError) as info:
        apply_overrides(config, {}, origin=flag_origin)
    assert (info.value.field, info.value.value) == ("probes.x.job_pause", -1.0)


def test_probe_names_need_only_be_printable_text() -> None:
    name = "<script>alert(1)</script>"
    config = config_from_toml(f'[probes."{name}"]\n[probes."{"n" * 128}"]\n')
    assert [p.name for p in config.probes] == [name, "n" * 128]


# --------------------------------------------------------------------------------------------------
# Durations and listen addresses


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("0ms", 0.0),
        ("500ms", 0.5),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("2w", 14 * 86400.0),
        ("1y", 365 * 86400.0),
        ("1y2w3d4h5m6s7ms", 365 * 86400 + 17 * 86400 + 4 * 3600 + 5 * 60 + 6.007),
        ("90s", 90.0),
        ("1500ms", 1.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds, abs=1e-9)


@pytest.mark.parametrize(
    "text",
    [
        *["", "s", "30", "1.5s", "-1s", "+1s", " 1s", "1s ", "30S", "1m1h", "1s1s", "1h 30m"],
        *["5x", "1e3s", "ms", "\u0661s", "1_000s", "9999999y"],
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.5, "500ms"),
        (1.5, "1s500ms"),
        (30.0, "30s"),
        (90.0, "1m30s"),
        (5400.0, "1h30m"),
        (86400.0, "1d"),
        (8 * 86400.0, "8d"),  # like Prometheus: weeks only when they divide exactly
        (14 * 86400.0, "2w"),
        (365 * 86400.0, "1y"),
        (90 * 86400.0, "90d"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("seconds", [-1.0, float("inf"), float("nan")])
def test_format_duration_rejects(seconds: float) -> None:
    with pytest.raises(ValueError):
        format_duration(seconds)


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        (":10029", "", 10029),
        ("0.0.0.0:0", "0.0.0.0", 0),
        ("localhost:65535", "localhost", 65535),
        ("pqd-1.example.com:80", "pqd-1.example.com", 80),
        ("[::]:9", "::", 9),
        ("[::1]:10029", "::1", 10029),
    ],
)
def test_split_listen_address(address: str, host: str, port: int) -> None:
    assert split_listen_address(address) == (host, port)
    assert config_from_mapping({"listen_address": address}).listen_address == address


# --------------------------------------------------------------------------------------------------
# Bad input, table-driven: one line naming the field as written and the value


def _toml(text: str) -> Callable[[], object]:
    return lambda: config_from_toml(text)


def _probe(body: str) -> Callable[[], object]:
    return _toml("[probes.fast]\n" + body + "\n")


def _env(**environ: str) -> Callable[[], object]:
    return lambda: load_config(None, environ, {})


def _flags(**flags: str) -> Callable[[], object]:
    return lambda: apply_overrides(Config(), flags, origin=flag_origin)


BAD_INPUTS: list[tuple[str, Callable[[], object], str, object]] = [
    # TOML
    ("workers-zero", _probe("workers = 0"), "probes.fast.workers", 0),
    ("workers-bool", _probe("workers = true"), "probes.fast.workers", True),
    ("workers-too-many", _probe("workers = 257"), "probes.fast.workers", 257),
    ("maxsize-zero", _probe("queue_maxsize = 0"), "probes.fast.queue_maxsize", 0),
    ("rounds-float", _probe("rounds = 1.5"), "probes.fast.rounds", 1.5),
    ("items-string", _probe('items_per_producer = "5"'), "probes.fast.items_per_producer", "5"),
    ("pause-number", _probe("job_pause = 5"), "probes.fast.job_pause", 5),
    ("pause-negative", _probe('job_pause = "-1s"'), "probes.fast.job_pause", "-1s"),
    ("timeout-zero", _probe('timeout = "0s"'), "probes.fast.timeout", "0s"),
    (
        "timeout-too-short",
        _probe('job_pause = "1s"\ntimeout = "10s"'),
        "probes.fast.timeout",
        "10s",
    ),
    ("interval-zero", _probe('interval = "0s"'), "probes.fast.interval", "0s"),
    (
        "interval-and-cron",
        _probe('interval = "5s"\ncron = "* * * * *"'),
        "probes.fast.cron",
        "* * * * *",
    ),
    ("cron-range", _probe('cron = "61 * * * *"'), "probes.fast.cron", "61 * * * *"),
    ("cron-fields", _probe('cron = "* * * *"'), "probes.fast.cron", "* * * *"),
    ("cron-weekday-number", _probe('cron = "0 9 * * 1-5"'), "probes.fast.cron", "0 9 * * 1-5"),
    ("start-method", _probe('start_method = "threads"'), "probes.fast.start_method", "threads"),
    ("probe-unknown-key", _probe("workerz = 4"), "probes.fast.workerz", 4),
    ("probe-nested-table", _toml("[probes.fast.extra]\n"), "probes.fast.extra", {}),
    ("top-unknown-key", _toml('listen_adress = ":1"'), "listen_adress", ":1"),
    ("log-format", _toml('log_format = "xml"'), "log_format", "xml"),
    ("log-level-case", _toml('log_level = "INFO"'), "log_level", "INFO"),
    ("listen-no-port", _toml('listen_address = "10029"'), "listen_address", "10029"),
    ("listen-port-range", _toml('listen_address = ":70000"'), "listen_address", ":70000"),
    ("listen-bare-v6", _toml('listen_address = "::1:80"'), "listen_address", "::1:80"),
    ("listen-bad-ipv4", _toml('listen_address = "1.2.3.999:80"'), "listen_address", "1.2.3.999:80"),
    ("history-zero", _toml("history_limit = 0"), "history_limit", 0),
    ("reload-string", _toml('enable_reload_endpoint = "yes"'), "enable_reload_endpoint", "yes"),
    ("web-config-empty", _toml('web_config_file = ""'), "web_config_file", ""),
    ("probes-empty", _toml("[probes]\n"), "probes", {}),
    ("probes-not-table", _toml("probes = 3"), "probes", 3),
    ("probe-not-table", _toml("probes.fast = 3"), "probes.fast", 3),
    # Echoed cut to its first 80 characters, with its length.
    ("probe-name-long", _toml(f"[probes.{'n' * 129}]"), "probes", "n" * 80),
    ("probe-name-control", _toml('[probes."a\\tb"]'), "probes", "a\tb"),
    ("toml-syntax", _toml('log_level = "info"\nrounds = = 4'), "<toml>", "rounds = = 4"),
    # Environment
    ("env-workers-zero", _env(PQD_WORKERS="0"), "PQD_WORKERS", "0"),
    ("env-workers-word", _env(PQD_WORKERS="four"), "PQD_WORKERS", "four"),
    ("env-workers-space", _env(PQD_WORKERS=" 4"), "PQD_WORKERS", " 4"),
    ("env-pause-decimal", _env(PQD_JOB_PAUSE="1.5s"), "PQD_JOB_PAUSE", "1.5s"),
    ("env-pause-breaks-timeout", _env(PQD_JOB_PAUSE="20s"), "PQD_JOB_PAUSE", "20s"),
    ("env-bool", _env(PQD_ENABLE_RELOAD_ENDPOINT="maybe"), "PQD_ENABLE_RELOAD_ENDPOINT", "maybe"),
    ("env-log-level", _env(PQD_LOG_LEVEL="verbose"), "PQD_LOG_LEVEL", "verbose"),
    ("env-unknown", _env(PQD_WORKRS="4"), "PQD_WORKRS", "4"),
    ("env-lowercase", _env(PQD_workers="4"), "PQD_workers", "4"),
    ("env-cron", _env(PQD_CRON="* * *"), "PQD_CRON", "* * *"),
    ("env-listen-no-port", _env(PQD_LISTEN_ADDRESS="[::1]"), "PQD_LISTEN_ADDRESS", "[::1]"),
    ("env-missing-file", _env(PQD_CONFIG="/nonexistent/pqd.toml"), "/nonexistent/pqd.toml", None),
    # Flags
    ("flag-timeout-zero", _flags(timeout="0s"), "--timeout", "0s"),
    ("flag-interval-negative", _flags(interval="-5s"), "--interval", "-5s"),
    ("flag-interval-no-unit", _flags(interval="15"), "--interval", "15"),
    ("flag-timeout-over-a-year", _flags(timeout="2y"), "--timeout", "2y"),
    ("flag-rounds-exponent", _flags(rounds="1e3"), "--rounds", "1e3"),
    ("flag-start-method-case", _flags(start_method="Fork"), "--start-method", "Fork"),
    ("flag-history-negative", _flags(history_limit="-1"), "--history-limit", "-1"),
    ("flag-web-config-nul", _flags(web_config_file="a\0b"), "--web-config-file", "a\0b"),
    ("flag-host-space", _flags(listen_address="my host:80"), "--listen-address", "my host:80"),
    ("flag-cron-and-interval", _flags(cron="* * * * *", interval="5s"), "--cron", "* * * * *"),
    ("flag-unknown", _flags(bogus="1"), "--bogus", "1"),
]


@pytest.mark.parametrize(
    ("make", "field", "value"),
    [case[1:] for case in BAD_INPUTS],
    ids=[case[0] for case in BAD_INPUTS],
)
def test_bad_input_is_one_line_naming_field_and_value(
    make: Callable[[], object], field: str, value: object
) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    err = info.value
    text = str(err)
    assert "\n" not in text and len(text.splitlines()) == 1
    assert err.field == field
    assert text.startswith(f"{field}=")
    shown = field if value is None else value  # file problems show the path
    assert repr(shown) in text
    assert err.problem and text.endswith(err.problem)


def test_bad_input_table_is_big_and_covers_every_source() -> None:
    fields = [case[2] for case in BAD_INPUTS]
    assert len(BAD_INPUTS) >= 25
    assert sum(f.startswith("PQD_") for f in fields) >= 5
    assert sum(f.startswith("--") for f in fields) >= 5
    assert len({case[0] for case in BAD_INPUTS}) == len(BAD_INPUTS)


#: A valid TOML value of every probe setting, as a line of a probe's table would give it.
PROBE_VALUES = {
    "start_method": '"spawn"',
    "workers": "2",
    "queue_maxsize": "5",
    "rounds": "2",
    "items_per_producer": "3",
    "shared_memory_bytes": "65536",
    "job_pause": '"10ms"',
    "timeout": '"20s"',
    "interval": '"30s"',
    "cron": '"*/5 * * * *"',
    "python": '"/usr/bin/python3"',
    "environment": '{ TMPDIR = "/tmp" }',
    "capture_stacks": "false",
}
#: And of every top-level one.
GLOBAL_VALUES = {
    "listen_address": '":9999"',
    "log_format": '"json"',
    "log_level": '"debug"',
    "history_limit": "20",
    "enable_reload_endpoint": "true",
    "web_config_file": '"/etc/pqd/web.yml"',
    "containment": '"subreaper"',
}


def test_the_tables_of_good_values_name_every_setting() -> None:
    assert tuple(PROBE_VALUES) == PROBE_FIELDS and tuple(GLOBAL_VALUES) == GLOBAL_FIELDS


@pytest.mark.parametrize("key", PROBE_VALUES)
def test_a_probe_setting_loads_in_a_probe_table_and_at_the_top_is_said_to_belong_there(
    key: str,
) -> None:
    """`workers = 4` at the top level was refused as a bare "unknown key"."""
    good = f"[probes.a]\n{key} = {PROBE_VALUES[key]}\n"
    probe = config_from_toml(good).probes[0]
    assert getattr(probe, key) != getattr(ProbeConfig(), key)  # the line took effect
    for bad in (f"{key} = {PROBE_VALUES[key]}\n", f"{key} = {PROBE_VALUES[key]}\n[probes.a]\n"):
        with pytest.raises(ConfigError) as info:
            config_from_toml(bad)
        assert info.value.field == key
        text = str(info.value)
        assert f"{key} is a probe setting and belongs under [probes.NAME]" in text, text
        assert f"{env_origin(key)} or {flag_origin(key)} sets it for every probe" in text
        assert "unknown key" not in text and len(text.splitlines()) == 1


@pytest.mark.parametrize("key", GLOBAL_VALUES)
def test_a_top_level_setting_in_a_probe_table_is_said_to_belong_at_the_top(key: str) -> None:
    config_from_toml(f"{key} = {GLOBAL_VALUES[key]}\n[probes.a]\n")
    with pytest.raises(ConfigError) as info:
        config_from_toml(f"[probes.a]\n{key} = {GLOBAL_VALUES[key]}\n")
    assert info.value.field == f"probes.a.{key}"
    assert f"{key} is a top-level key and belongs before any [probes.NAME]" in str(info.value)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (_probe("job_pause = 5"), 'expected a duration string like "30s"'),
        (_toml('log_format = "xml"'), "logfmt, json"),
        (_probe('start_method = "threads"'), "forkserver, spawn, fork"),
        (_probe("workerz = 4"), "did you mean workers?"),
        (_env(PQD_WORKRS="4"), "did you mean PQD_WORKERS?"),
        (_toml('log_level = "info"\nrounds = = 4'), "line 2, column 10"),
        (_probe('job_pause = "1s"\ntimeout = "10s"'), "2 * rounds * job_pause = 10s"),
    ],
)
def test_error_messages_help(make: Callable[[], object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert fragment in str(info.value)


# --------------------------------------------------------------------------------------------------
# The table of settings: each field's Spec drives TOML, PQD_*, flags, checks, --help, the example


@pytest.fixture
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps --help at the terminal's width


def _help(command: str, capsys: pytest.CaptureFixture[str]) -> str:
    from pqd.cli import main

    with pytest.raises(SystemExit) as info:
        main([command, "--help"], environ={})
    assert info.value.code == 0
    return capsys.readouterr().out


def test_every_setting_has_a_flag_with_its_metavar_and_help(
    wide: None, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help("run", capsys)
    assert "VALUE" not in text
    for setting in SETTINGS.values():
        flag = f"{flag_origin(setting.name)} {setting.spec.metavar}"
        assert flag in text, flag
        assert setting.spec.help in text, setting.name
    for fragment in ("--workers N", "--timeout DURATION", "--listen-address HOST:PORT"):
        assert fragment in text
    assert "(1 to 256; every probe; default: 4)" in text
    assert "(one of forkserver, spawn, fork; every probe; default: forkserver)" in text


def test_once_has_the_flags_of_the_settings_a_cycle_uses(
    wide: None, capsys: pytest.CaptureFixture[str]
) -> None:
    text = _help("once", capsys)
    for setting in SETTINGS.values():
        assert (flag_origin(setting.name) + " " in text) is not setting.spec.daemon_only, setting


def test_every_setting_is_a_toml_key_an_env_variable_and_a_flag() -> None:
    assert list(SETTINGS) == [*GLOBAL_FIELDS, *PROBE_FIELDS] == list(OVERRIDE_FIELDS)
    defaults = Config()
    for name, setting in SETTINGS.items():
        owner: object = defaults.probes[0] if setting.per_probe else defaults
        assert getattr(owner, name) == setting.default
        # Each default written as TOML, as an environment variable and as a flag reads back.
        text = KINDS[setting.spec.kind].text(setting.default) if setting.default is not None else ""
        table = "[probes.default]\n" if setting.per_probe else ""
        if setting.default is not None:
            assert config_from_toml(f"{table}{name} = {text}\n") == defaults, name
        raw = text.strip('"')
        if name not in ONE_OF_GROUPS["schedule"]:
            assert load_config(None, {env_origin(name): raw}, {}) == defaults, name
            assert load_config(None, {}, {name: raw}) == defaults, name


def test_interval_and_cron_are_one_of_a_group() -> None:
    assert ONE_OF_GROUPS == {"schedule": ("interval", "cron")}
    with pytest.raises(ConfigError, match="needs a schedule: set interval or cron"):
        apply_overrides(Config(probes=(ProbeConfig(interval=None),)), {}, origin=flag_origin)


@pytest.mark.parametrize(
    ("word", "choices", "expected"),
    [
        ("workerz", ("workers", "rounds"), "did you mean workers?"),
        ("zzz", ("workers", "rounds"), "known: workers, rounds"),
    ],
)
def test_one_did_you_mean(word: str, choices: tuple[str, ...], expected: str) -> None:
    assert did_you_mean(word, choices) == expected
    assert did_you_mean(word, choices, list_known=False) == expected * ("did" in expected)
    assert did_you_mean("workerz", ("workers",), spell=env_origin) == "did you mean PQD_WORKERS?"


def test_one_way_to_echo_a_value() -> None:
    assert echo("x" * 100) == repr("x" * 80) + "... (100 characters)"
    assert echo(["y" * 100]) == repr(["y" * 100])[:80] + "... (104 characters)"
    assert str(ConfigError("f" * 100, 1, "bad")) == "f" * 80 + "... (100 characters)=1: bad"


# --------------------------------------------------------------------------------------------------
# capture_stacks: a per-probe bool added as one table entry


def test_capture_stacks_defaults_to_true_and_is_set_per_probe() -> None:
    assert ProbeConfig().capture_stacks is True
    config = config_from_toml("[probes.a]\ncapture_stacks = false\n[probes.b]\n")
    assert [p.capture_stacks for p in config.probes] == [False, True]
    assert config_from_toml(config_to_toml(config)) == config
    assert "capture_stacks = false" in config_to_toml(config)


def test_capture_stacks_from_the_environment_and_flags_for_every_probe() -> None:
    toml = "[probes.a]\n[probes.b]\ncapture_stacks = true\n"
    by_env = load_config(None, {"PQD_CAPTURE_STACKS": "no"}, {})
    assert by_env.probes[0].capture_stacks is False
    start = config_from_toml(toml)
    by_flag = apply_overrides(start, {"capture_stacks": "false"}, origin=flag_origin)
    assert [p.capture_stacks for p in by_flag.probes] == [False, False]
    both = load_config(None, {"PQD_CAPTURE_STACKS": "0"}, {"capture_stacks": "yes"})
    assert both.probes[0].capture_stacks is True


@pytest.mark.parametrize(
    ("make", "field", "value", "problem"),
    [
        (_probe('capture_stacks = "no"'), "probes.fast.capture_stacks", "no", "true or false"),
        (_probe("capture_stacks = 0"), "probes.fast.capture_stacks", 0, "true or false"),
        (_env(PQD_CAPTURE_STACKS="maybe"), "PQD_CAPTURE_STACKS", "maybe", "yes/no or 1/0"),
        (_flags(capture_stacks=""), "--capture-stacks", "", "yes/no or 1/0"),
        # Like every probe setting, not a top-level key: [probes.NAME], PQD_* or a flag.
        (_toml("capture_stacks = false"), "capture_stacks", False, "under [probes.NAME]"),
        (_probe("capture_stack = false"), "probes.fast.capture_stack", False, "capture_stacks?"),
        (_env(PQD_CAPTURE_STACK="1"), "PQD_CAPTURE_STACK", "1", "PQD_CAPTURE_STACKS?"),
    ],
)
def test_capture_stacks_bad_values(
    make: Callable[[], object], field: str, value: object, problem: str
) -> None:
    with pytest.raises(ConfigError) as info:
        make()
    assert (info.value.field, info.value.value) == (field, value)
    assert problem in str(info.value)


def test_capture_stacks_in_help_and_the_example_config(
    wide: None, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("run", "once"):
        assert "--capture-stacks BOOL" in _help(command, capsys)
    from pqd.config.doc import example_config

    example = example_config()
    assert "capture their Python stacks" in example
    assert config_from_toml(example).probes[0].capture_stacks is True
