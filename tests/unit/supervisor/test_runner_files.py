"""pqd.supervisor.runner_files and the runner's command and environment under another python:
exactly the runner side is handed over, it is standard library only and declared 3.9 for ruff,
and nothing of pqd's installation goes with it."""

from __future__ import annotations

import ast
import os
import sys
import tomllib
from pathlib import Path

import pqd
from pqd.supervisor.runner_files import RunnerFiles, runner_side_modules
from pqd.supervisor.runner_process import BOOTSTRAP, runner_command, runner_environment

SRC = Path(pqd.__file__).resolve().parent
PYPROJECT = SRC.parents[1] / "pyproject.toml"


def module_path(name: str) -> Path:
    parts = name.split(".")[1:]
    package = SRC.joinpath(*parts, "__init__.py")
    return package if package.exists() else SRC.joinpath(*parts).with_suffix(".py")


def test_the_runner_side_is_the_runner_package_and_the_plain_data_it_imports() -> None:
    names = runner_side_modules()
    runner = {f"pqd.runner.{p.stem}" for p in (SRC / "runner").glob("*.py") if p.stem != "__init__"}
    assert runner <= set(names)
    assert set(names) - runner == {
        "pqd",
        "pqd.runner",
        "pqd.bounds",
        "pqd.probe",
        "pqd.results",
        "pqd.settings_table",
    }


def test_the_runner_side_imports_only_the_standard_library_and_itself() -> None:
    names = set(runner_side_modules())
    for name in names:
        for node in ast.walk(ast.parse(module_path(name).read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported = [node.module]
            else:
                continue
            for module in imported:
                top = module.split(".")[0]
                if top == "pqd":
                    assert module in names or module.rsplit(".", 1)[0] in names, (name, module)
                else:
                    assert top in sys.stdlib_module_names or top == "__future__", (name, module)


def test_ruff_checks_every_runner_side_module_as_python_3_9() -> None:
    """pyproject's per-file-target-version makes ruff refuse 3.10+ syntax there (match, X | Y
    outside annotations) and stop asking for 3.10+ APIs (zip(strict=))."""
    declared = tomllib.loads(PYPROJECT.read_text())["tool"]["ruff"]["per-file-target-version"]
    assert set(declared.values()) == {"py39"}
    files = {str(module_path(n).relative_to(SRC.parents[1])) for n in runner_side_modules()}
    covered = {f for f in files if f in declared or str(Path(f).parent / "*.py") in declared}
    assert covered == files
    assert "src/pqd/runner/*.py" in declared


def test_the_private_copy_holds_exactly_the_runner_side() -> None:
    files = RunnerFiles()
    try:
        where = Path(files.path())
        assert files.path() == str(where)  # made once
        copied = sorted(str(p.relative_to(where)) for p in where.rglob("*.py"))
        expected = sorted(
            str(module_path(n).relative_to(SRC.parent)) for n in runner_side_modules()
        )
        assert copied == expected
        assert (where / "pqd/runner/cycle.py").read_bytes() == (
            SRC / "runner/cycle.py"
        ).read_bytes()
        assert oct(where.stat().st_mode & 0o777) == "0o700"
    finally:
        files.remove()
    assert not where.exists()


def test_under_another_python_the_runner_starts_from_the_copy() -> None:
    assert runner_command("/py", "pqd.runner.main", None, ["-x"]) == [
        "/py",
        "-m",
        "pqd.runner.main",
        "-x",
    ]
    assert runner_command("/py", "pqd.runner.main", "/files", ["-x"]) == [
        "/py",
        "-c",
        BOOTSTRAP,
        "/files",
        "pqd.runner.main",
        "-x",
    ]


def test_under_another_python_none_of_pqds_interpreter_settings_are_passed_on() -> None:
    base = {
        "PATH": "/bin",
        "PYTHONPATH": "/pqd/venv/lib",
        "PYTHONHOME": "/pqd",
        "VIRTUAL_ENV": "/pqd/venv",
        "PYTHONEXECUTABLE": "/pqd/venv/bin/python",
        "__PYVENV_LAUNCHER__": "/pqd/venv/bin/python",
        "TMPDIR": "/tmp",
    }
    env = runner_environment({"TMPDIR": "/var/tmp", "A": "1"}, "/files", base)
    assert env == {"PATH": "/bin", "TMPDIR": "/var/tmp", "A": "1", "PYTHONPATH": "/files"}
    theirs = runner_environment({"PYTHONPATH": "/app"}, "/files", base)
    assert theirs["PYTHONPATH"] == f"/files{os.pathsep}/app"
    # pqd's own python: everything, with the probe's variables over it.
    assert runner_environment({"A": "1"}, None, base) == {**base, "A": "1"}
