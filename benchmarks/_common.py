"""Helpers shared by the benchmark scripts.

Standard library only at import time: under spawn and forkserver every worker process re-runs the
benchmark script's top-level imports (multiprocessing re-imports ``__main__`` in each child), so
anything heavy imported here would be paid by the cycles being measured. psutil is imported inside
the functions that need it.

CPU accounting ("process-tree CPU") is the sum of, for the measuring process or a daemon, its own
user+system time, the time of every descendant it has already reaped (the kernel adds a reaped
child's time, and that child's own reaped children, to the parent's ``cutime``/``cstime``), and
the same two numbers for every descendant still alive (the forkserver, the resource tracker). A
plain ``getrusage(RUSAGE_CHILDREN)`` is not enough: pool workers started by the forkserver are
the forkserver's children, so their time only reaches pqd when the forkserver itself exits and
is reaped, which in a daemon is never.

A `pqd run` daemon's tree (docs/design.md §1a): pqd -> one runner per probe (``python -m
pqd.runner.main``) -> under forkserver, that runner's forkserver and resource tracker (and, during a
cycle, the Manager and the pool workers below the forkserver). Nothing here assumes any of them is
pqd's direct child except the runners: descendants are always walked recursively.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
PYTHON = sys.executable


# -- machine ----------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_line() -> str:
    load = os.getloadavg()
    return (
        f"machine: nproc={os.cpu_count()} cpu={cpu_model()!r} "
        f"python={platform.python_version()} kernel={platform.release()} "
        f"loadavg={load[0]:.2f},{load[1]:.2f},{load[2]:.2f}"
    )


# -- statistics and tables ----------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    p25: float
    p75: float
    mean: float
    minimum: float
    maximum: float

    def spread(self, scale: float = 1.0, fmt: str = ".3f") -> str:
        return f"{self.p25 * scale:{fmt}}-{self.p75 * scale:{fmt}}"


def summarize(values: Sequence[float]) -> Summary:
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) >= 2:
        q = statistics.quantiles(ordered, n=4, method="inclusive")
        p25, p75 = q[0], q[2]
    else:
        p25 = p75 = ordered[0]
    return Summary(
        n=len(ordered),
        median=statistics.median(ordered),
        p25=p25,
        p75=p75,
        mean=statistics.fmean(ordered),
        minimum=ordered[0],
        maximum=ordered[-1],
    )


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100.0 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table (so the output pastes into docs/benchmarks.md as it is)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    print()
    print(f"## {title}")
    print()
    print(line(list(headers)))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print(line(row))
    print(flush=True)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


# -- CPU of a process tree ----------------------------------------------------------------------


def _own_cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _descendants_cpu(pid: int) -> float:
    import psutil

    total = 0.0
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return 0.0
    for child in children:
        with contextlib.suppress(psutil.Error):
            t = child.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def own_tree_cpu() -> float:
    """CPU seconds of this process, its reaped descendants and its live ones."""
    # Descendants first and our own clock last on the way in (see tree_cpu_delta), so the
    # scan of /proc that finds the descendants is not charged to what is measured.
    return _descendants_cpu(os.getpid()) + _own_cpu()


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of another process (e.g. a daemon), its reaped and its live descendants."""
    import psutil

    proc = psutil.Process(pid)
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system + _descendants_cpu(pid)


def own_cpu_by_pid(pid: int) -> dict[int, float]:
    """``pid`` and each live descendant: its own user+system seconds (not its children's)."""
    import psutil

    found = {}
    for proc, _ in tree_roles(pid):
        with contextlib.suppress(psutil.Error):
            t = proc.cpu_times()
            found[proc.pid] = t.user + t.system
    return found


def tree_rss(pid: int) -> tuple[int, int]:
    """(RSS of ``pid``, RSS of its live descendants) in bytes."""
    import psutil

    proc = psutil.Process(pid)
    own = proc.memory_info().rss
    rest = 0
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            rest += child.memory_info().rss
    return own, rest


# -- who is who in a pqd tree, and how much memory each holds ----------------------------------

MIB = 1024 * 1024
RUNNER_MARK = "pqd.runner.main"
_FORKSERVER_MARK = "multiprocessing.forkserver"
_TRACKER_MARK = "multiprocessing.resource_tracker"


