"""pqd's reason for a cycle it ended itself (pqd.supervisor.progress.blame): a stopped helper
is helper_died, judged by the roles read before the kill (a killed process has no command line:
its pid here is one that does not exist)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pqd.probe import ProbeConfig
from pqd.supervisor.progress import Progress, blame

RUNNER = 4_194_301  # above any pid_max in use here: /proc has nothing of it, as after a kill
HELPER = RUNNER + 1
WORKER = RUNNER + 2

CASES: list[tuple[str, dict[int, str], dict[int, str], tuple[str, str], tuple[str, str]]] = [
    ("stopped forkserver", {HELPER: "T"}, {HELPER: "forkserver"}, ("timeout", ""),
     ("helper_died", f"forkserver pid {HELPER} is stopped (state T)")),
    ("traced tracker", {HELPER: "t"}, {HELPER: "resource_tracker"}, ("timeout", ""),
     ("helper_died", f"resource_tracker pid {HELPER} is stopped (state t)")),
    ("stopped runner", {RUNNER: "T"}, {RUNNER: "runner"}, ("timeout", ""),
     ("helper_died", f"runner pid {RUNNER} is stopped (state T)")),
    ("stopped worker is no helper", {WORKER: "T"}, {WORKER: "pool worker 1"}, ("timeout", "x"),
     ("timeout", "x")),
    ("unnamed stopped process", {WORKER: "T"}, {}, ("timeout", "x"), ("timeout", "x")),
    ("another reason stands", {HELPER: "T"}, {HELPER: "forkserver"}, ("job_error", "y"),
     ("job_error", "y")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("states", "named", "given", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_blame(
    states: dict[int, str],
    named: dict[int, str],
    given: tuple[str, str],
    expected: tuple[str, str],
) -> None:
    runner: Any = SimpleNamespace(pid=RUNNER)
    progress = Progress(ProbeConfig(name="p"), "c", 0.0, 0.0)
    assert blame(runner, states, named, *given, progress) == expected


def test_an_empty_detail_says_where_the_cycle_was() -> None:
    runner: Any = SimpleNamespace(pid=RUNNER)
    progress = Progress(ProbeConfig(name="p", timeout=5.0), "c", 0.0, 0.0)
    assert blame(runner, {}, {}, "timeout", "", progress) == (
        "timeout",
        "starting the Manager and the pool unfinished after 5s; pqd killed the tree",
    )
