"""Reload cannot end the daemon: every hostile file of tests/helpers/hostile_configs.py, by
SIGHUP and by POST /-/reload, while a scraper scrapes all along; pqd lives, answers every
scrape, says pqd_config_last_reload_successful 0 with one log line per refusal, keeps its
running probe, and a good file afterwards applies."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from tests.helpers.hostile_configs import hostile_configs
from tests.helpers.pqd_process import running_pqd, sample
from tests.helpers.waiting import wait_until

GOOD = 'enable_reload_endpoint = true\n[probes.kept]\ninterval = "1h"\nworkers = 1\nrounds = 1\n'
FILES = hostile_configs()


class Scraper(threading.Thread):
    """Scrapes /metrics back to back until stopped; remembers every answer that was not 200."""

    def __init__(self, get: object) -> None:
        super().__init__(daemon=True)
        self.get = get
        self.stopped = threading.Event()
        self.scrapes = 0
        self.failures: list[int] = []

    def run(self) -> None:
        while not self.stopped.is_set():
            status, _ = self.get("/metrics")  # type: ignore[operator]
            self.scrapes += 1
            if status != 200:
                self.failures.append(status)


def refusals(log: str) -> int:
    return log.count("config reload refused")


def test_hostile_files_on_reload_never_end_the_daemon(tmp_path: Path) -> None:
    with running_pqd(tmp_path, GOOD) as pqd:
        scraper = Scraper(pqd.get)
        scraper.start()
        try:
            for number, hostile in enumerate(FILES):
                name = hostile.name
                hostile.write(str(pqd.config_path))
                before = refusals(pqd.log_text())
                if number % 2:
                    status, body = pqd.get("/-/reload", method="POST")
                    assert status == 422, (name, status, body[:300])
                    assert len(body.strip().splitlines()) == 1, (name, body[:300])
                else:
                    pqd.signal(signal.SIGHUP)
                wait_until(lambda n=before: refusals(pqd.log_text()) > n, f"{name} refused")
                assert pqd.proc.poll() is None, name
        finally:
            scraper.stopped.set()
            scraper.join(30)
        text = pqd.scrape()
        assert sample(text, "pqd_config_last_reload_successful") == 0.0
        assert sample(text, "pqd_probe_info", probe="kept") == 1.0
        assert scraper.scrapes > len(FILES) and scraper.failures == []
        log = pqd.log_text()
        assert refusals(log) == len(FILES)
        assert "Traceback" not in log
        refused = [e for e in pqd.log_events("config reload refused; keeping the running config")]
        assert len(refused) == len(FILES)
        assert all(len(e["err"]) < 1000 for e in refused)

        pqd.config_path.write_text(GOOD.replace("kept", "next"))
        pqd.signal(signal.SIGHUP)
        pqd.scrape_until(
            lambda t: (
                sample(t, "pqd_config_last_reload_successful") == 1.0
                and sample(t, "pqd_probe_info", probe="next") == 1.0
            ),
            "the good file to apply",
        )
