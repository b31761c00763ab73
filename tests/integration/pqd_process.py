"""A real `pqd run` process for tests: started on a free port, waited for with deadlines, always
stopped (and its process tree killed) by the fixture that owns it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import psutil

T = TypeVar("T")

DEADLINE_SECONDS = 30.0
_PORT = re.compile(r'msg="pqd started".* port=(\d+)')


def wait_until(
    predicate: Callable[[], T | None], what: str, seconds: float = DEADLINE_SECONDS
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.02)


def logfmt(line: str) -> dict[str, str]:
    """Parse one logfmt line (quoted values with backslash escapes)."""
    fields = {}
    for match in re.finditer(r'(\w+)=("((?:[^"\\]|\\.)*)"|\S*)', line):
        key, raw, quoted = match.group(1), match.group(2), match.group(3)
        fields[key] = (
            quoted.replace('\\"', '"').replace("\\\\", "\\") if quoted is not None else raw
        )
    return fields


class PqdProcess:
    def __init__(
        self,
        tmp_path: Path,
        config: str,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
    ) -> None:
        self.config_path = tmp_path / "pqd.toml"
        self.config_path.write_text(config)
        self.log_path = tmp_path / "pqd.log"
        self._log = self.log_path.open("w")
        base = list(command) if command else [sys.executable, "-m", "pqd"]
        self.proc = subprocess.Popen(
            [
                *base,
                "run",
                "--config",
                str(self.config_path),
                "--listen-address",
                "127.0.0.1:0",
                *args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        self.port = 0

    def wait_ready(self) -> PqdProcess:
        def port() -> int | None:
            assert self.proc.poll() is None, f"pqd exited early:\n{self.log_text()}"
            found = _PORT.search(self.log_text())
            return int(found.group(1)) if found else None

        self.port = wait_until(port, "pqd to log its port")
        wait_until(lambda: self.get("/-/ready")[0] == 200, "/-/ready")
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self, msg: str) -> list[dict[str, str]]:
        return [
            fields
            for fields in map(logfmt, self.log_text().splitlines())
            if fields.get("msg") == msg
        ]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, method: str = "GET") -> tuple[int, str]:
        request = urllib.request.Request(self.url(path), method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def scrape(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200, (status, body)
        return body

    def scrape_until(
        self, condition: Callable[[str], bool], what: str, seconds: float = DEADLINE_SECONDS
    ) -> str:
        """Scrape until ``condition(text)`` holds; return that scrape."""

        def attempt() -> str | None:
            text = self.scrape()
            return text if condition(text) else None

        return wait_until(attempt, what, seconds)

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self) -> int:
        """SIGTERM, wait; SIGKILL the whole tree if it does not go. Returns the exit code."""
        tree = self.descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for child in tree:
            with contextlib.suppress(psutil.Error):
                child.kill()
        self._log.close()
        return self.proc.returncode


@contextlib.contextmanager
def running_pqd(tmp_path: Path, config: str, **kwargs: object) -> Iterator[PqdProcess]:
    pqd = PqdProcess(tmp_path, config, **kwargs)  # type: ignore[arg-type]
    try:
        yield pqd.wait_ready()
    finally:
        pqd.stop()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one series in exposition text, or None."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None
