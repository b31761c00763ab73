"""Causes under `pqd run`, each condition created for real around the daemon (docs/design.md §1,
"Causes"): the failed cycle's log line, /cycles/ID, pqd_cycle_failure_causes_total and
pqd_last_cycle_cause all name it, and nothing of the tree reaches the daemon's log raw."""

from __future__ import annotations

import contextlib
import dataclasses
import html
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.helpers import conditions as c
from tests.helpers.daemon_faults import idle_runner_tree
from tests.helpers.pqd_process import PqdProcess, running_pqd, sample, wait_until

PQD = [sys.executable, "-m", "pqd"]
ONE_PROBE = '[probes.p]\ninterval = "1s"\ntimeout = "10s"\nworkers = 8\n'
#: RLIMIT_NPROC for pqd run: room for the daemon's own threads, not for a cycle of 8 workers.
NPROC = 30
#: The issue's race: 3 probes of 4 workers at once under one pids limit of 64.
THREE_PROBES = "".join(f'[probes.p{i}]\ninterval = "1s"\ntimeout = "10s"\n' for i in range(3))


@contextlib.contextmanager
def daemon(
    tmp_path: Path, config: str, *wraps: c.Wrap, cwd: str | None = None
) -> Iterator[PqdProcess]:
    with running_pqd(
        tmp_path, config, command=c.command(PQD, *wraps), env=c.environment(*wraps), cwd=cwd
    ) as pqd:
        yield pqd


def failed_lines(pqd: PqdProcess) -> list[dict[str, str]]:
    return pqd.log_events("cycle failed")


def assert_no_raw_output(pqd: PqdProcess) -> None:
    log = pqd.log_text()
    assert "Traceback" not in log and "Warning:" not in log, log[-3000:]


def assert_page_names_it(pqd: PqdProcess, line: dict[str, str], cause: str) -> None:
    """The cycle's page gives the cause with the log line's whole sentence."""
    status, page = pqd.get(f"/cycles/{line['cycle_id']}")
    assert status == 200
    assert f"{cause}: {line['cause_detail']}" in html.unescape(page), page[:3000]


def assert_on_every_surface(
    pqd: PqdProcess, cause: str, words: tuple[str, ...], cycle_id: str = ""
) -> dict[str, str]:
    """The cause counted and the last cycle's state set on it, its sentence with ``words`` in a
    failed cycle's log line (the first of that cause, or ``cycle_id``'s), its page naming it,
    nothing raw in the log; that line."""
    text = pqd.scrape_until(
        lambda t: (sample(t, "pqd_cycle_failure_causes_total", probe="p", cause=cause) or 0) >= 1,
        f"a {cause} cycle",
        seconds=60,
    )
    assert sample(text, "pqd_last_cycle_cause", probe="p", pqd_last_cycle_cause=cause) == 1
    assert sample(text, "pqd_last_cycle_cause", probe="p", pqd_last_cycle_cause="none") == 0
    lines = wait_until(
        lambda: [
            x
            for x in failed_lines(pqd)
            if x["cause"] == cause and x["cycle_id"] == (cycle_id or x["cycle_id"])
        ],
        f"a {cause} log line",
    )
    for word in words:
        assert word in lines[0]["cause_detail"], (word, lines[0])
    assert_page_names_it(pqd, lines[0], cause)
    assert_no_raw_output(pqd)
    return lines[0]


@dataclasses.dataclass(frozen=True)
class Setup:
    """What creates a condition around the daemon: its wraps, the probe's extra settings, the
    daemon's working directory (None: the test's), and the names its words are formatted with."""

    wraps: list[c.Wrap]
    extra: str = ""
    cwd: str | None = None
    names: dict[str, str] = dataclasses.field(default_factory=dict)


