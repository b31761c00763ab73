"""Every bad flag, environment variable or config value: exit 2 or 78, one stderr line naming
what was wrong, never a traceback. Runs cli.main() in-process; nothing here starts a cycle."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pqd.cli import main
from pqd.config.load import MAX_CONFIG_BYTES

FLAG_CASES = [
    (["once", "--workers", "0"], "--workers", "0"),
    (["once", "--workers", "-3"], "--workers", "-3"),
    (["once", "--workers", "abc"], "--workers", "abc"),
    (["once", "--workers", "1.5"], "--workers", "1.5"),
    (["once", "--queue-maxsize", "0"], "--queue-maxsize", "0"),
    (["once", "--rounds", "0"], "--rounds", "0"),
    (["once", "--items-per-producer", "-1"], "--items-per-producer", "-1"),
    (["once", "--start-method", "thread"], "--start-method", "thread"),
    (["once", "--timeout", "10"], "--timeout", "10"),
    (["once", "--timeout", "0s"], "--timeout", "0s"),
    (["once", "--job-pause=-1s"], "--job-pause", "-1s"),
    (["once", "--job-pause", "5s", "--timeout", "10s"], "timeout", "10"),
    (["once", "--capture-stacks", "sometimes"], "--capture-stacks", "sometimes"),
    (["once", "--bogus"], "--bogus", "--bogus"),
    (["once", "--probe", "nosuch"], "--probe", "nosuch"),
    (["frobnicate"], "frobnicate", "frobnicate"),
    ([], "command", "command"),
    (["check-config"], "FILE", "FILE"),
    (["once", "--textfile", ""], "--textfile", "''"),
    (["once", "--textfile", "/dev/null"], "--textfile", "/dev/null"),
]

ENV_CASES = [
    ({"PQD_WORKERS": "0"}, "PQD_WORKERS", "0"),
    ({"PQD_WORKERS": "many"}, "PQD_WORKERS", "many"),
    ({"PQD_NOPE": "1"}, "PQD_NOPE", "1"),
    ({"PQD_TIMEOUT": "soon"}, "PQD_TIMEOUT", "soon"),
    ({"PQD_START_METHOD": "vfork"}, "PQD_START_METHOD", "vfork"),
    ({"PQD_CAPTURE_STACKS": "2"}, "PQD_CAPTURE_STACKS", "2"),
    ({"PQD_CONFIG": "/nonexistent/pqd.toml"}, "/nonexistent/pqd.toml", "/nonexistent/pqd.toml"),
]

FILE_CASES = [
    ("workers = 4\n[probes", "invalid TOML", "probes"),
    ("bogus = 1\n", "bogus", "1"),
    ("workers = 4\n[probes.a]\n", "workers", "belongs under [probes.NAME]"),
    ('[probes.a]\nlog_level = "debug"\n', "probes.a.log_level", "before any [probes.NAME]"),
    ('[probes.a]\nworkers = "4"\n', "probes.a.workers", "4"),
    ("[probes.a]\nworkers = true\n", "probes.a.workers", "True"),
    ("[probes.a]\nworkers = 0\n", "probes.a.workers", "0"),
    ("[probes.a]\nqueue_maxsize = -5\n", "probes.a.queue_maxsize", "-5"),
    ("[probes]\n", "probes", "{}"),
    ('[probes.a]\ninterval = "15s"\ncron = "* * * * *"\n', "probes.a", "cron"),
    ('[probes.a]\ncron = "61 * * * *"\n', "probes.a.cron", "61 * * * *"),
    ('[probes.a]\ninterval = "-5s"\n', "probes.a.interval", "-5s"),
    ("[probes.a]\ntimeout = 30\n", "probes.a.timeout", "30"),
    ('[probes.a]\nstart_method = "threads"\n', "probes.a.start_method", "threads"),
    ('[probes.a]\ncapture_stacks = "false"\n', "probes.a.capture_stacks", "false"),
    ('[probes.a]\ncolour = "red"\n', "probes.a.colour", "red"),
    ('listen_address = "localhost"\n', "listen_address", "localhost"),
    ('log_format = "xml"\n', "log_format", "xml"),
    ("history_limit = 0\n", "history_limit", "0"),
    ("a = " + "[" * 500 + "]" * 500 + "\n", "nested more than 16 deep", "pqd.toml"),
    ("".join(f"[probes.p{i}]\n" for i in range(101)), "probes", "101 probes"),
    ('[probes." a"]\n', "probes", "white space"),
    ('[probes."   "]\n', "probes", "white space"),
    ('[probes."a\u202eb"]\n', "probes", "U+202E"),
    ('[probes."a\u200bb"]\n', "probes", "U+200B"),
    ('log_level = "' + "x" * 100_000 + '"\n', "log_level", "(100000 characters)"),
    ('[probes.a]\ninterval = "1ms"\n', "probes.a.interval", "1ms"),
    ('[probes.a]\ninterval = "99ms"\n', "probes.a.interval", "at least 100ms"),
]


def one_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize(("argv", "field", "value"), FLAG_CASES)
def test_bad_flag(
    argv: list[str], field: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(argv, environ={})

    line = one_line(capsys.readouterr().err)
    assert code == 2
    assert field in line and value in line


@pytest.mark.parametrize(("environ", "field", "value"), ENV_CASES)
def test_bad_environment(
    environ: dict[str, str], field: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["once"], environ=environ)

    line = one_line(capsys.readouterr().err)
    assert code == 78
    assert field in line and value in line


@pytest.mark.parametrize(("text", "field", "value"), FILE_CASES)
@pytest.mark.parametrize("command", ["once", "check-config"])
def test_bad_config_file(
    text: str,
    field: str,
    value: str,
    command: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    line = config_file_error(text, command, tmp_path / "pqd.toml", capsys)
    assert field in line and value in line


def config_file_error(
    text: str, command: str, path: Path, capsys: pytest.CaptureFixture[str]
) -> str:
    """The one stderr line of ``command`` given a config file of ``text``; it exits 78."""
    path.write_text(text)
    argv = ["once", "--config", str(path)] if command == "once" else ["check-config", str(path)]

    code = main(argv, environ={})

    line = one_line(capsys.readouterr().err)
    assert code == 78
    return line


#: Errors about the whole file, with no line of it to show: "PATH: problem". They read
#: "PATH='': problem" when the line tomllib pointed at was empty (the end of the document).
FILE_LEVEL_CASES = [
    ("x = [\n", "invalid TOML at end of document: "),
    ('a = """\n', "invalid TOML at end of document: "),
    ("[probes.a]\nworkers = 4\nrounds = [\n", "invalid TOML at end of document: "),
    ("a = " + "[" * 17 + "]" * 17 + "\n", "invalid TOML at line 1: "),
    (".".join(["k"] * 17) + " = 1\n", "invalid TOML at line 1: "),
]


