"""systemd/pqd.toml, the example config the unit, the image and the Kubernetes ConfigMap ship."""

from __future__ import annotations

import re
import sys
import tomllib

from pqd.config.doc import example_config
from pqd.config.load import GLOBAL_FIELDS, PROBE_FIELDS
from tests.helpers.ops import ROOT, describe, run

CONFIG = ROOT / "systemd/pqd.toml"
# The keys pqd's own loader accepts (it rejects any other, so the example can use no more).
TOP_LEVEL = {*GLOBAL_FIELDS, "probes"}
PROBE_KEYS = set(PROBE_FIELDS)
DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")


def test_example_config_shape() -> None:
    config = tomllib.loads(CONFIG.read_text(encoding="utf-8"))
    assert set(config) <= TOP_LEVEL, set(config) - TOP_LEVEL
    assert config["listen_address"].endswith(":10029"), "docs/design.md §3: port 10029"
    assert config["log_format"] in {"logfmt", "json"}
    assert config["probes"], "at least one probe"
    for name, probe in config["probes"].items():
        assert set(probe) <= PROBE_KEYS, (name, set(probe) - PROBE_KEYS)
        assert probe["start_method"] in {"forkserver", "spawn", "fork"}, name
        assert ("interval" in probe) != ("cron" in probe), f"{name}: interval or cron"
        for key in ("job_pause", "timeout", "interval"):
            if key in probe:
                assert DURATION.fullmatch(probe[key]), f"{name}.{key}={probe[key]!r}"
        if "cron" in probe:
            assert len(probe["cron"].split()) == 5, f"{name}: 5-field cron"
        for key in ("workers", "queue_maxsize", "rounds", "items_per_producer"):
            assert isinstance(probe[key], int) and probe[key] > 0, f"{name}.{key}"


def test_example_config_is_written_from_the_settings_table() -> None:
    # Every setting, its help, range or choices and default come from the fields of Config and
    # ProbeConfig: a setting added there and not here fails this.
    assert CONFIG.read_text(encoding="utf-8") == example_config(), (
        "systemd/pqd.toml differs from the settings table; run: "
        "python -m pqd.config.doc > systemd/pqd.toml (then deploy/kubernetes/generate.py)"
    )


def test_the_example_documents_every_setting() -> None:
    text = CONFIG.read_text(encoding="utf-8")
    config = tomllib.loads(text)
    assert set(GLOBAL_FIELDS) - set(config) == {"web_config_file"}  # shown commented out
    assert '# web_config_file = "' in text
    first = next(iter(config["probes"].values()))
    # The first probe runs on an interval, under pqd's own python and its environment.
    assert set(PROBE_FIELDS) - set(first) == {"cron", "python", "environment"}
    assert '# cron = "' in text
    assert '# python = "' in text
    assert "# environment = { " in text


def test_pqd_accepts_the_example_config() -> None:
    # The real parser is the judge of the file operators copy to /etc/pqd; fails until pqd's
    # `check-config` exists.
    result = run([sys.executable, "-m", "pqd", "check-config", str(CONFIG)])
    assert result.returncode == 0, describe(result)