def _setup(condition: str, stack: contextlib.ExitStack) -> Setup:
    """What creates ``condition`` around the daemon."""
    if condition == "shm_phase_short":
        ns = stack.enter_context(c.private_shm("4m"))
        return Setup([ns.wrap], f"shared_memory_bytes = {8 << 20}\n")
    if condition.startswith("shm_"):
        kind = condition.removeprefix("shm_")
        options = {"mode": 0} if kind == "mode_000" else {kind: True}
        return Setup([stack.enter_context(c.private_shm("64k", **options)).wrap])
    if condition == "nofile":
        return Setup([c.rlimits(nofile=24)])
    if condition == "nproc":
        return Setup([stack.enter_context(c.nproc_limit(NPROC))])
    if condition == "tmpdir_long":
        return Setup([stack.enter_context(c.hostile_tmpdir("long", 106)).wrap])
    if condition.startswith("tmpdir_"):
        return _unusable_probe_tmpdir(condition.removeprefix("tmpdir_"), stack)
    hook = stack.enter_context(c.worker_hook())
    for _ in range(3):  # each fault is taken by one job; a few, for two failed cycles
        hook.add(condition)
    return Setup([hook.wrap])


def _unusable_probe_tmpdir(kind: str, stack: contextlib.ExitStack) -> Setup:
    """The probe's TMPDIR (its ``environment``) of ``kind``, with /tmp, /var/tmp, /usr/tmp and
    the daemon's working directory read-only: the runner's tempfile finds no usable directory.
    pqd's own TMPDIR is usable, so the daemon itself starts its runner."""
    tmp = stack.enter_context(c.hostile_tmpdir(kind, fallbacks=False))
    assert tmp.cwd is not None and tmp.usable is not None
    own = dataclasses.replace(tmp.wrap, env=(("TMPDIR", str(tmp.usable)),))
    extra = f'environment = {{ TMPDIR = "{tmp.path}" }}\n'
    return Setup([own], extra, str(tmp.cwd), {"path": str(tmp.path), "cwd": str(tmp.cwd)})


#: (condition, cause, words of the sentence; {path} and {cwd} name a temp dir condition's).
SURFACE_CASES = [
    ("shm_fill", "shm_full", ("/dev/shm is full", "64 KiB")),
    ("shm_read_only", "shm_unavailable", ("read-only",)),
    ("shm_absent", "shm_unavailable", ("does not exist",)),
    ("shm_mode_000", "shm_unavailable", ("not writable",)),
    ("shm_phase_short", "shm_full", ("SIGBUS", "8.0 MiB shared-memory block")),
    ("nofile", "open_files_limit", ("RLIMIT_NOFILE", "of 24")),
    ("nproc", "process_limit", (f"RLIMIT_NPROC of {NPROC}",)),
    ("tmpdir_long", "tmpdir_unusable", ("TMPDIR is 106 characters",)),
    ("tmpdir_missing", "tmpdir_unusable", ("TMPDIR {path} is missing", "/tmp read-only")),
    ("tmpdir_file", "tmpdir_unusable", ("TMPDIR {path} is not a directory", "/tmp read-only")),
    (
        "tmpdir_unwritable",
        "tmpdir_unusable",
        ("TMPDIR {path} is read-only", "the working directory {cwd} read-only"),
    ),
    ("segv", "crashed", ("pool worker pid", "SIGSEGV")),
    ("abrt", "crashed", ("pool worker pid", "SIGABRT")),
    ("bus", "crashed", ("pool worker pid", "SIGBUS")),
    ("unpicklable_result", "unpicklable", ("MaybeEncodingError",)),
    ("unpicklable_error", "unpicklable", ("TypeError",)),
    ("stop", "stopped", ("state T",)),
]
#: Every start method: each starts its workers its own way (the default is forkserver).
METHODS = ("default", "spawn", "fork")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("condition", "cause", "words"), SURFACE_CASES)
def test_a_condition_is_named_on_every_surface(
    tmp_path: Path, condition: str, cause: str, words: tuple[str, ...], method: str
) -> None:
    with contextlib.ExitStack() as stack:
        setup = _setup(condition, stack)
        extra = setup.extra
        if method != "default":
            extra += f'start_method = "{method}"\n'
        config = ONE_PROBE.replace('timeout = "10s"', 'timeout = "6s"') + extra
        pqd = stack.enter_context(daemon(tmp_path, config, *setup.wraps, cwd=setup.cwd))
        assert_on_every_surface(pqd, cause, tuple(w.format(**setup.names) for w in words))


