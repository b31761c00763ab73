"""The cause of a failed cycle, as pqd finds it once the cycle is over (docs/design.md §1,
"Causes"): the evidence is gathered here (pqd.runner.host_evidence), with the tree's stderr
(pqd.supervisor.stderr_capture) and what the runner reported, and pqd.runner.causes decides.

A successful cycle only gets its stderr and warning counts: the host is read for causes only
after a failure, apart from the cgroup counters taken as each cycle begins.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from pqd.results import CycleResult
from pqd.runner import causes, host_evidence
from pqd.runner.causes import Evidence, Exit
from pqd.runner.host_evidence import Counters

#: How a process's end reads in a failed cycle's detail (pqd.runner.cycle, pqd.supervisor).
_EXITED = re.compile(r"(pool worker|Manager) pid (\d+) exited \(exit code (-?\d+)\)")
_RUNNER_KILLED = re.compile(r"runner pid (\d+) was killed by signal (\d+)")


def exits_in(detail: str) -> tuple[Exit, ...]:
    found = []
    for role, pid, code in _EXITED.findall(detail):
        number = int(code)
        if number < 0:
            found.append(Exit(role, int(pid), signal=-number))
        else:
            found.append(Exit(role, int(pid), status=number))
    for pid, sig in _RUNNER_KILLED.findall(detail):
        found.append(Exit("runner", int(pid), signal=int(sig)))
    return tuple(found)


def gather(
    result: CycleResult,
    stderr: str,
    runner_pid: int,
    before: Counters | None,
    roles: Mapping[int, str],
) -> Evidence:
    """What the classifier needs of a failed cycle, read now (the tree is gone or going)."""
    exits = list(exits_in(result.detail))
    pids_limits: tuple[causes.PidsLimit, ...] = ()
    oom_kills: tuple[causes.OomKills, ...] = ()
    victims: tuple[tuple[int, int], ...] = ()
    if before is not None:
        after = Counters.read(runner_pid, before.dirs)
        pids_limits, oom_kills = before.pids_limits(after), before.oom_kills(after)
        victims = host_evidence.oom_victims(before.monotonic - 1.0)
    named = {**roles, runner_pid: "runner"}
    for process in result.stuck:
        named.setdefault(process.pid, process.role)
    known = {x.pid for x in exits}
    for pid, _ in victims:
        if pid in named and pid not in known:
            exits.append(Exit(named[pid], pid, signal=9))
    room = result.headroom
    soft = room.open_files_limit if room is not None else None
    nofile, nproc_limit = host_evidence.limits(runner_pid, soft)
    nproc = None
    uid = host_evidence.real_uid(runner_pid)
    if nproc_limit is not None and nproc_limit >= 0 and uid != 0:  # root is exempt
        nproc = (nproc_limit, host_evidence.processes_of_uid(uid), uid)
    texts = (stderr, "\n".join(t for t in (result.detail, result.job_traceback) if t))
    candidates = causes.no_usable_tmpdirs(texts)
    return Evidence(
        reason=result.reason or "",
        detail=result.detail,
        texts=texts,
        exits=tuple(exits),
        states=tuple((p.role, p.pid, p.state, p.wchan) for p in result.stuck),
        pids_limits=pids_limits,
        oom_kills=oom_kills,
        oom_victims=tuple(v for v in victims if v[0] in named),
        shm=host_evidence.shm_facts(),
        nofile=nofile,
        nproc=nproc,
        # The runner's temp dir, as it read it when the cycle began (the probe's environment may
        # set its own TMPDIR); pqd's own where the runner sent none.
        tmpdir=(room and room.tmpdir) or host_evidence.tmpdir(),
        tmp_candidates=tuple((p, host_evidence.dir_problem(p)) for p in candidates),
        workers=result.workers_configured,
        shm_phase=result.detail.startswith(causes.SHM_PHASE),
        shm_block=result.shared_memory_bytes,
    )


def diagnose(
    result: CycleResult,
    stderr: tuple[str, int, dict[str, int]],
    runner_pid: int,
    before: Counters | None,
    roles: Mapping[int, str],
) -> CycleResult:
    """``result`` with the tree's stderr and warnings and, if it failed, its cause."""
    text, written, warnings = stderr
    if written:
        result = dataclasses.replace(result, stderr=text, stderr_bytes=written, warnings=warnings)
    if result.success:
        return result
    evidence = gather(result, text, runner_pid, before, roles)
    cause, sentence = causes.classify(evidence)
    rss = result.max_rss_bytes
    if cause == "memory_limit":
        # The killed process's peak is lost with it: the kernel's report (or the group's peak).
        held = [r for _, r in evidence.oom_victims]
        held += [k.peak_bytes for k in evidence.oom_kills if k.peak_bytes and not held]
        rss = max([rss or 0, *held]) or None
    return dataclasses.replace(result, cause=cause, cause_detail=sentence, max_rss_bytes=rss)
