"""pqd.supervisor.interpreter: what a probe's ``python`` is, asked of it, and the one line that
refuses anything but an executable CPython >= 3.9. Fake interpreters are shell scripts that
answer as one would (or misbehave); the real one is the tests' own."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from pqd.supervisor.interpreter import Interpreter, InterpreterError, Interpreters, ask, own


def fake(tmp_path: Path, body: str, name: str = "python") -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def answering(tmp_path: Path, implementation: str, version: str) -> str:
    numbers = ", ".join(version.split(".")[:3])
    return fake(tmp_path, f'echo \'["{implementation}", [{numbers}], "{version}"]\'')


def refusal(path: str, timeout: float = 10.0) -> str:
    with pytest.raises(InterpreterError) as caught:
        ask(path, timeout)
    text = str(caught.value)
    assert "\n" not in text
    return text


def test_the_tests_own_python_is_what_it_says() -> None:
    found = ask(sys.executable)
    assert found == Interpreter(sys.executable, "cpython", sys.version.split()[0])
    assert found == Interpreter(own().path, own().implementation, own().version)
    assert found.label == f"CPython {sys.version.split()[0]}"


def test_a_new_enough_cpython_is_accepted(tmp_path: Path) -> None:
    assert ask(answering(tmp_path, "cpython", "3.9.0")).version == "3.9.0"


@pytest.mark.parametrize(
    ("implementation", "version", "expected"),
    [
        ("cpython", "3.8.18", "is CPython 3.8.18; a runner needs CPython >= 3.9"),
        ("cpython", "2.7.18", "is CPython 2.7.18; a runner needs CPython >= 3.9"),
        ("pypy", "3.10.14", "is PyPy 3.10.14, not CPython"),
        ("graalpy", "3.11.7", "is graalpy 3.11.7, not CPython"),
    ],
)
def test_other_pythons_are_named_and_refused(
    tmp_path: Path, implementation: str, version: str, expected: str
) -> None:
    assert refusal(answering(tmp_path, implementation, version)) == expected


def test_what_is_not_python_is_named(tmp_path: Path) -> None:
    assert refusal(str(tmp_path / "absent")) == "no such file"
    assert refusal(str(tmp_path)) == "not a file"
    plain = tmp_path / "plain"
    plain.write_text("print(1)\n")
    assert refusal(str(plain)) == "not executable"
    assert refusal(fake(tmp_path, "echo boom >&2; exit 3")) == (
        "is not Python (exited with status 3: boom)"
    )
    assert refusal(fake(tmp_path, "true", "quiet")) == "is not Python (it printed nothing)"
    assert (
        refusal(fake(tmp_path, "echo hello", "chatty")) == "is not Python (it printed 'hello\\n')"
    )
    assert refusal("pqd-test-no-such-python") == "no 'pqd-test-no-such-python' in PATH"


def test_one_that_does_not_answer_is_given_up_on(tmp_path: Path) -> None:
    assert refusal(fake(tmp_path, "exec sleep 30"), timeout=0.5) == "did not answer within 0.5s"


def test_a_name_is_looked_up_in_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answering(tmp_path, "cpython", "3.12.1")
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert ask("python").version == "3.12.1"


def test_each_path_is_asked_once_while_its_file_is_unchanged(tmp_path: Path) -> None:
    asked = tmp_path / "asked"
    body = f'echo x >> {asked}; echo \'["cpython", [3, 12, 1], "3.12.1"]\''
    path = fake(tmp_path, body)
    interpreters = Interpreters()
    assert interpreters.of(path).version == "3.12.1"
    assert interpreters.problem(path) is None
    assert asked.read_text().count("x") == 1
    fake(tmp_path, body.replace("3, 12, 1", "3, 8, 1").replace("3.12.1", "3.8.1") + "\n# new")
    assert interpreters.problem(path) == "is CPython 3.8.1; a runner needs CPython >= 3.9"
    assert asked.read_text().count("x") == 2
    assert interpreters.of(None) == own()
