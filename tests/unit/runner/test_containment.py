"""Finding the cgroup v2 hierarchy and pqd's place in it, from /proc text (plain data)."""

from __future__ import annotations

from pqd.runner.containment import ProbeCgroup, cgroup2_mount, cgroup2_path

HYBRID_MOUNTINFO = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
UNIFIED_MOUNTINFO = """\
24 1 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
28 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw
"""


def test_the_v2_mount_is_found_beside_v1_controllers() -> None:
    assert cgroup2_mount(HYBRID_MOUNTINFO) == "/sys/fs/cgroup/unified"


def test_the_v2_mount_on_a_unified_host_has_optional_fields_before_the_separator() -> None:
    assert cgroup2_mount(UNIFIED_MOUNTINFO) == "/sys/fs/cgroup"


def test_no_v2_mount() -> None:
    assert cgroup2_mount(HYBRID_MOUNTINFO.replace("cgroup2 cgroup2", "cgroup cgroup")) is None


def test_own_path_is_the_v2_line_of_proc_self_cgroup() -> None:
    text = "9:name=systemd:/\n4:memory:/x/y\n0::/system.slice/pqd.service\n"
    assert cgroup2_path(text) == "/system.slice/pqd.service"
    assert cgroup2_path("0::/\n") == "/"
    assert cgroup2_path("4:memory:/x\n") is None


def test_probe_groups_are_named_after_the_probe_or_its_hex_when_not_plain() -> None:
    assert ProbeCgroup.for_probe("/cg", "web-1_a").path == "/cg/probe-web-1_a"
    odd = ProbeCgroup.for_probe("/cg", "../évil name")
    assert odd.path.startswith("/cg/probe-x") and "/" not in odd.path[len("/cg/") :]