@pytest.mark.parametrize(("text", "problem"), FILE_LEVEL_CASES)
@pytest.mark.parametrize("command", ["once", "check-config"])
def test_a_file_level_error_names_the_file_without_a_value(
    text: str, problem: str, command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "pqd.toml"
    line = config_file_error(text, command, path, capsys)
    assert line.startswith(f"pqd: config error: {path}: {problem}"), line


def test_textfile_never_replaces_what_is_not_a_regular_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As root, renaming over /dev/full replaced the device node; a FIFO or a symlink would be
    replaced the same way. Refused before any cycle runs."""
    fifo, link = tmp_path / "fifo", tmp_path / "link"
    os.mkfifo(fifo)
    link.symlink_to(tmp_path / "elsewhere.prom")
    for target in (fifo, link, tmp_path):
        code = main(["once", "--textfile", str(target)], environ={})
        line = one_line(capsys.readouterr().err)
        assert code == 2
        assert "--textfile" in line and "not a regular file" in line
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and link.is_symlink()


@pytest.mark.parametrize("kind", ["fifo", "device", "too large"])
def test_config_files_are_read_only_if_regular_and_small(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO blocked forever and /dev/zero was read until MemoryError."""
    path = tmp_path / "pqd.toml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "too large":
        path.write_text("# " + "x" * MAX_CONFIG_BYTES + "\n")
    else:
        path = Path("/dev/zero")

    code = main(["check-config", str(path)], environ={})

    line = one_line(capsys.readouterr().err)
    assert code == 78
    assert str(path) in line
    assert ("larger than" if kind == "too large" else "not a regular file") in line
    assert len(line) < 300


def test_good_config_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pqd.toml"
    path.write_text('[probes.a]\nworkers = 2\n[probes.b]\ncron = "*/5 * * * *"\n')

    assert main(["check-config", str(path)], environ={}) == 0
    assert "2 probe(s): a, b" in capsys.readouterr().out


def test_check_config_also_checks_the_web_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  alice: not-a-bcrypt-hash\n")
    path = tmp_path / "pqd.toml"
    path.write_text(f'web_config_file = "{web}"\n')

    code = main(["check-config", str(path)], environ={})

    line = one_line(capsys.readouterr().err)
    assert code == 78
    assert "basic_auth_users" in line


def test_the_commands_load_as_load_config_does() -> None:
    """`PQD_JOB_PAUSE=20s pqd run --timeout 10m` was refused by the command line's own loader
    (environment validated alone) while load_config, validating both together, accepted it."""
    from pqd.cli import _build_parser
    from pqd.cli import load_config as load_from_args
    from pqd.config.load import load_config
    from pqd.supervisor.interpreter import Interpreters

    environ = {"PQD_JOB_PAUSE": "20s"}
    for command in ("run", "once"):
        args = _build_parser().parse_args([command, "--timeout", "10m"])
        loaded = load_from_args(args, environ, Interpreters())
        assert loaded == load_config(None, environ, {"timeout": "10m"})
        assert loaded.probes[0].timeout == 600.0
