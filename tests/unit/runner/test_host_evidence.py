"""pqd.runner.host_evidence.dir_problem on real paths (a read-only one is made for real in
tests/integration/test_causes_once.py, which needs a mount namespace)."""

from __future__ import annotations

from pathlib import Path

from pqd.runner.host_evidence import dir_problem


def test_what_keeps_a_directory_from_being_a_temp_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert [dir_problem(str(tmp_path / name)) for name in ("gone", "file", "dangling", "")] == [
        "missing",
        "not a directory",
        "missing",
        "",
    ]
