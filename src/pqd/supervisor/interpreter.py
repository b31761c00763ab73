"""Which Python a probe's runner runs under (the per-probe ``python`` setting): what a path is,
asked of the interpreter itself, and refused in one line unless it is CPython 3.9 or newer.

The question is one short ``-c`` run, bounded by a timeout: the interpreter prints its
``sys.implementation.name`` and ``sys.version``. Answers are kept per path while the file is
unchanged (same inode, size and mtime), so start-up and each reload ask once per interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Final

#: The oldest CPython a runner supports (the runner side is written for it: docs/design.md §4).
OLDEST: Final = (3, 9)
#: How long the interpreter may take to answer (a cold start of a big one on a busy host).
ASK_SECONDS: Final = 10.0
#: What the interpreter is asked. Valid Python 2 too, so an old one answers instead of failing.
_QUESTION: Final = (
    "import json, platform, sys; print(json.dumps([platform.python_implementation().lower(), "
    "list(sys.version_info[:3]), sys.version.split()[0]]))"
)


@dataclass(frozen=True)
class Interpreter:
    """A Python a runner can run under."""

    path: str  # as configured (None in the probe: pqd's own, sys.executable)
    implementation: str  # sys.implementation.name: "cpython"
    version: str  # sys.version's first word: "3.13.0", "3.14.0rc1"

    @property
    def label(self) -> str:
        """How pages and ``pqd once`` show it: ``CPython 3.13.0``."""
        name = {"cpython": "CPython", "pypy": "PyPy"}.get(self.implementation, self.implementation)
        return f"{name} {self.version}"


class InterpreterError(ValueError):
    """A path that is not a CPython a runner can run under; the text says what it found."""


def own() -> Interpreter:
    """pqd's own interpreter, the default of every probe."""
    return Interpreter(sys.executable, sys.implementation.name, sys.version.split()[0])


def resolve(path: str) -> str:
    """An absolute path as given, or a bare name looked up in ``PATH`` (as a shell would)."""
    if os.sep in path:
        return path
    found = shutil.which(path)
    if found is None:
        raise InterpreterError(f"no {path!r} in PATH")
    return found


def ask(path: str, timeout: float = ASK_SECONDS) -> Interpreter:
    """Run ``path`` once to learn what it is. InterpreterError (one line) unless it is an
    executable CPython >= 3.9."""
    executable = resolve(path)
    if not os.path.isfile(executable):
        raise InterpreterError("no such file" if not os.path.exists(executable) else "not a file")
    if not os.access(executable, os.X_OK):
        raise InterpreterError("not executable")
    try:
        done = subprocess.run(
            [executable, "-c", _QUESTION],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env={key: value for key, value in os.environ.items() if not key.startswith("PYTHON")},
        )
    except subprocess.TimeoutExpired:
        raise InterpreterError(f"did not answer within {timeout:g}s") from None
    except OSError as exc:
        raise InterpreterError(f"cannot be run: {exc.strerror or exc}") from None
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        last = f": {said[-1][:120]}" if said else ""
        raise InterpreterError(f"is not Python (exited with status {done.returncode}{last})")
    try:
        name, numbers, version = json.loads(done.stdout)
        found = (str(name), tuple(int(n) for n in numbers), str(version))
    except (ValueError, TypeError):
        printed = repr(done.stdout[:60].decode(errors="replace")) if done.stdout else "nothing"
        raise InterpreterError(f"is not Python (it printed {printed})") from None
    name, numbers, version = found
    if name != "cpython":
        raise InterpreterError(f"is {Interpreter(path, name, version).label}, not CPython")
    if numbers < OLDEST:
        oldest = ".".join(map(str, OLDEST))
        raise InterpreterError(f"is CPython {version}; a runner needs CPython >= {oldest}")
    return Interpreter(path, name, version)


class Interpreters:
    """What each configured path is, asked once while its file is unchanged. Thread-safe."""

    def __init__(self, timeout: float = ASK_SECONDS) -> None:
        self._timeout = timeout
        self._lock = threading.Lock()
        self._known: dict[str, tuple[tuple[int, int, int], Interpreter]] = {}

    def of(self, path: str | None) -> Interpreter:
        """The interpreter of a probe's ``python`` (None: pqd's own). InterpreterError."""
        if path is None:
            return own()
        try:
            st = os.stat(resolve(path))
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = (0, 0, 0)
        with self._lock:
            known = self._known.get(path)
        if known is not None and known[0] == stamp and stamp != (0, 0, 0):
            return known[1]
        found = ask(path, self._timeout)
        with self._lock:
            self._known[path] = (stamp, found)
        return found

    def problem(self, path: str) -> str | None:
        """What is wrong with ``path`` as a probe's ``python``, or None (config checks)."""
        try:
            self.of(path)
        except InterpreterError as exc:
            return str(exc)
        return None
