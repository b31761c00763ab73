"""Every cause of a failed cycle, created for real on this host under `pqd once --json`, for each
start method where it applies (docs/design.md §1, "Causes"; the conditions and their evidence
are those of tests/helpers/conditions.py). Each asserts the reason, the cause, the words of its
sentence that name the resource and the number, and that no raw traceback reached pqd's stderr:
the tree's stderr is kept with the cycle instead."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.helpers import conditions as c

METHODS = ("forkserver", "spawn", "fork")
PQD = [sys.executable, "-m", "pqd", "once", "--json"]


@dataclass
class Case:
    """One condition: how to make it (wraps, extra options) and what pqd must say."""

    reasons: tuple[str, ...]
    cause: str
    words: tuple[str, ...]
    args: tuple[str, ...] = ()
    wraps: list[c.Wrap] = field(default_factory=list)
    check: Callable[[dict[str, Any]], None] | None = None


Setup = Callable[[str], contextlib.AbstractContextManager[Case]]


@contextlib.contextmanager
def shm(kind: str, method: str) -> Iterator[Case]:
    options: dict[str, Any] = {kind: True} if kind != "mode" else {"mode": 0}
    with c.private_shm("64k", **options) as ns:
        words = {
            "fill": ("/dev/shm is full", "64 KiB", "0 B free"),
            "read_only": ("/dev/shm", "read-only"),
            "absent": ("/dev/shm", "does not exist"),
            "mode": ("/dev/shm", "not writable"),
        }[kind]
        cause = "shm_full" if kind == "fill" else "shm_unavailable"
        yield Case(("spawn_failed",), cause, words, wraps=[ns.wrap])


@contextlib.contextmanager
def pids(method: str) -> Iterator[Case]:
    with c.pids_cgroup(12) as group:
        yield Case(
            ("spawn_failed", "job_error", "worker_died", "manager_died", "timeout"),
            "process_limit",
            ("pids limit of the cgroup", group.path.name, "12 of 12"),
            args=("--workers", "8"),
            wraps=[group.wrap],
        )


def helpers_named_in_the_table(result: dict[str, Any]) -> None:
    """The pool fails as it starts: the forkserver and tracker started meanwhile are named as
    the helpers they are, not "other" (out of descriptors, the runner cannot open /proc to see
    them live; multiprocessing's own record names them)."""
    stuck = {s["pid"]: s["role"] for s in result["stuck"]}
    helpers = {h["pid"]: h["role"] for h in result["helpers_started"]}
    assert helpers or result["start_method"] == "fork", result  # fork starts no tracker here
    assert {pid: stuck.get(pid) for pid in helpers} == helpers, result["stuck"]


@contextlib.contextmanager
def nofile(method: str) -> Iterator[Case]:
    yield Case(
        ("spawn_failed",),
        "open_files_limit",
        ("RLIMIT_NOFILE", "of 24", "8 workers"),
        args=("--workers", "8"),
        wraps=[c.rlimits(nofile=24)],
        check=helpers_named_in_the_table,
    )


@contextlib.contextmanager
def nproc(method: str) -> Iterator[Case]:
    with c.nproc_limit(8) as wrap:
        yield Case(
            ("spawn_failed", "manager_died", "job_error", "worker_died"),
            "process_limit",
            ("RLIMIT_NPROC of 8",),
            wraps=[wrap],
        )


@contextlib.contextmanager
def long_tmpdir(method: str) -> Iterator[Case]:
    with c.hostile_tmpdir("long", 106) as tmp:
        yield Case(
            ("spawn_failed",),
            "tmpdir_unusable",
            ("TMPDIR is 106 characters", "107 bytes"),
            wraps=[tmp.wrap],
        )


@contextlib.contextmanager
def long_probe_tmpdir(method: str) -> Iterator[Case]:
    """The same TMPDIR given to the probe alone (its environment, as the application has it):
    pqd's own temp dir is short, and the sentence must measure the probe's."""
    with c.hostile_tmpdir("long", 106) as tmp:
        yield Case(
            ("spawn_failed",),
            "tmpdir_unusable",
            ("TMPDIR is 106 characters", "107 bytes"),
            args=("--environment", f"TMPDIR={tmp.path}"),
        )


@contextlib.contextmanager
def oom(method: str) -> Iterator[Case]:
    with c.memory_cgroup(150 * 2**20) as group, c.worker_hook() as hook:
        hook.add("oom 300000000")

        def check(result: dict[str, Any]) -> None:
            assert c.oom_kills(group) >= 1
            # The killed worker's peak is kept: it held far more than a bare worker's ~23 MB.
            assert result["max_rss_bytes"] > 60 * 2**20, result["max_rss_bytes"]

        yield Case(
            ("worker_died",),
            "memory_limit",
            ("pool worker pid", "OOM killer", "150 MiB", group.path.name),
            wraps=[group.wrap, hook.wrap],
            check=check,
        )


@contextlib.contextmanager
def oom_runner(method: str) -> Iterator[Case]:
    """A memory limit the tree does not fit in, no hog: the OOM killer takes the runner, the
    largest process of the probe's tree, which offers itself before `pqd once` (of about its
    size; design §1a), and pqd sees its runner die of SIGKILL."""
    with c.memory_cgroup(40 * 2**20) as group:

        def check(result: dict[str, Any]) -> None:
            assert c.oom_kills(group) >= 1

        yield Case(
            ("helper_died",),
            "memory_limit",
            ("runner pid", "OOM killer", "40 MiB", group.path.name),
            wraps=[group.wrap],
            check=check,
        )


@contextlib.contextmanager
def fault(
    name: str, cause: str, reason: str, words: tuple[str, ...], method: str
) -> Iterator[Case]:
    with c.worker_hook() as hook:
        hook.add(name)
        yield Case((reason,), cause, words, args=("--timeout", "8s"), wraps=[hook.wrap])


@contextlib.contextmanager
def shm_phase_short(method: str) -> Iterator[Case]:
    """A data loader's batch (8 MiB) through a /dev/shm of 4 MiB: the writer gets SIGBUS."""
    with c.private_shm("4m") as ns:
        yield Case(
            ("worker_died",),
            "shm_full",
            ("SIGBUS", "8.0 MiB shared-memory block", "/dev/shm is a 4.0 MiB tmpfs"),
            args=("--shared-memory-bytes", str(8 << 20)),
            wraps=[ns.wrap],
        )


@contextlib.contextmanager
def bus_before_shm_phase(method: str) -> Iterator[Case]:
    """A SIGBUS in the jobs, before the shared-memory phase, of a probe whose 8 MiB block would
    not fit its 4 MiB /dev/shm: a crash of the worker's own, not /dev/shm's shortage."""
    with c.private_shm("4m") as ns, c.worker_hook() as hook:
        hook.add("bus")
        yield Case(
            ("worker_died",),
            "crashed",
            ("pool worker pid", "SIGBUS"),
            args=("--shared-memory-bytes", str(8 << 20), "--timeout", "8s"),
            wraps=[ns.wrap, hook.wrap],
        )


def _partial(function: Callable[..., Any], *args: Any) -> Setup:
    return lambda method: function(*args, method)


CONDITIONS: dict[str, tuple[Setup, tuple[str, ...]]] = {
    "shm_full": (_partial(shm, "fill"), METHODS),
    "shm_read_only": (_partial(shm, "read_only"), METHODS),
    "shm_absent": (_partial(shm, "absent"), METHODS),
    "shm_mode_000": (_partial(shm, "mode"), METHODS),
    "shm_phase_short": (shm_phase_short, METHODS),
    "pids_limit": (pids, METHODS),
    "nofile_limit": (nofile, METHODS),
    "nproc_limit": (nproc, METHODS),
    "tmpdir_too_long": (long_tmpdir, METHODS),
    "probe_tmpdir_too_long": (long_probe_tmpdir, METHODS),
    "oom_killed_worker": (oom, METHODS),
    "oom_killed_runner": (oom_runner, ("forkserver", "spawn")),
    "segfault": (
        _partial(fault, "segv", "crashed", "worker_died", ("pool worker pid", "SIGSEGV")),
        METHODS,
    ),
    "abort": (
        _partial(fault, "abrt", "crashed", "worker_died", ("pool worker pid", "SIGABRT")),
        METHODS,
    ),
    "bus_error": (
        _partial(fault, "bus", "crashed", "worker_died", ("pool worker pid", "SIGBUS")),
        METHODS,
    ),
    "bus_error_before_a_short_shm_phase": (bus_before_shm_phase, METHODS),
    "unpicklable_result": (
        _partial(fault, "unpicklable_result", "unpicklable", "job_error", ("MaybeEncodingError",)),
        METHODS,
    ),
    "unpicklable_error": (
        _partial(fault, "unpicklable_error", "unpicklable", "timeout", ("TypeError",)),
        METHODS,
    ),
    "stopped_worker": (
        _partial(fault, "stop", "stopped", "timeout", ("pool worker", "state T")),
        METHODS,
    ),
}
PARAMS = [(name, method) for name, (_, methods) in CONDITIONS.items() for method in methods]


def once(
    case: Case, method: str, env: dict[str, str] | None = None, cwd: str | None = None
) -> tuple[dict[str, Any], str]:
    done = c.run([*PQD, "--start-method", method, *case.args], *case.wraps, env=env, cwd=cwd)
    assert done.stdout, (done.returncode, done.stderr[-2000:])
    (result,) = json.loads(done.stdout)
    return result, done.stderr


def start(args: list[str], *wraps: c.Wrap) -> subprocess.Popen[str]:
    """`pqd once --json ARGS` inside ``wraps``, left running (to act on its tree meanwhile)."""
    return subprocess.Popen(
        c.command([*PQD, *args], *wraps),
        env=c.environment(*wraps),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_cause(result: dict[str, Any], stderr: str, case: Case) -> None:
    assert not result["success"]
    assert result["reason"] in case.reasons, (result["reason"], result["detail"])
    assert result["cause"] == case.cause, (result["cause"], result["cause_detail"], result)
    for word in case.words:
        assert word in result["cause_detail"], (word, result["cause_detail"])
    # Nothing of the tree on pqd's own stderr: it is kept with the cycle.
    assert "Traceback" not in stderr and "Error" not in stderr, stderr[-2000:]
    if case.check is not None:
        case.check(result)


@pytest.mark.parametrize(("condition", "method"), PARAMS, ids=[f"{n}-{m}" for n, m in PARAMS])
def test_pqd_once_names_the_cause(condition: str, method: str) -> None:
    setup, _ = CONDITIONS[condition]
    with setup(method) as case:
        result, stderr = once(case, method)
        assert_cause(result, stderr, case)


@pytest.mark.parametrize("method", ("forkserver", "spawn"))
def test_semaphores_removed_while_the_cycle_runs(method: str) -> None:
    with c.private_shm("1m") as ns:
        proc = start(["--start-method", method, "--timeout", "15s"], ns.wrap)
        try:
            c.wait_until(lambda: proc.pid in ns.pids() or proc.poll() is not None, "the namespace")
            with c.SemaphoreReaper(ns.shm_dir(proc.pid)) as reaper:
                out, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert reaper.removed, "the reaper removed no semaphore: the condition was not created"
    (result,) = json.loads(out)
    case = Case(("worker_died",), "semaphore_removed", ("sem.mp-", "RemoveIPC"))
    assert_cause(result, err, case)
    # The workers' tracebacks are kept with the cycle, not lost.
    assert "_rebuild" in result["stderr"] or "__setstate__" in result["stderr"]


def test_a_successful_cycle_has_no_cause_and_no_stderr() -> None:
    done = c.run([*PQD])
    (result,) = json.loads(done.stdout)
    assert result["success"] and result["cause"] is None and result["cause_detail"] == ""
    assert (result["stderr_bytes"], done.stderr) == (0, "")


def test_text_output_says_the_cause_too() -> None:
    with shm("fill", "forkserver") as case:
        done = c.run([sys.executable, "-m", "pqd", "once"], *case.wraps)
    lines = done.stdout.splitlines()
    assert "cause: shm_full" in lines, done.stdout
    assert any(line.startswith("cause_detail: /dev/shm is full: 64 KiB") for line in lines)


@pytest.mark.parametrize("method", METHODS)
def test_the_shared_memory_phase_passes_a_block_and_is_timed(method: str) -> None:
    with c.private_shm("16m") as ns:
        done = c.run(
            [*PQD, "--start-method", method, "--shared-memory-bytes", str(8 << 20)], ns.wrap
        )
    (result,) = json.loads(done.stdout)
    assert result["success"], result["detail"]
    assert list(result["phase_seconds"]) == ["pool_start", "jobs", "shared_memory", "teardown"]
    # The worker that wrote the block held it: the peak RSS counts its 8 MiB of shared pages.
    assert result["max_rss_bytes"] > 8 << 20
    assert result["shared_memory_bytes"] == 8 << 20 and done.stderr == ""
    # No worker started a resource tracker of its own (under fork the runner's is started before
    # the pool): none left behind, none warning of the block it found already unlinked.
    assert (result["leaked_processes"], result["warnings"]) == (0, {}), result["stderr"]


@pytest.mark.parametrize("method", METHODS)
def test_a_worker_frozen_in_d_state_is_uninterruptible(method: str) -> None:
    """A v1 freezer puts the sleeping worker in state D: SIGKILL waits until it is thawed. pqd
    once still returns: the frozen worker holds the runner's stderr pipe, not pqd's own."""
    with c.worker_hook() as hook, c.freezer_cgroup() as freezer:
        hook.add("sleep 30")
        proc = start(["--start-method", method, "--timeout", "6s"], hook.wrap)
        try:
            victim = c.wait_until(hook.claimed, "a worker sleeping in its job")[0]
            freezer.move(victim)
            c.freeze(freezer)
            assert c.proc_state(victim) == "D", "the freezer did not make the worker D"
            out, err = proc.communicate(timeout=60)
        finally:
            c.freeze(freezer, frozen=False)
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    (result,) = json.loads(out)
    case = Case(("timeout",), "uninterruptible", (f"pid {victim}", "state D"))
    assert_cause(result, err, case)


@pytest.mark.parametrize("method", ("forkserver", "spawn"))
def test_semaphores_removed_once_mid_job_are_counted_even_when_the_cycle_passes(
    method: str,
) -> None:
    """RemoveIPC-like: every named semaphore unlinked once, while a job runs. The running
    workers keep theirs open, so the cycle may pass; its teardown's finalizers then fail in
    SemLock._cleanup, and those tracebacks are counted as semaphore_removed warnings."""
    with c.private_shm("1m") as ns, c.worker_hook() as hook:
        hook.add("sleep 1")
        proc = start(["--start-method", method, "--timeout", "15s"], ns.wrap, hook.wrap)
        try:
            c.wait_until(lambda: proc.pid in ns.pids() or proc.poll() is not None, "the namespace")
            shm_dir = ns.shm_dir(proc.pid)
            c.wait_until(lambda: hook.claimed() or proc.poll() is not None, "the sleeping job")
            removed = c.SemaphoreReaper(shm_dir).sweep()
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert removed, "no semaphore was there to remove: the condition was not created"
    (result,) = json.loads(out)
    assert result["warnings"].get("semaphore_removed", 0) >= 1, result["warnings"]
    assert result["success"] or result["cause"] == "semaphore_removed", result["cause_detail"]
    assert "_cleanup" in result["stderr"] and err == ""


def test_fork_with_threads_is_counted_under_a_python_that_warns() -> None:
    """3.12+ warns when fork() runs with threads alive (the runner has its own): every fork of
    a cycle under the fork start method is one fork_with_threads warning, not raw output."""
    from tests.helpers.interpreters import other_cpythons

    warning = [f for f in other_cpythons() if tuple(map(int, f.minor.split("."))) >= (3, 12)]
    assert warning, "no CPython >= 3.12 on this machine: the condition cannot be created"
    python = warning[0].interpreter.path
    done = c.run([*PQD, "--start-method", "fork", "--python", python])
    (result,) = json.loads(done.stdout)
    assert result["success"], result["detail"]
    # The Manager and the 4 workers are forked with the runner's threads alive.
    assert result["warnings"].get("fork_with_threads", 0) >= 5, result["warnings"]
    assert "DeprecationWarning" in result["stderr"] and done.stderr == ""


def _run_until_claimed(
    hook: c.WorkerHook, args: list[str], method: str
) -> tuple[subprocess.Popen[str], int]:
    proc = start(["--start-method", method, *args], hook.wrap)
    try:
        claimed = c.wait_until(
            lambda: hook.claimed() or proc.poll() is not None, "a worker sleeping in its job"
        )
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    assert claimed is not True and proc.poll() is None, "pqd once ended before the job slept"
    return proc, claimed[0]


@pytest.mark.parametrize("method", METHODS)
def test_a_worker_sigkilled_from_outside_is_killed_not_oom(method: str) -> None:
    """SIGKILL from outside pqd, no memory limit anywhere: killed, and the sentence says the
    OOM killer was not it (a SIGKILL alone is never memory_limit)."""
    with c.worker_hook() as hook:
        hook.add("sleep 30")
        proc, victim = _run_until_claimed(hook, ["--timeout", "20s"], method)
        try:
            os.kill(victim, signal.SIGKILL)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    (result,) = json.loads(out)
    words = (f"pool worker pid {victim}", "SIGKILL", "no OOM kill was recorded")
    assert_cause(result, err, Case(("worker_died",), "killed", words))


@pytest.mark.parametrize("method", METHODS)
def test_a_job_that_only_overruns_is_unknown(method: str) -> None:
    """A job sleeping past the deadline: nothing on the host is wrong, no process crashed,
    stopped or sat in D, so no detector fires and pqd says so with the reason's own words."""
    with c.worker_hook() as hook:
        hook.add("sleep 30")
        case = Case(
            ("timeout",),
            "unknown",
            ("no host cause found", "timeout: producer job of round 1 unfinished after 3s"),
            args=("--timeout", "3s"),
            wraps=[hook.wrap],
        )
        result, stderr = once(case, method)
        assert hook.claimed(), "no worker took the sleep: the condition was not created"
    assert_cause(result, stderr, case)


@pytest.mark.parametrize("method", METHODS)
def test_a_worker_exiting_with_a_status_is_unknown(method: str) -> None:
    """A worker that calls os._exit(3): an exit status, no signal, nothing on the host."""
    with c.worker_hook() as hook:
        hook.add("exit 3")
        case = Case(
            ("worker_died",),
            "unknown",
            ("no host cause found", "worker_died: pool worker pid", "(exit code 3)"),
            args=("--timeout", "8s"),
            wraps=[hook.wrap],
        )
        result, stderr = once(case, method)
    assert_cause(result, stderr, case)


#: What the sentence says of a TMPDIR of each kind.
TMPDIR_PROBLEMS = {"missing": "missing", "file": "not a directory", "unwritable": "read-only"}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", TMPDIR_PROBLEMS)
def test_a_probes_unusable_tmpdir_without_fallbacks_is_named(kind: str, method: str) -> None:
    """The probe's TMPDIR (its environment, as the application has it) missing, a file or
    read-only, and /tmp, /var/tmp, /usr/tmp and the working directory read-only too: CPython's
    tempfile finds no usable temporary directory when the runner starts its Manager. pqd's own
    TMPDIR is usable, so pqd itself gets that far."""
    with c.hostile_tmpdir(kind, fallbacks=False) as tmp:
        assert tmp.cwd is not None and tmp.usable is not None
        own = dataclasses.replace(tmp.wrap, env=(("TMPDIR", str(tmp.usable)),))
        words = (
            f"TMPDIR {tmp.path} is {TMPDIR_PROBLEMS[kind]}",
            "/tmp read-only",
            f"the working directory {tmp.cwd} read-only",
        )
        case = Case(
            ("spawn_failed",),
            "tmpdir_unusable",
            words,
            args=("--environment", f"TMPDIR={tmp.path}"),
            wraps=[own],
        )
        result, stderr = once(case, method, cwd=str(tmp.cwd))
    # Where the tree said it: the runner's own error (forkserver), or the Manager's traceback.
    said = result["detail"] + result["stderr"]
    assert "No usable temporary directory found in" in said, said[-2000:]
    assert_cause(result, stderr, case)


@pytest.mark.parametrize("kind", TMPDIR_PROBLEMS)
def test_pqds_own_unusable_tmpdir_without_fallbacks_is_named(kind: str) -> None:
    """The same in pqd's own environment: pqd cannot make the runner's private directories, so
    no runner starts (under any start method: it fails before there is one)."""
    with c.hostile_tmpdir(kind, fallbacks=False) as tmp:
        words = (f"TMPDIR {tmp.path} is {TMPDIR_PROBLEMS[kind]}", "/var/tmp read-only")
        case = Case(("spawn_failed",), "tmpdir_unusable", words, wraps=[tmp.wrap])
        result, stderr = once(case, "forkserver", cwd=str(tmp.cwd))
    assert result["detail"].startswith("starting the runner: "), result["detail"]
    assert_cause(result, stderr, case)
