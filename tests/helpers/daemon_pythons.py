"""pqd itself (the daemon) under other CPythons: ``python -m tests.helpers.daemon_pythons``
(``make test-daemon-pythons``) makes a fresh venv of each CPython >= 3.11 found besides the
tests' own (3.12 and 3.13 on this image), installs pqd with its test extras into it (from the
local wheelhouse and index pip is configured with, else PyPI), and runs the unit tests and one
real `pqd run` (tests/integration/test_daemon_smoke.py) there. For each CPython older than
requires-python it checks that pip refuses to install pqd: the daemon needs 3.11 (tomllib);
only the runner side runs under 3.9 and 3.10. Prints what it found, ran and how long it took.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.helpers.interpreters import REPO, Found, other_cpythons

DAEMON_OLDEST = (3, 11)  # pyproject's requires-python
TESTS = ["tests/unit", "tests/integration/test_daemon_smoke.py"]


def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def _venv(found: Found, where: Path) -> str:
    made = _run([found.interpreter.path, "-m", "venv", str(where)], 300)
    assert made.returncode == 0, made.stderr
    return str(where / "bin/python")


def check_daemon(found: Found, where: Path) -> tuple[bool, str]:
    python = _venv(found, where)
    install = _run([python, "-m", "pip", "install", "-q", "-e", ".[test]"], 900)
    if install.returncode != 0:
        return False, f"pip install failed: {install.stderr.strip().splitlines()[-1:]}"
    tests = _run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS], 1800)
    last = (tests.stdout.strip().splitlines() or ["(no output)"])[-1]
    if tests.returncode != 0:
        print(tests.stdout[-4000:], tests.stderr[-2000:], flush=True)
    return tests.returncode == 0, last


def check_refused(found: Found, where: Path) -> tuple[bool, str]:
    python = _venv(found, where)
    install = _run([python, "-m", "pip", "install", "-q", "--no-deps", "."], 600)
    said = install.stderr + install.stdout
    refused = install.returncode != 0 and "requires a different Python" in said
    return refused, "pip refuses it (requires-python)" if refused else f"not refused: {said[-300:]}"


def main() -> int:
    found = other_cpythons()
    for f in found:
        print(f"daemon-pythons: found {f.interpreter.label} at {f.interpreter.path}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="pqd-daemon-pythons-") as tmp:
        for f in found:
            started = time.monotonic()
            numbers = tuple(map(int, f.minor.split(".")))
            check = check_daemon if numbers >= DAEMON_OLDEST else check_refused
            ok, said = check(f, Path(tmp, f.minor))
            results.append(ok)
            seconds = time.monotonic() - started
            verdict = "ok" if ok else "FAILED"
            print(f"daemon-pythons: {f.interpreter.label}: {verdict}: {said} ({seconds:.0f} s)")
    if not any(tuple(map(int, f.minor.split("."))) >= DAEMON_OLDEST for f in found):
        print("daemon-pythons: FAILED: no other CPython >= 3.11 to run the daemon under")
        return 1
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
