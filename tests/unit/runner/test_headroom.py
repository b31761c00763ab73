"""pqd.runner.headroom on files laid out like the kernel's: cgroup v1 and v2 ancestries, "no
limit" spellings, and the interpreter's Pool() size under 3.9 and 3.13 (docs/design.md §2)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pqd.runner import headroom

SRC = Path(__file__).resolve().parents[3] / "src"

MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / {root}/cpu rw,relatime - cgroup cgroup rw,cpu
39 31 0:36 / {root}/pids rw,relatime - cgroup cgroup rw,pids
35 31 0:32 / {root}/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / {root}/unified rw,relatime - cgroup2 cgroup2 rw
"""
PROC_CGROUP = """\
8:pids:/a/b
4:memory:/a
1:cpu:/
0::/x/y
"""


def write(path: Path, files: dict[str, str]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (path / name).write_text(text + "\n")


def test_ancestry_walks_v1_and_v2_from_own_cgroup_up_to_the_mount(tmp_path: Path) -> None:
    info = MOUNTINFO.format(root=tmp_path)
    pids = headroom.ancestry("pids", PROC_CGROUP, info)
    assert pids == [
        ("v1", f"{tmp_path}/pids/a/b"),
        ("v1", f"{tmp_path}/pids/a"),
        ("v1", f"{tmp_path}/pids"),
        ("v2", f"{tmp_path}/unified/x/y"),
        ("v2", f"{tmp_path}/unified/x"),
        ("v2", f"{tmp_path}/unified"),
    ]
    # A controller no v1 hierarchy carries is looked for in v2 only.
    assert [v for v, _ in headroom.ancestry("hugetlb", PROC_CGROUP, info)] == ["v2"] * 3


def test_a_mount_of_a_subtree_maps_the_path_below_its_root(tmp_path: Path) -> None:
    info = f"41 31 0:38 /x {tmp_path} rw - cgroup2 cgroup2 rw\n"
    assert headroom.ancestry("pids", "0::/x/y\n", info) == [
        ("v2", f"{tmp_path}/y"),
        ("v2", str(tmp_path)),
    ]
    # Our cgroup outside the mounted subtree: nothing to read there.
    assert headroom.ancestry("pids", "0::/other\n", info) == []


def test_the_tightest_limit_wins_wherever_it_is_in_the_ancestry(tmp_path: Path) -> None:
    write(tmp_path / "v1/a/b", {"pids.max": "max", "pids.current": "3"})
    write(tmp_path / "v1/a", {"pids.max": "40", "pids.current": "7"})
    write(tmp_path / "v2/x", {"pids.max": "100", "pids.current": "9"})
    dirs = [
        ("v1", str(tmp_path / "v1/a/b")),
        ("v1", str(tmp_path / "v1/a")),
        ("v1", str(tmp_path / "v1")),  # the root: no files at all
        ("v2", str(tmp_path / "v2/x")),
    ]
    names = {"v1": "pids.max", "v2": "pids.max"}
    usage = {"v1": "pids.current", "v2": "pids.current"}
    assert headroom._tightest(dirs, names, usage) == (40, 7, f"cgroup v1 {tmp_path}/v1/a")
    assert headroom._tightest(dirs[:1], names, usage) is None  # "max" is no limit


def test_v1_memory_unlimited_is_no_limit(tmp_path: Path) -> None:
    write(tmp_path, {"memory.limit_in_bytes": "9223372036854771712", "memory.usage_in_bytes": "5"})
    names = {"v1": "memory.limit_in_bytes", "v2": "memory.max"}
    usage = {"v1": "memory.usage_in_bytes", "v2": "memory.current"}
    assert headroom._tightest([("v1", str(tmp_path))], names, usage) is None


@pytest.mark.parametrize(
    ("version", "files", "cores"),
    [
        ("v2", {"cpu.max": "50000 100000"}, 0.5),
        ("v2", {"cpu.max": "max 100000"}, None),
        ("v1", {"cpu.cfs_quota_us": "150000", "cpu.cfs_period_us": "100000"}, 1.5),
        ("v1", {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"}, None),
        ("v1", {}, None),
    ],
)
def test_cpu_quota_spellings(
    tmp_path: Path, version: str, files: dict[str, str], cores: float | None
) -> None:
    write(tmp_path, files)
    assert headroom._cpu_quota(version, str(tmp_path)) == cores


def test_read_on_this_host_is_consistent() -> None:
    room = headroom.read()
    assert 0 <= room.shm_available_bytes <= room.shm_size_bytes
    assert 0 <= room.pids_current <= room.pids_limit
    assert 0 <= room.memory_usage_bytes <= room.memory_limit_bytes
    assert room.cpu_quota_cores <= len(os.sched_getaffinity(0))
    assert room.open_files_limit == os.sysconf("SC_OPEN_MAX")
    assert room.tmpdir_usable and room.tmpdir_problem == ""
    assert room.read_seconds > 0


def test_a_temp_dir_too_long_for_an_af_unix_path_is_not_usable(tmp_path: Path) -> None:
    # 107 is the longest AF_UNIX path; multiprocessing adds 32 characters to the temp dir.
    long_dir = tmp_path / ("d" * (107 - 31 - len(str(tmp_path)) - 1))
    short_dir = Path(str(long_dir)[:-1])
    long_dir.mkdir()
    short_dir.mkdir()
    assert len(str(long_dir)) + 32 == 108
    old = headroom.tempfile.tempdir
    headroom.tempfile.tempdir = str(long_dir)
    try:
        where, problem = headroom.tmpdir_check()
        headroom.tempfile.tempdir = str(short_dir)
        shorter = headroom.tmpdir_check()
    finally:
        headroom.tempfile.tempdir = old
    assert where == str(long_dir) and "socket path" in problem
    assert shorter == (str(short_dir), "")
    assert list(long_dir.iterdir()) == list(short_dir.iterdir()) == []  # nothing left behind


def _interpreter(version: str) -> str:
    found = shutil.which(f"python{version}")
    assert found, f"python{version} is needed (pyenv) to check the runner's side under it"
    return found


def _read_in(version: str, env: dict[str, str]) -> dict[str, object]:
    code = (
        "import dataclasses, json; from pqd.runner import headroom; "
        "print(json.dumps(dataclasses.asdict(headroom.read())))"
    )
    out = subprocess.run(
        [_interpreter(version), "-c", code],
        env={**os.environ, "PYTHONPATH": str(SRC), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    data: dict[str, object] = json.loads(out.stdout)
    return data


def test_runs_under_python_3_9_and_sizes_pool_by_cpu_count() -> None:
    room = _read_in("3.9", {"PYENV_VERSION": "3.9.18"})
    assert room["cpu_count"] == os.cpu_count()


def test_python_3_13_pool_size_honours_python_cpu_count() -> None:
    room = _read_in("3.13", {"PYENV_VERSION": "3.13.0", "PYTHON_CPU_COUNT": "7"})
    assert room["cpu_count"] == 7
