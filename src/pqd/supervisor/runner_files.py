"""The runner side of pqd as files, for a runner under another interpreter (a probe's ``python``).

Such a runner must import pqd's runner-side modules and nothing else of pqd's environment: no
package of pqd's virtualenv may become importable in the application's interpreter because of
pqd. So pqd copies exactly those modules, ``pqd.runner.*`` and the modules of pqd they import
(found by reading their imports, not listed by hand), into a private directory, and the runner
puts that directory first on its path (pqd.supervisor.runner_process). They are standard library
only and valid Python 3.9 (docs/design.md §4); nothing else is copied.

The directory stays writable by pqd's user alone, so that each interpreter keeps its compiled
``__pycache__/*.cpython-3X.pyc`` there (a spawn child would otherwise compile every module).
"""

from __future__ import annotations

import ast
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Final

import pqd

#: The package whose modules, with every module of pqd they import, make the runner side.
RUNNER_PACKAGE: Final = "pqd.runner"


def _package_root() -> Path:
    return Path(pqd.__file__).resolve().parent


def _file_of(name: str, root: Path) -> Path | None:
    """The file of module ``pqd.x.y`` below ``root`` (the pqd folder), or None."""
    parts = name.split(".")[1:]
    module = root.joinpath(*parts).with_suffix(".py") if parts else root / "__init__.py"
    package = root.joinpath(*parts, "__init__.py")
    for path in (module, package):
        if path.is_file():
            return path
    return None


def _imports(path: Path, root: Path) -> set[str]:
    """The modules of pqd that a file imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "pqd" or node.module.startswith("pqd."):
                found.add(node.module)
                found |= {
                    f"{node.module}.{a.name}"
                    for a in node.names
                    if _file_of(f"{node.module}.{a.name}", root)
                }
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "pqd"}
    return found


def runner_side_modules(root: Path | None = None) -> tuple[str, ...]:
    """Every module a runner may import: the runner package's, what they import of pqd, and
    each package on the way (``pqd``, ``pqd.runner``), by dotted name, sorted."""
    root = root or _package_root()
    folder = root.joinpath(*RUNNER_PACKAGE.split(".")[1:])
    todo = {f"{RUNNER_PACKAGE}.{p.stem}" for p in folder.glob("*.py") if p.stem != "__init__"}
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        path = _file_of(name, root)
        if name in seen or path is None:
            continue
        seen.add(name)
        parents = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        todo |= (_imports(path, root) | parents) - seen
    return tuple(sorted(seen))


class RunnerFiles:
    """The private directory of runner-side modules, made on first use. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._dir: str | None = None

    def path(self) -> str:
        """The directory to put first on a runner's path (it holds ``pqd/``). Raises OSError."""
        with self._lock:
            if self._dir is None or not os.path.isdir(self._dir):
                self._dir = self._make()
            return self._dir

    def _make(self) -> str:
        root = _package_root()
        target = tempfile.mkdtemp(prefix="pqd-runner-side-")
        try:
            for name in runner_side_modules(root):
                source = _file_of(name, root)
                assert source is not None
                copy = Path(target, source.relative_to(root.parent))
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, copy)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return target

    def remove(self) -> None:
        with self._lock:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
