"""A real Prometheus (Debian's `prometheus` package) for tests: deploy/prometheus/prometheus.yml
with only the target and intervals changed, started on a free port, waited for with deadlines,
and always stopped by the context manager that started it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.net import free_port
from tests.helpers.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy/prometheus"

SCRAPE_INTERVAL = "1s"
STARTUP_SECONDS = 60.0


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def start(args: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        # Own session: the whole tree (pqd's workers, managers, forkserver) can be killed as a
        # group whatever state the test leaves it in.
        return subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM and wait; SIGKILL on timeout; then SIGKILL whatever is left of the group."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_ready(proc: subprocess.Popen[bytes], url: str, what: str, log: Path) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{tail(log)}")
        return http_status(url) == 200

    try:
        wait_until(ready, f"{what} at {url}", STARTUP_SECONDS)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n--- {what} log\n{tail(log)}") from None


@dataclass(frozen=True)
class Prometheus:
    url: str
    log: Path

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            # Prometheus answers a bad query with 400 and a JSON error: return it to the caller.
            body = json.load(exc)
        return body

    def query(self, expr: str) -> dict[str, Any]:
        return self.api("query", query=expr)  # type: ignore[no-any-return]


def prometheus_config(target: str, rules_dir: Path = PROMETHEUS_DIR) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with only what a test must change: the target, the
    intervals, and absolute rule file paths (the copy lives in a tmp directory), read from
    ``rules_dir`` (a test's edited copy of the rule files, or deploy/prometheus's)."""
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = SCRAPE_INTERVAL
    config["global"]["evaluation_interval"] = SCRAPE_INTERVAL
    config["rule_files"] = [str(rules_dir / name) for name in config["rule_files"]]
    (job,) = (j for j in config["scrape_configs"] if j["job_name"] == "pqd")
    assert [t for sc in job["static_configs"] for t in sc["targets"]] == ["localhost:10029"]
    job["static_configs"] = [{"targets": [target]}]
    job["scrape_timeout"] = SCRAPE_INTERVAL  # may not exceed the scrape interval
    return config  # type: ignore[no-any-return]


@contextlib.contextmanager
def running_prometheus(
    tmp: Path, target: str, *, features: Sequence[str] = (), rules_dir: Path = PROMETHEUS_DIR
) -> Iterator[Prometheus]:
    """Prometheus scraping ``target`` (host:port) as job pqd, with the rules of
    deploy/prometheus (or of ``rules_dir``); ``features`` are passed as --enable-feature (e.g.
    exemplar-storage)."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not found on PATH; install it: apt-get install -y prometheus")
    config = tmp / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(target, rules_dir)))
    listen = f"127.0.0.1:{free_port()}"
    log = tmp / "prometheus.log"
    proc = start(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'data'}",
            f"--web.listen-address={listen}",
            *(f"--enable-feature={feature}" for feature in features),
        ],
        log,
    )
    try:
        wait_ready(proc, f"http://{listen}/-/ready", "prometheus", log)
        yield Prometheus(f"http://{listen}", log)
    finally:
        stop(proc)