@dataclass(frozen=True)
class ProcMemory:
    """One process of a pqd tree: role, and memory in bytes (psutil ``memory_full_info``, i.e.
    ``/proc/PID/smaps_rollup``: USS = private pages, PSS = private + a share of shared pages)."""

    pid: int
    ppid: int
    role: str
    rss: int
    uss: int
    pss: int


def _cmdline(proc: Any) -> str:
    import psutil

    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


def tree_roles(pid: int) -> list[tuple[Any, str]]:
    """``pid`` (role "pqd") and its live descendants as (psutil.Process, role), parents first.

    Roles: "runner" (a child of ``pid`` whose command line has ``pqd.runner.main``), "forkserver",
    "resource tracker", "forkserver child" (a Manager or pool worker the forkserver forked: same
    command line as the forkserver), "other". By command line and parent, as pqd itself does."""
    import psutil

    root = psutil.Process(pid)
    parent_of: dict[int, int] = {}
    procs = {}
    for child in root.children(recursive=True):  # one scan of /proc
        with contextlib.suppress(psutil.Error):
            parent_of[child.pid] = child.ppid()
            procs[child.pid] = child
    roles = {pid: "pqd"}

    def role_of(child: int) -> str:
        if child not in roles:
            parent = parent_of.get(child, 0)
            above = role_of(parent) if parent in procs or parent == pid else ""
            text = _cmdline(procs[child])
            if _FORKSERVER_MARK in text:
                forked = above in ("forkserver", "forkserver child")
                roles[child] = "forkserver child" if forked else "forkserver"
            elif _TRACKER_MARK in text:
                roles[child] = "resource tracker"
            elif parent == pid and RUNNER_MARK in text:
                roles[child] = "runner"
            else:
                roles[child] = "other"
        return roles[child]

    def depth(child: int) -> int:
        n = 0
        while child in parent_of and n < 64:
            child, n = parent_of[child], n + 1
        return n

    ordered = sorted(procs, key=lambda child: (depth(child), child))
    return [(root, "pqd"), *((procs[child], role_of(child)) for child in ordered)]


def runner_procs(pid: int) -> list[Any]:
    """pqd's runners: its children whose command line contains ``pqd.runner.main``."""
    import psutil

    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return []
    return [child for child in children if RUNNER_MARK in _cmdline(child)]


def tree_memory(pid: int) -> list[ProcMemory]:
    """RSS, USS and PSS of ``pid`` and of each live descendant, with its role (tree_roles)."""
    import psutil

    found = []
    for proc, role in tree_roles(pid):
        with contextlib.suppress(psutil.Error):
            m = proc.memory_full_info()
            found.append(ProcMemory(proc.pid, proc.ppid(), role, m.rss, m.uss, m.pss))
    return found


def describe_tree(pid: int) -> str:
    """``pid``'s descendants as "N (role pid, ...)"."""
    rest = [f"{role} {proc.pid}" for proc, role in tree_roles(pid)[1:]]
    return f"{len(rest)} ({', '.join(rest) or 'none'})"


@dataclass(frozen=True)
class Measured:
    wall: float
    cpu: float
    value: Any


def measure(func: Callable[[], Any]) -> Measured:
    """Wall and process-tree CPU of ``func()`` run in this process."""
    before_desc = _descendants_cpu(os.getpid())
    before_own = _own_cpu()
    t0 = time.perf_counter()
    value = func()
    wall = time.perf_counter() - t0
    after_own = _own_cpu()
    after_desc = _descendants_cpu(os.getpid())
    return Measured(wall, (after_own - before_own) + (after_desc - before_desc), value)


# -- a fresh process, measured with everything it starts -------------------------------------