def test_a_pids_limit_is_one_cause_whatever_part_of_the_cycle_tripped(tmp_path: Path) -> None:
    with c.pids_cgroup(64) as group, daemon(tmp_path, THREE_PROBES, group.wrap) as pqd:
        pqd.scrape_until(
            lambda t: (
                sum(
                    sample(
                        t, "pqd_cycle_failure_causes_total", probe=f"p{i}", cause="process_limit"
                    )
                    or 0
                    for i in range(3)
                )
                >= 3
            ),
            "three process_limit cycles",
            seconds=90,
        )
        refused = group.keyed("pids.events")["max"]
        lines = failed_lines(pqd)
        assert_no_raw_output(pqd)
    assert refused > 0
    # Every failed cycle says process_limit, not the reason it tripped over (EOFError, a hung
    # join, a dead Manager, ...). A cycle can fail from a limit hit while it ran, so each
    # must name the cgroup.
    assert lines and {line["cause"] for line in lines} == {"process_limit"}, lines
    assert all(group.path.name in line["cause_detail"] for line in lines), lines
    assert len({line["reason"] for line in lines}) >= 1


def test_an_oom_killed_worker_is_named_with_its_peak(tmp_path: Path) -> None:
    with (
        c.memory_cgroup(150 * 2**20) as group,
        c.worker_hook() as hook,
        daemon(tmp_path, ONE_PROBE, group.wrap, hook.wrap) as pqd,
    ):
        hook.add("oom 300000000")
        text = pqd.scrape_until(
            lambda t: (
                (sample(t, "pqd_cycle_failure_causes_total", probe="p", cause="memory_limit") or 0)
                >= 1
            ),
            "a memory_limit cycle",
            slow_scrapes_ok=True,  # pqd is in the cgroup too: it thrashes with the job
        )
        line = failed_lines(pqd)[0]
        assert_page_names_it(pqd, line, "memory_limit")
        assert_no_raw_output(pqd)
    assert "OOM killer" in line["cause_detail"] and "150 MiB" in line["cause_detail"]
    assert (sample(text, "pqd_last_cycle_max_rss_bytes", probe="p") or 0) > 60 * 2**20


def test_semaphores_removed_under_a_running_daemon(tmp_path: Path) -> None:
    """RemoveIPC=yes under `pqd run`: every named semaphore is unlinked as soon as it appears
    in the daemon's private /dev/shm, so a cycle's workers cannot rebuild theirs."""
    with (
        c.private_shm("1m") as ns,
        daemon(tmp_path, ONE_PROBE, ns.wrap) as pqd,
        c.SemaphoreReaper(ns.shm_dir(pqd.pid)) as reaper,
    ):
        assert_on_every_surface(pqd, "semaphore_removed", ("sem.mp-", "RemoveIPC"))
    assert reaper.removed, "the reaper removed no semaphore: the condition was not created"


def test_a_worker_frozen_in_d_state_is_uninterruptible_under_the_daemon(tmp_path: Path) -> None:
    """A v1 freezer puts the sleeping worker in state D at the deadline; the daemon names it and
    goes on (the frozen worker is thawed once the cause is read, so the tree can be killed)."""
    config = ONE_PROBE.replace('timeout = "10s"', 'timeout = "6s"')
    with (
        c.worker_hook() as hook,
        c.freezer_cgroup() as freezer,
        daemon(tmp_path, config, hook.wrap) as pqd,
    ):
        hook.add("sleep 30")
        victim = c.wait_until(hook.claimed, "a worker sleeping in its job")[0]
        try:
            freezer.move(victim)
            c.freeze(freezer)
            assert c.proc_state(victim) == "D", "the freezer did not make the worker D"
            assert_on_every_surface(pqd, "uninterruptible", (f"pid {victim}", "state D"))
        finally:
            c.freeze(freezer, frozen=False)


#: Room between a warm runner's cycles for moving it into a cgroup: under a minute keeps the
#: runner warm (docs/design.md §1a), and a cycle of 8 workers on a loaded machine ends well
#: within this.
SPACED = ONE_PROBE.replace('interval = "1s"', 'interval = "5s"')


