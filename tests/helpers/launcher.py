"""Start and stop a real `pqd run` process: shared by the tests (tests/helpers/pqd_process.py)
and the benchmarks (benchmarks/_common.py), so both start pqd the same way and both leave nothing
of its process tree behind.

Standard library and psutil only; psutil is imported where it is used, because the benchmarks
import this module in processes whose start-up they measure.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The daemon's start-up line names the port it bound (the tests ask for port 0).
PORT_LOG = re.compile(r'msg="pqd started".* port=(\d+)')
STOP_SECONDS = 15.0
STRAGGLER_SECONDS = 5.0


def logfmt(line: str) -> dict[str, str]:
    """One logfmt line as a dict (quoted values with backslash escapes)."""
    fields = {}
    for match in re.finditer(r'(\w+)=("((?:[^"\\]|\\.)*)"|\S*)', line):
        key, raw, quoted = match.group(1), match.group(2), match.group(3)
        fields[key] = (
            quoted.replace('\\"', '"').replace("\\\\", "\\") if quoted is not None else raw
        )
    return fields


class LaunchedPqd:
    """A `pqd run` on 127.0.0.1:0 with ``config`` written to ``workdir``/pqd.toml and its
    stdout and stderr in ``workdir``/pqd.log. ``command`` replaces the ``pqd`` executable
    (a test harness, or `python -m pqd`); ``cwd`` is its working directory (the caller's
    unless given)."""

    def __init__(
        self,
        workdir: Path,
        config: str,
        command: Sequence[str],
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.config_path = workdir / "pqd.toml"
        self.config_path.write_text(config)
        self.log_path = workdir / "pqd.log"
        self._log = self.log_path.open("w")
        listen = ["--listen-address", "127.0.0.1:0"]
        self.proc = subprocess.Popen(
            [*command, "run", "--config", str(self.config_path), *listen, *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def logged_port(self) -> int | None:
        """The port from the start-up line; None until it is logged. Raises if pqd exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(f"pqd exited early:\n{self.log_text()}")
        found = PORT_LOG.search(self.log_text())
        return int(found.group(1)) if found else None

    def log_events(self, msg: str) -> list[dict[str, str]]:
        return [
            fields
            for fields in map(logfmt, self.log_text().splitlines())
            if fields.get("msg") == msg
        ]

    def stop(self) -> int:
        """SIGTERM pqd, then make sure nothing of its tree outlives it; return its exit code.

        pqd retires its runners when it stops, and a runner kills its own tree when pqd exits;
        whatever is still there STRAGGLER_SECONDS later is SIGKILLed: every process of the tree
        as it was before the SIGTERM, and every process still in the process group of one of
        pqd's children (each runner leads one), which catches what started after the snapshot."""
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            runners = root.children()  # pqd's children are its runners (and adopted orphans)
            tree = root.children(recursive=True)
        except psutil.Error:
            runners, tree = [], []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STRAGGLER_SECONDS)
        _, alive = psutil.wait_procs(tree, timeout=STRAGGLER_SECONDS)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        kill_process_groups(runners)
        self._log.close()
        return self.proc.returncode


def kill_process_groups(leaders: Sequence[Any]) -> None:
    """SIGKILL every process in the process group each of ``leaders`` led, if it started no
    earlier than the leader (a pid in use as a process group id is not reused)."""
    import psutil

    started = {}
    for leader in leaders:
        with contextlib.suppress(psutil.Error):
            started[leader.pid] = leader.create_time()
    if not started:
        return
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            group = os.getpgid(proc.pid)
            if group in started and proc.create_time() >= started[group] - 0.01:
                proc.kill()