def run_fresh(argv: Sequence[str]) -> tuple[float, float]:
    """(wall, CPU) of running ``argv`` once in a fresh process, every descendant included.

    Runs it under ``_reaper.py``, a small process that makes itself a child subreaper: the
    forkserver and the resource tracker outlive the measured process for a moment, are
    re-parented to the reaper and reaped by it, so RUSAGE_CHILDREN of the reaper is the whole
    tree's CPU. Wall time is from the start of the measured process to its exit.
    """
    out = subprocess.run(
        [PYTHON, str(BENCH_DIR / "_reaper.py"), *argv],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    fields = dict(part.split("=", 1) for part in out.stdout.split()[-2:])
    return float(fields["wall"]), float(fields["cpu"])


# -- pqd run as a subprocess ---------------------------------------------------------------------


def _tests_importable() -> None:
    """The benchmarks start pqd and pick ports with the tests' own helpers (tests/helpers/):
    one way to do each, not a copy. A script's path starts at benchmarks/, not the repo."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


def free_port() -> int:
    _tests_importable()
    from tests.helpers.net import free_port as pick

    return pick()


class Daemon:
    """A `pqd run` process on a free port, its log in a temporary directory; started and stopped
    by the launcher the tests use too (tests/helpers/launcher.py)."""

    def __init__(
        self,
        args: Sequence[str],
        config: str = "",
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
    ):
        _tests_importable()
        from tests.helpers.launcher import LaunchedPqd

        self.dir = tempfile.TemporaryDirectory(prefix="pqd-bench-")
        # The console script, as systemd runs it (its __main__ is what children re-import).
        exe = Path(PYTHON).parent / "pqd"
        if command is None:
            command = [str(exe)] if exe.exists() else [PYTHON, "-m", "pqd"]
        self.launched = LaunchedPqd(Path(self.dir.name), config, command, args=args, env=env)
        self.proc = self.launched.proc
        self.final_log = ""
        try:
            self.port = self._wait_port()
        except BaseException:
            self.stop()  # it may be up but silent: leave nothing running
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.launched.log_text()

    def _wait_port(self, seconds: float = 30.0) -> int:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            port = self.launched.logged_port()
            if port is not None:
                return port
            time.sleep(0.02)
        raise RuntimeError(f"pqd did not start:\n{self.log_text()}")

    def finished_cycles(self) -> list[dict[str, str]]:
        from tests.helpers.launcher import logfmt

        ended = ("cycle finished", "cycle failed")
        return [f for f in map(logfmt, self.log_text().splitlines()) if f.get("msg") in ended]

    def wait_cycles(self, count: int, seconds: float, poll: float = 0.005) -> list[dict[str, str]]:
        """Wait until ``count`` cycles have ended (reading the log costs the daemon nothing)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            done = self.finished_cycles()
            if len(done) >= count:
                return done
            if self.proc.poll() is not None:
                raise RuntimeError(f"pqd exited:\n{self.log_text()}")
            time.sleep(poll)
        raise RuntimeError(f"only {len(self.finished_cycles())} of {count} cycles finished")

    def stop(self) -> None:
        """Stop pqd and everything of its tree (the launcher's stop); the log's last text stays
        in ``final_log``."""
        self.launched.stop()
        with contextlib.suppress(OSError):
            self.final_log = self.log_text()
        self.dir.cleanup()


@contextlib.contextmanager
def daemon(
    args: Sequence[str], config: str = "", command: Sequence[str] | None = None
) -> Iterator[Daemon]:
    d = Daemon(args, config, command=command)
    try:
        yield d
    finally:
        d.stop()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


# -- prometheus_client's own server as a peer ------------------------------------------------


def start_stock_server(
    args: Sequence[str], stderr: Any
) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """benchmarks/_stock_server.py with ``args``, its stderr to ``stderr`` (an open file);
    returns the process and the fields of its start-up line (``port``, ``backlog``). It serves
    until its stdin is closed. Raises RuntimeError, with what it wrote, if it does not start."""
    proc = subprocess.Popen(
        [PYTHON, str(BENCH_DIR / "_stock_server.py"), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("port="):
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
        stderr.flush()
        stderr.seek(0)
        raise RuntimeError(f"stock server did not start: {line!r}\n{stderr.read()}")
    return proc, dict(part.split("=", 1) for part in line.split())


# -- Debian's node_exporter as a peer ----------------------------------------------------------

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def node_exporter(port: int, flags: Sequence[str] = ()) -> Iterator[subprocess.Popen[str]]:
    """node_exporter on 127.0.0.1:``port`` with ``flags``, once it accepts connections (within
    15 s, or RuntimeError with what it wrote); terminated on the way out."""
    proc = subprocess.Popen(
        [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}", *flags],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not _listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                _, err = proc.communicate()
                raise RuntimeError(f"node_exporter did not start on port {port}: {err}")
            time.sleep(0.02)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