def first_cycle_begun_after(pqd: PqdProcess, moment: float) -> dict[str, str]:
    """The log line of the first cycle of probe p that began after ``moment``, once it ended."""

    def found() -> list[dict[str, str]]:
        lines = pqd.log_events("cycle finished") + failed_lines(pqd)
        begun = [x for x in lines if x.get("probe") == "p" and float(x["started_at"]) > moment]
        return sorted(begun, key=lambda x: float(x["started_at"]))[:1]

    return wait_until(found, "a cycle begun after the move", seconds=60)[0]


def fail_a_cycle_inside(
    pqd: PqdProcess, group: c.Cgroup, prepare: Callable[[list[psutil.Process]], None]
) -> tuple[list[psutil.Process], dict[str, str]]:
    """Move the probe's idle runner tree (``prepare``d first) into ``group``; the tree and the
    failed log line of the first cycle begun after the move. When that cycle passed, the move
    came too late for it (it began first; its failure killed the tree, and the next cycle's new
    runner was born outside): the next idle runner is moved instead."""
    for _attempt in range(3):
        tree = idle_runner_tree(pqd, "p")
        prepare(tree)
        for process in tree:
            group.move(process.pid)
        line = first_cycle_begun_after(pqd, time.time())
        if line["msg"] == "cycle failed":
            return tree, line
    raise AssertionError(f"no cycle begun after its runner was moved into {group.path} failed")


def test_a_pids_limit_of_12_with_8_workers_is_named_with_its_numbers(tmp_path: Path) -> None:
    """The issue's row under `pqd run`: the probe's runner and its helpers (the forkserver forks
    the workers) are moved between cycles into a pids cgroup of 12, which a cycle of 8 workers
    does not fit in. The daemon itself (a dozen threads) stays outside, as pqd's own probe
    cgroups leave it (docs/design.md §1a, "Containment")."""
    with c.pids_cgroup(12) as group, daemon(tmp_path, SPACED) as pqd:
        _, line = fail_a_cycle_inside(pqd, group, lambda tree: None)
        words = ("pids limit of the cgroup", group.path.name, "12 of 12")
        assert_on_every_surface(pqd, "process_limit", words, line["cycle_id"])
        refused = group.keyed("pids.events")["max"]
    assert refused > 0 and "fork(s) refused" in line["cause_detail"], line


def test_the_oom_killer_taking_the_runner_is_named(tmp_path: Path) -> None:
    """The probe's runner and its helpers are moved between cycles into a memory cgroup of
    16 MiB (v1 charges stay where they were made, so the group starts near empty); the next
    cycle's Manager and 8 workers do not fit. The runner's oom_score_adj of 1000 makes it the
    OOM killer's choice in the group (else the forkserver, about as large, may be), so pqd sees
    its runner die of SIGKILL; the daemon, outside, starts a new one."""

    def prefer_the_runner(tree: list[psutil.Process]) -> None:
        Path(f"/proc/{tree[-1].pid}/oom_score_adj").write_text("1000")

    with c.memory_cgroup(16 * 2**20) as group, daemon(tmp_path, SPACED) as pqd:
        tree, line = fail_a_cycle_inside(pqd, group, prefer_the_runner)
        words = (f"runner pid {tree[-1].pid}", "OOM killer", "16 MiB", group.path.name)
        assert_on_every_surface(pqd, "memory_limit", words, line["cycle_id"])
        kills = c.oom_kills(group)
    assert kills >= 1 and line["reason"] == "helper_died", line


def test_a_runner_that_cannot_start_under_a_pids_limit_is_named(tmp_path: Path) -> None:
    """The daemon alone moved into a pids cgroup that holds just its own tasks, and its warm
    runner killed between cycles: the next cycle's new runner, born in that cgroup, cannot
    start. The limit that refused it is named, not only an EAGAIN."""
    config = ONE_PROBE.replace('interval = "1s"', 'interval = "3s"')
    with c.pids_cgroup("max") as group, daemon(tmp_path, config) as pqd:
        runner = idle_runner_tree(pqd, "p")[-1]
        group.move(pqd.pid)
        try:
            group.write("pids.max", group.read("pids.current"))
            runner.kill()
            words = ("pids limit of the cgroup", group.path.name)
            line = assert_on_every_surface(pqd, "process_limit", words)
        finally:
            group.write("pids.max", "max")
    assert line["reason"] == "spawn_failed" and "starting the runner" in line["detail"], line
