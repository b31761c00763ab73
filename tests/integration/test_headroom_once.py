"""Headroom under real conditions, through `pqd once` (docs/design.md §2, "Headroom"): each
condition is created for real around the command (tests.helpers.conditions) and each gauge's
value is compared with what the test reads itself from the cgroup, the rlimit, the mount or the
temp dir. Every cycle here still succeeds: headroom is read before anything fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import conditions as c

PQD = [sys.executable, "-m", "pqd", "once"]


def once(*wraps: c.Wrap, args: tuple[str, ...] = ("--json",)) -> tuple[int, str, str]:
    done = c.run([*PQD, *args], *wraps, timeout=120)
    return done.returncode, done.stdout, done.stderr


def result_in(*wraps: c.Wrap) -> dict[str, Any]:
    code, out, err = once(*wraps)
    assert code == 0, err[-3000:]
    (result,) = json.loads(out)
    assert result["success"], result["detail"]
    assert result["headroom"] is not None
    return result  # type: ignore[no-any-return]


def lines_in(*wraps: c.Wrap) -> dict[str, str]:
    """pqd once's headroom_* lines, by resource."""
    code, out, err = once(*wraps, args=())
    assert code == 0, err[-3000:]
    return {
        key.removeprefix("headroom_"): value
        for key, _, value in (line.partition(": ") for line in out.splitlines())
        if key.startswith("headroom_")
    }


def source(group: c.Cgroup) -> str:
    return f"cgroup v{group.version} {group.path}"


def test_pids_limit_and_usage_are_the_pids_cgroup_s() -> None:
    # 64 is above what one pqd once needs (about 28) and tight enough to matter.
    with c.pids_cgroup(64) as group:
        room = result_in(group.wrap)["headroom"]
        limit = int(group.read("pids.max"))
        lines = lines_in(group.wrap)
    assert room["pids_limit"] == limit == 64
    assert room["pids_source"] == source(group)
    # pqd once and its runner, with their threads, at least; the cycle's own come later.
    assert 2 <= room["pids_current"] < limit
    used, of, rest = lines["pids"].partition(" of 64 (")
    assert of and 2 <= int(used) < 64 and rest.endswith(f"%) ({source(group)})"), lines["pids"]


def test_memory_limit_and_usage_are_the_memory_cgroup_s() -> None:
    with c.memory_cgroup(512 << 20) as group:
        room = result_in(group.wrap)["headroom"]
        name = "memory.max" if group.version == 2 else "memory.limit_in_bytes"
        limit = int(group.read(name))
        peak = int(group.read("memory.peak" if group.version == 2 else "memory.max_usage_in_bytes"))
    assert room["memory_limit_bytes"] == limit == 512 << 20
    assert room["memory_source"] == source(group)
    # Read as the cycle began: more than nothing, no more than the group's peak since.
    assert 0 < room["memory_usage_bytes"] <= peak <= limit


def test_open_files_limit_is_the_soft_rlimit_and_the_cycle_stays_below_it() -> None:
    result = result_in(c.rlimits(nofile=200))
    assert result["headroom"]["open_files_limit"] == 200
    # The runner holds a pipe pair per worker and the Manager's sockets: well above stdio.
    assert 3 < result["max_open_files"] < 200


def test_cpu_quota_is_the_cpu_cgroup_s_and_pool_size_is_the_interpreter_s() -> None:
    with c.cpu_cgroup(0.5) as group:
        room = result_in(group.wrap)["headroom"]
        if group.version == 2:
            quota, period = (int(v) for v in group.read("cpu.max").split())
        else:
            quota, period = (
                int(group.read("cpu.cfs_quota_us")),
                int(group.read("cpu.cfs_period_us")),
            )
    assert room["cpu_quota_cores"] == quota / period == 0.5
    assert room["cpu_source"] == source(group)
    # The quota does not change what Pool() starts (CPython gh-149452).
    count = getattr(os, "process_cpu_count", os.cpu_count)()
    assert room["cpu_count"] == count


def test_a_small_dev_shm_is_seen_with_its_size_and_free_space() -> None:
    with c.private_shm("1m") as namespace:
        room = result_in(namespace.wrap)["headroom"]
        lines = lines_in(namespace.wrap)
    assert room["shm_size_bytes"] == 1 << 20
    # A fresh tmpfs: everything free but what earlier cycles of this run still hold (none).
    assert room["shm_available_bytes"] == 1 << 20
    assert room["shm_objects"] == 0
    assert lines["shm"] == (
        "1048576 of 1048576 bytes free (100.0%), 0 entries, 0 left by this cycle"
    )


@pytest.mark.parametrize(("length", "usable"), [(75, True), (76, False)])
def test_the_temp_dir_is_usable_up_to_the_af_unix_path_limit(length: int, usable: bool) -> None:
    # 75 + "/pymp-XXXXXXXX/listener-XXXXXXXX" (32) = 107, the longest AF_UNIX path.
    assert (length + 32 <= c.AF_UNIX_PATH_MAX) is usable
    with c.hostile_tmpdir("long", length) as tmpdir:
        code, out, _ = once(tmpdir.wrap)
    (result,) = json.loads(out)
    room = result["headroom"]
    assert room["tmpdir"] == str(tmpdir.path)
    assert room["tmpdir_usable"] is usable, room
    if not usable:
        assert "AF_UNIX path too long" in room["tmpdir_problem"]
        assert code == 1 and not result["success"]  # the headroom said so before it failed


def interpreter(version: str) -> str:
    found = shutil.which(f"python{version}")
    assert found, f"python{version} is needed (pyenv) for a probe under that interpreter"
    real = subprocess.run(
        [found, "-c", "import sys; print(sys.executable)"],
        env={**os.environ, "PYENV_VERSION": {"3.9": "3.9.18", "3.13": "3.13.0"}[version]},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return real.stdout.strip()


def test_pool_size_is_the_probe_s_interpreter_s_in_the_probe_s_environment(
    tmp_path: Path,
) -> None:
    # 3.9 sizes Pool() by os.cpu_count(); 3.13 by os.process_cpu_count(), which honours
    # PYTHON_CPU_COUNT: given to that probe only, through its environment setting.
    config = tmp_path / "pqd.toml"
    config.write_text(
        f'[probes.old]\npython = "{interpreter("3.9")}"\njob_pause = "0s"\n'
        f'[probes.new]\npython = "{interpreter("3.13")}"\njob_pause = "0s"\n'
        'environment = { PYTHON_CPU_COUNT = "7" }\n'
    )
    code, out, err = once(args=("--json", "--config", str(config)))
    assert code == 0, err[-3000:]
    rooms = {r["probe"]: r["headroom"] for r in json.loads(out)}
    assert rooms["old"]["cpu_count"] == os.cpu_count()
    assert rooms["new"]["cpu_count"] == 7
    # The quota is the host's in both: Pool() would oversubscribe it under "new".
    assert rooms["old"]["cpu_quota_cores"] == rooms["new"]["cpu_quota_cores"]
