"""A real `pqd run` process for tests: started on a free port, waited for with deadlines, always
stopped (and its process tree killed) by the fixture that owns it."""

from __future__ import annotations

import contextlib
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import psutil

from tests.helpers.launcher import LaunchedPqd, logfmt
from tests.helpers.waiting import DEADLINE_SECONDS, wait_until

__all__ = ["PqdProcess", "logfmt", "running_pqd", "sample", "wait_until"]


class PqdProcess(LaunchedPqd):
    """A `pqd run` for a test, in ``tmp_path``; `python -m pqd` unless ``command`` says else."""

    def __init__(
        self,
        tmp_path: Path,
        config: str,
        *,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        cwd: str | None = None,
    ) -> None:
        base = list(command) if command else [sys.executable, "-m", "pqd"]
        super().__init__(tmp_path, config, base, args=args, env=env, cwd=cwd)
        self.port = 0

    def wait_ready(self) -> PqdProcess:
        self.port = wait_until(self.logged_port, "pqd to log its port")
        wait_until(lambda: self.get("/-/ready")[0] == 200, "/-/ready")
        return self

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
        self,
        condition: Callable[[str], bool],
        what: str,
        seconds: float = DEADLINE_SECONDS,
        *,
        slow_scrapes_ok: bool = False,
    ) -> str:
        """Scrape until ``condition(text)`` holds; return that scrape. Every scrape must answer,
        unless ``slow_scrapes_ok`` (pqd inside a memory cgroup that thrashes until the OOM
        killer acts may not answer within 10 s; it must still be running)."""

        def attempt() -> str | None:
            if slow_scrapes_ok:
                status, text = self.get("/metrics")
                assert self.proc.poll() is None, f"pqd exited ({self.proc.returncode})"
                if status != 200:
                    return None
            else:
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


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``processes`` still running (the same process: pid and start time)."""
    left = []
    for proc in processes:
        # One can exit between is_running() and status(): gone is what the caller waits for.
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
    return left
