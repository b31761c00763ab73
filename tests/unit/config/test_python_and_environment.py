"""The per-probe ``python`` and ``environment`` settings: how they are written (file, PQD_*,
flags), what is refused in one line, and that check-config and the commands ask the
interpreter what it is (a fake one here: a shell script answering as CPython 3.8 would)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pqd.cli import main
from pqd.config.load import apply_overrides, config_from_toml, config_to_toml, env_origin
from pqd.errors import ConfigError
from pqd.supervisor.interpreter import Interpreters


def old_python(tmp_path: Path) -> str:
    path = tmp_path / "python3.8"
    path.write_text('#!/bin/sh\necho \'["cpython", [3, 8, 18], "3.8.18"]\'\n')
    path.chmod(0o755)
    return str(path)


def test_both_are_read_from_the_file_and_written_back() -> None:
    config = config_from_toml(
        '[probes.app]\npython = "/usr/bin/python3.9"\n'
        'environment = { TMPDIR = "/var/tmp", PYTHONWARNINGS = "default" }\n'
    )
    (probe,) = config.probes
    assert probe.python == "/usr/bin/python3.9"
    assert probe.environment == (("TMPDIR", "/var/tmp"), ("PYTHONWARNINGS", "default"))
    assert config_from_toml(config_to_toml(config)) == config
    default = config_from_toml("[probes.plain]\n").probes[0]
    assert (default.python, default.environment) == (None, None)


def test_overrides_set_them_for_every_probe() -> None:
    config = config_from_toml("[probes.a]\n[probes.b]\n")
    changed = apply_overrides(
        config,
        {"python": "python3.12", "environment": "TMPDIR=/x,PYTHON_CPU_COUNT=2,EQ=a=b"},
        origin=env_origin,
    )
    for probe in changed.probes:
        assert probe.python == "python3.12"
        assert probe.environment == (("TMPDIR", "/x"), ("PYTHON_CPU_COUNT", "2"), ("EQ", "a=b"))
    assert (
        apply_overrides(changed, {"environment": ""}, origin=env_origin).probes[0].environment
        is None
    )


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("environment = 3", 'must be a table of strings, e.g. { TMPDIR = "/var/tmp" }'),
        ("environment = { A = 1 }", "A: must be a string"),
        ('environment = { "A B" = "1" }', "'A B': a variable name is letters, digits and _"),
        ('environment = { PQD_X = "1" }', "PQD_X: PQD_ variables are pqd's own"),
        ('python = ""', "must not be empty (leave it out for pqd's own interpreter)"),
        ("python = 3", "must be a string"),
    ],
)
def test_bad_values_are_refused_in_one_line(toml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_toml(f"[probes.a]\n{toml}\n")
    assert str(caught.value).endswith(expected)
    assert str(caught.value).startswith("probes.a.")


def test_a_bad_override_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        apply_overrides(config_from_toml(""), {"environment": "NOEQUALS"}, origin=env_origin)
    assert str(caught.value) == "PQD_ENVIRONMENT='NOEQUALS': 'NOEQUALS': expected VAR=TEXT"


def test_check_config_asks_the_interpreter_and_refuses_an_old_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = old_python(tmp_path)
    config = tmp_path / "pqd.toml"
    config.write_text(f'[probes.app]\npython = "{old}"\n')
    assert main(["check-config", str(config)]) == 78
    err = capsys.readouterr().err
    assert err == (
        f"pqd: config error: probes.app.python='{old}': is CPython 3.8.18; "
        "a runner needs CPython >= 3.9\n"
    )
    config.write_text(f'[probes.app]\npython = "{sys.executable}"\n')
    assert main(["check-config", str(config)]) == 0


def test_pqd_once_refuses_it_too_naming_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = old_python(tmp_path)
    assert main(["once"], {"PQD_PYTHON": old}) == 78
    assert capsys.readouterr().err == (
        f"pqd: config error: PQD_PYTHON='{old}': is CPython 3.8.18; a runner needs CPython >= 3.9\n"
    )
    missing = str(tmp_path / "gone")
    assert main(["once", "--python", missing]) == 2
    assert capsys.readouterr().err == f"pqd: error: --python='{missing}': no such file\n"


def test_without_the_check_only_the_writing_is_checked(tmp_path: Path) -> None:
    """Loading alone never runs anything (reloads in tests, pqd.config.doc): the commands pass
    the check in (Interpreters.problem)."""
    config = config_from_toml(f'[probes.a]\npython = "{tmp_path / "gone"}"\n')
    assert config.probes[0].python == str(tmp_path / "gone")
    assert Interpreters().problem(str(tmp_path / "gone")) == "no such file"
