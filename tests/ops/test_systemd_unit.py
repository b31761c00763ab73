"""systemd/pqd.service: verified by systemd itself, hardened without falsifying metrics.

systemd-analyze comes with Debian's `systemd` package (on the machine already); no running
systemd is needed: `verify` and `security --offline=true` read the file.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.helpers.ops import ROOT, describe, require_tool, run

UNIT = ROOT / "systemd/pqd.service"
MAX_EXPOSURE = 2.0
HINT = "apt-get install -y systemd (ships systemd-analyze)"


def directives(text: str) -> dict[str, list[str]]:
    """Key -> every value it is given, in order (SystemCallFilter= may repeat)."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointed at a binary that exists here: `verify` checks that the
    executable exists, and /usr/local/bin/pqd is only there once pqd is installed."""
    text = UNIT.read_text(encoding="utf-8")
    text, count = re.subn(
        r"^ExecStart=/usr/local/bin/pqd ",
        f"ExecStart={sys.executable} -m pqd ",
        text,
        flags=re.MULTILINE,
    )
    assert count == 1, "expected exactly one ExecStart=/usr/local/bin/pqd … line"
    # The unit name matters to systemd-analyze (it names the unit after the file).
    path = tmp_path / "pqd.service"
    path.write_text(text, encoding="utf-8")
    return path


def test_verify_prints_nothing(unit_copy: Path) -> None:
    # verify exits 0 even for a misspelled key (docs/design.md §5); any output at all is a finding.
    result = run([require_tool("systemd-analyze", HINT), "verify", str(unit_copy)])
    assert result.returncode == 0 and not result.stdout and not result.stderr, describe(result)


def test_security_exposure_at_most_2(unit_copy: Path) -> None:
    result = run(
        [require_tool("systemd-analyze", HINT), "security", "--offline=true", str(unit_copy)]
    )
    match = re.search(r"Overall exposure level for pqd\.service:\s*([\d.]+)", result.stdout)
    assert match, describe(result)
    score = float(match.group(1))
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}\n{result.stdout}"
    # The unit's header comment states the score; keep it honest.
    assert f"scores this unit at {score}" in UNIT.read_text(), f"update the comment: {score}"


def test_service_contract() -> None:
    found = directives(UNIT.read_text(encoding="utf-8"))
    expected = {
        "Type": ["notify"],
        "NotifyAccess": ["main"],
        "ExecStart": ["/usr/local/bin/pqd run --config /etc/pqd/pqd.toml"],
        # The shell's builtin kill: minimal systems have no /bin/kill (procps).
        "ExecReload": ["""/bin/sh -c 'kill -HUP "$$MAINPID"'"""],
        "KillMode": ["mixed"],
        "Restart": ["on-failure"],
        "RestartPreventExitStatus": ["78"],
        "DynamicUser": ["yes"],
        "ConfigurationDirectory": ["pqd"],
        "MemoryDenyWriteExecute": ["yes"],
        "NoNewPrivileges": ["yes"],
        "ProtectSystem": ["strict"],
        # Design §1a: a child cgroup per probe runner needs a writable delegated subtree.
        "Delegate": ["yes"],
    }
    for key, value in expected.items():
        assert found.get(key) == value, f"{key}={found.get(key)}, want {value}"
    assert "WatchdogSec" in found
    families = found["RestrictAddressFamilies"]
    assert families == ["AF_UNIX AF_INET AF_INET6"], "Manager, forkserver, sd_notify, HTTP"
    assert found.get("SystemCallFilter", [""])[0] == "@system-service"


def test_no_hardening_that_falsifies_metrics() -> None:
    found = directives(UNIT.read_text(encoding="utf-8"))
    # Design §5: invisible (and ptraceable) hide other users' processes from /proc, so the host
    # pid count would be wrong; noaccess still lists them. ProcSubset=pid silently removes
    # every process_* metric.
    assert found.get("ProtectProc", ["default"])[-1] in {"default", "noaccess"}
    assert found.get("ProcSubset", ["all"])[-1] == "all"
    assert "PrivateNetwork" not in found, "pqd must serve /metrics"
    assert "IPAddressDeny" not in found, "Prometheus scrapes from other hosts"


def test_delegated_cgroup_stays_writable() -> None:
    # ProtectControlGroups=yes (and `strict`) mounts all of /sys/fs/cgroup read-only, the
    # subtree Delegate=yes hands over included: creating a probe's cgroup fails with EROFS and
    # every probe silently falls back to subreaper containment (docs/design.md §1a). `private`
    # (systemd >= 257) gives the unit a writable cgroup namespace and would do.
    found = directives(UNIT.read_text(encoding="utf-8"))
    assert found.get("Delegate", ["no"])[-1] == "yes"
    assert found.get("ProtectControlGroups", ["no"])[-1] in {"no", "private"}
