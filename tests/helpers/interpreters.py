"""The CPythons on this machine besides the one running the tests, and bare virtualenvs of them.

A probe's ``python`` must work with a bare interpreter (docs/design.md §1a): the tests give it a
fresh ``python -m venv --without-pip`` of each CPython they find, with nothing installed.

Found where an operator's would be: pyenv's versions (``pyenv root``), then ``python3.N`` on
PATH; one per minor version, CPython 3.9 and newer, the tests' own minor version left out.
``PQDTEST_PYTHONS`` (paths separated by ``:``) replaces the search.

Run as ``python -m tests.helpers.interpreters`` (``make test`` does), it runs the tests marked
``per_python`` once more for each CPython found, with ``PQDTEST_PROBE_PYTHON`` naming it, and
prints which it found and which it ran; it fails when it finds none.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pqd.supervisor.interpreter import Interpreter, InterpreterError, ask

REPO = Path(__file__).resolve().parents[2]
PYTHONS_ENV = "PQDTEST_PYTHONS"
#: The CPython the per_python tests give their probes (a bare venv of it is made).
PROBE_PYTHON_ENV = "PQDTEST_PROBE_PYTHON"
#: The bare venv's interpreter, once the session's fixture made it (tests/conftest.py).
PROBE_VENV_ENV = "PQDTEST_PROBE_VENV"
MINORS = range(9, 20)


@dataclass(frozen=True)
class Found:
    interpreter: Interpreter  # its path is the base interpreter, not a venv

    @property
    def minor(self) -> str:
        return ".".join(self.interpreter.version.split(".")[:2])


def _candidates() -> list[str]:
    listed = os.environ.get(PYTHONS_ENV)
    if listed is not None:
        return [path for path in listed.split(":") if path]
    paths = []
    pyenv = shutil.which("pyenv")
    if pyenv is not None:
        root = subprocess.run(
            [pyenv, "root"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
        versions = Path(root, "versions")
        if root and versions.is_dir():
            paths += [str(p / "bin/python3") for p in sorted(versions.iterdir())]
    paths += [found for n in MINORS if (found := shutil.which(f"python3.{n}"))]
    return paths


def other_cpythons() -> list[Found]:
    """Each other CPython >= 3.9 found, one per minor version, oldest first."""
    own = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found: dict[str, Found] = {}
    for path in _candidates():
        if not os.path.exists(path):
            continue
        try:
            candidate = Found(ask(path))
        except InterpreterError:
            continue  # older than 3.9, not CPython, broken: not a probe's python
        if candidate.minor != own:
            found.setdefault(candidate.minor, candidate)
    return sorted(found.values(), key=lambda f: tuple(map(int, f.minor.split("."))))


def bare_venv(base: str, where: Path) -> str:
    """A fresh virtualenv of ``base`` with nothing installed (not even pip); its python."""
    subprocess.run(
        [base, "-m", "venv", "--without-pip", str(where)],
        check=True,
        capture_output=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTHON")},
    )
    python = where / "bin/python"
    assert python.exists(), python
    return str(python)


def probe_fields() -> dict[str, object]:
    """ProbeConfig fields that give a probe the session's probe python, if any: its bare venv,
    and the repo on PYTHONPATH so that the test harness's runner (tests.helpers.fault_runner)
    and jobs import; nothing of pqd's venv."""
    venv = os.environ.get(PROBE_VENV_ENV)
    if not venv:
        return {}
    return {"python": venv, "environment": (("PYTHONPATH", str(REPO)),)}


def pqd_environ() -> dict[str, str]:
    """The same for a `pqd` process: PQD_PYTHON and PQD_ENVIRONMENT (every probe)."""
    venv = os.environ.get(PROBE_VENV_ENV)
    if not venv:
        return {}
    return {"PQD_PYTHON": venv, "PQD_ENVIRONMENT": f"PYTHONPATH={REPO}"}


def main() -> int:
    """Run the per_python tests again with each other CPython as the probes' python."""
    found = other_cpythons()
    for f in found:
        print(f"per-python: found {f.interpreter.label} at {f.interpreter.path}", flush=True)
    if not found:
        print("per-python: FAILED: no other CPython >= 3.9 on this machine", flush=True)
        return 1
    results = []
    for f in found:
        print(f"per-python: running the per_python tests under {f.interpreter.label}", flush=True)
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-m", "per_python", *sys.argv[1:]],
            env={**os.environ, PROBE_PYTHON_ENV: f.interpreter.path},
            cwd=REPO,
            check=False,
        )
        results.append((f, done.returncode, time.monotonic() - started))
    for f, code, seconds in results:
        verdict = "passed" if code == 0 else f"FAILED (pytest exit {code})"
        print(f"per-python: ran {f.interpreter.label}: {verdict} in {seconds:.0f} s", flush=True)
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
