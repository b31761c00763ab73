"""The conditions of tests.helpers.conditions are really in place while they are held, and
nothing of them is left afterwards. Each check reads the condition back the way the kernel
reports it (statvfs, errno, pids.events, oom_kill, /proc state), from a process inside."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import conditions as c

PY = sys.executable  # the venv's interpreter: a symlink to a binary, not a pyenv shim


def py(code: str, *wraps: c.Wrap, cwd: str | None = None) -> dict[str, object]:
    """Run ``code`` inside ``wraps``; it prints one JSON object, returned here."""
    done = c.run([PY, "-c", textwrap.dedent(code)], *wraps, timeout=60, cwd=cwd)
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


SHM_PROBE = """
    import json, os, multiprocessing as mp
    st = os.statvfs("/dev/shm") if os.path.exists("/dev/shm") else None
    try:
        mp.get_context("spawn").Lock()
        err = None
    except OSError as exc:
        err = exc.errno
    print(json.dumps({"size": st and st.f_blocks * st.f_frsize,
                      "free": st and st.f_bavail * st.f_frsize,
                      "exists": os.path.exists("/dev/shm"), "lock_errno": err,
                      "null": open("/dev/null", "w").write("x")}))
"""


def test_private_shm_is_its_size_and_the_hosts_is_untouched() -> None:
    host = c.space(Path("/dev/shm"))
    with c.private_shm("64k") as ns:
        seen = py(SHM_PROBE, ns.wrap)
    assert seen["size"] == 64 * 1024
    assert seen["lock_errno"] is None
    assert c.space(Path("/dev/shm")).size == host.size


@pytest.mark.parametrize(
    ("options", "lock_errno"),
    [
        ({"fill": True}, errno.ENOSPC),
        ({"read_only": True}, errno.EROFS),
        ({"absent": True}, errno.ENOENT),
        # glibc's sem_open reports a /dev/shm it may not write as ENOENT, not EACCES
        ({"mode": 0}, errno.ENOENT),
    ],
    ids=["full", "read-only", "absent", "mode-000"],
)
def test_private_shm_conditions_break_semaphores(
    options: dict[str, object], lock_errno: int
) -> None:
    with c.private_shm("64k", **options) as ns:  # type: ignore[arg-type]
        seen = py(SHM_PROBE, ns.wrap)
    assert seen["lock_errno"] == lock_errno, seen
    if options.get("fill"):
        assert seen["free"] == 0
    if options.get("absent"):
        assert seen["exists"] is False


def test_mode_000_runs_without_dac_override_but_as_root() -> None:
    with c.private_shm(mode=0) as ns:
        seen = py(
            """
            import json, os
            cap = int(open("/proc/self/status").read().split("CapEff:")[1].split()[0], 16)
            print(json.dumps({"uid": os.geteuid(), "dac_override": bool(cap & 2),
                              "mode": os.stat("/dev/shm").st_mode & 0o7777,
                              "write": os.access("/dev/shm", os.W_OK)}))
            """,
            ns.wrap,
        )
    assert seen == {"uid": 0, "dac_override": False, "mode": 0, "write": False}


def test_private_shm_teardown_kills_what_outlived_the_command() -> None:
    with c.private_shm() as ns:
        done = c.run(["sh", "-c", "sleep 300 > /dev/null 2>&1 & echo $!"], ns.wrap)
        straggler = int(done.stdout)
        assert c.proc_state(straggler) in ("S", "R")
        namespaces = ns.namespaces()
        assert namespaces and os.readlink("/proc/self/ns/mnt") not in namespaces
    assert c.proc_state(straggler) in ("", "Z")
    assert not c.pids_in_namespaces(namespaces)
    assert not ns.state.exists()


def test_fill_from_outside_through_proc_root() -> None:
    with c.private_shm("1m") as ns:
        proc = subprocess.Popen(c.command(["sleep", "60"], ns.wrap))
        try:
            c.wait_until(lambda: proc.pid in ns.pids(), "the namespace to be set up")
            shm = ns.shm_dir(proc.pid)
            assert c.space(shm).size == 1024 * 1024
            c.fill(shm, leave=8192)
            assert c.space(shm).available == 8192
            assert c.space(Path("/dev/shm")).available > 8192
        finally:
            proc.kill()
            proc.wait()


FORK_UNTIL_REFUSED = """
    import json, os, time
    kids, err = [], None
    try:
        for _ in range(64):
            pid = os.fork()
            if pid == 0:
                time.sleep(30)
                os._exit(0)
            kids.append(pid)
    except OSError as exc:
        err = exc.errno
    for pid in kids:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    print(json.dumps({"forked": len(kids), "errno": err}))
"""


def test_pids_cgroup_refuses_the_fork_past_its_limit() -> None:
    with c.pids_cgroup(12) as group:
        path = group.path
        assert group.read("pids.max") == "12"
        seen = py(FORK_UNTIL_REFUSED, group.wrap)
        assert seen["errno"] == errno.EAGAIN
        assert seen["forked"] == 11  # the python process itself is the 12th task
        assert group.keyed("pids.events")["max"] >= 1
        if group.version == 1:
            assert path.parent == c.find_hierarchy("pids").own
    assert not path.exists()


def test_memory_cgroup_oom_kills_an_allocation_past_its_limit() -> None:
    limit = 64 * 1024 * 1024
    with c.KernelLog() as kernel, c.memory_cgroup(limit) as group:
        path = group.path
        assert c.oom_kills(group) == 0
        done = c.run([PY, "-c", "x = b'1' * (256 * 1024 * 1024)"], group.wrap, timeout=60)
        assert done.returncode == -9, done.stderr
        assert c.oom_kills(group) == 1
        assert c.memory_usage(group) < limit
        killed = c.wait_until(
            lambda: [m for m in kernel.read() if "Killed process" in m], "the kernel's OOM line"
        )
        assert "memory" in " ".join(kernel.messages).lower(), killed
    assert not path.exists()


def test_frozen_process_reads_d_and_the_teardown_still_kills_it() -> None:
    with c.freezer_cgroup() as group:
        path = group.path
        proc = subprocess.Popen(["sleep", "300"])
        group.move(proc.pid)
        c.freeze(group)
        assert c.proc_state(proc.pid) == "D"
    assert proc.wait(10) == -9
    assert not path.exists()


def test_nproc_limit_bites_root_and_leaves_no_process_of_its_uid() -> None:
    with c.nproc_limit(6) as wrap:
        seen = py(FORK_UNTIL_REFUSED, wrap)
        uid = int(wrap.prefix[1].split("=")[1])
    assert seen == {"forked": 5, "errno": errno.EAGAIN}
    assert uid not in c.uids_in_use()


def test_nofile_limit_refuses_the_descriptor_past_it() -> None:
    seen = py(
        """
        import json, os, resource
        fds, err = [], None
        try:
            while True:
                fds.append(os.open("/dev/null", os.O_RDONLY))
        except OSError as exc:
            err = exc.errno
        for fd in fds:
            os.close(fd)
        print(json.dumps({"errno": err, "highest": max(fds),
                          "limit": resource.getrlimit(resource.RLIMIT_NOFILE)}))
        """,
        c.rlimits(nofile=24),
    )
    assert seen == {"errno": errno.EMFILE, "highest": 23, "limit": [24, 24]}


TMP_PROBE = """
    import json, tempfile
    from multiprocessing.connection import Listener
    try:
        Listener(family="AF_UNIX").close()
        err = None
    except OSError as exc:
        err = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"gettempdir": tempfile.gettempdir(), "err": err}))
"""


def test_long_tmpdir_is_too_long_for_multiprocessings_sockets() -> None:
    with c.hostile_tmpdir("long") as tmp:
        assert len(str(tmp.path)) == 106 and tmp.path.is_dir()
        seen = py(TMP_PROBE, tmp.wrap)
    assert seen["err"] == "OSError: AF_UNIX path too long"
    assert not tmp.path.exists()


@pytest.mark.parametrize("kind", ["missing", "file", "unwritable"])
def test_unusable_tmpdir_falls_back_to_tmp(kind: str) -> None:
    with c.hostile_tmpdir(kind) as tmp:
        seen = py(
            """
            import json, os, tempfile
            err = None
            try:
                open(os.path.join(os.environ["TMPDIR"], "x"), "w")
            except OSError as exc:
                err = exc.errno
            print(json.dumps({"tmp": tempfile.gettempdir(), "errno": err}))
            """,
            tmp.wrap,
        )
    want = {"missing": errno.ENOENT, "file": errno.ENOTDIR, "unwritable": errno.EROFS}[kind]
    assert seen == {"tmp": "/tmp", "errno": want}


def test_no_usable_tmpdir_at_all() -> None:
    with c.hostile_tmpdir("none") as tmp:
        done = c.run(
            [PY, "-c", "import tempfile; tempfile.gettempdir()"], tmp.wrap, cwd=str(tmp.path)
        )
    assert done.returncode == 1
    assert "FileNotFoundError: [Errno 2] No usable temporary directory found" in done.stderr


NO_TMP_PROBE = """
    import json, os, tempfile
    err = None
    try:
        tempfile.gettempdir()
    except FileNotFoundError as exc:
        err = str(exc)
    os.environ["TMPDIR"] = {usable!r}  # outside every read-only directory
    tempfile.tempdir = None
    print(json.dumps({{"err": err, "usable": tempfile.gettempdir()}}))
"""


@pytest.mark.parametrize("kind", ["missing", "file", "unwritable"])
def test_an_unusable_tmpdir_without_fallbacks_leaves_no_temp_dir(kind: str) -> None:
    with c.hostile_tmpdir(kind, fallbacks=False) as tmp:
        assert tmp.cwd is not None and tmp.usable is not None
        seen = py(
            NO_TMP_PROBE.format(usable=str(tmp.usable)),
            tmp.wrap,
            cwd=str(tmp.cwd),
        )
        usable = str(tmp.usable)
    tried = [str(tmp.path), "/tmp", "/var/tmp", "/usr/tmp", str(tmp.cwd)]
    assert seen == {"err": f"[Errno 2] No usable temporary directory found in {tried}",
                    "usable": usable}  # fmt: skip
    assert not tmp.path.exists() and not Path(usable).exists()


POOL_JOB = """
    import json, os, sys, multiprocessing as mp
    if __name__ == "__main__":
        ctx = mp.get_context(sys.argv[1])
        with ctx.Pool(1) as pool:
            r = pool.apply_async(os.getpid)
            try:
                out = r.get(timeout=float(sys.argv[2]))
            except Exception as exc:
                out = type(exc).__name__
        print(json.dumps({"out": out}))
"""


@pytest.mark.parametrize("method", ["forkserver", "spawn", "fork"])
@pytest.mark.parametrize("fault", ["segv", "bus", "abrt"])
def test_worker_hook_crashes_the_first_job(method: str, fault: str, tmp_path: Path) -> None:
    script = tmp_path / "pool_job.py"
    script.write_text(textwrap.dedent(POOL_JOB))
    with c.KernelLog() as kernel, c.worker_hook() as hook:
        hook.add(fault)
        done = c.run([PY, str(script), method, "5"], hook.wrap)
        assert done.returncode == 0, done.stderr
        (victim,) = hook.claimed()
        assert victim in hook.workers() and len(hook.workers()) == 2  # replaced once
        assert json.loads(done.stdout) == {"out": "TimeoutError"}
        if fault == "segv":  # the kernel logs a real fault, not a sent signal
            c.wait_until(
                lambda: [m for m in kernel.read() if f"[{victim}]: segfault" in m],
                "the kernel's segfault line",
            )


def test_worker_hook_unpicklable_result() -> None:
    with c.worker_hook() as hook:
        hook.add("unpicklable_result")
        done = c.run(
            [
                PY,
                "-c",
                "import os, multiprocessing as mp\n"
                "with mp.get_context('spawn').Pool(1) as p:\n"
                "    print(repr(p.apply_async(os.getpid).get(10)))",
            ],
            hook.wrap,
        )
    assert "MaybeEncodingError: Error sending result" in done.stderr, done.stderr


def test_semaphore_reaper_breaks_a_spawned_child(tmp_path: Path) -> None:
    script = tmp_path / "lock_child.py"
    script.write_text(
        textwrap.dedent(
            """
            import multiprocessing as mp, sys, time
            def child(lock):
                pass
            if __name__ == "__main__":
                ctx = mp.get_context("spawn")
                lock = ctx.Lock()
                sys.stdin.readline()  # the test removes the semaphore meanwhile
                p = ctx.Process(target=child, args=(lock,))
                p.start(); p.join()
                print(p.exitcode)
            """
        )
    )
    with c.private_shm("1m") as ns:
        argv = c.command([PY, str(script)], ns.wrap)
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        c.wait_until(lambda: proc.pid in ns.pids(), "the namespace to be set up")
        shm = ns.shm_dir(proc.pid)
        c.wait_until(lambda: os.listdir(shm), "the semaphore")
        reaper = c.SemaphoreReaper(shm)
        removed = reaper.sweep()
        out, err = proc.communicate("go\n", timeout=60)
    assert removed and removed[0].startswith("sem.mp-")
    assert out.strip() == "1"
    assert "FileNotFoundError: [Errno 2] No such file or directory" in err
    assert "_rebuild" in err


def test_cpu_cgroup_sets_the_quota() -> None:
    with c.cpu_cgroup(0.5) as group:
        quota = group.read("cpu.max") if group.version == 2 else group.read("cpu.cfs_quota_us")
        seen = py(
            "import json; print(json.dumps({'cg': open('/proc/self/cgroup').read()}))",
            group.wrap,
        )
        assert quota.split()[0] == "50000"
        assert group.path.name in str(seen["cg"])


def test_kernel_log_reads_what_was_logged_after_opening() -> None:
    marker = f"pqd-cond-marker-{os.getpid()}"
    with c.KernelLog() as kernel:
        Path("/dev/kmsg").write_text(marker + "\n")  # a record ends at its newline
        c.wait_until(lambda: [m for m in kernel.read() if marker in m], "the marker")


LEAVING_POOL = """
    import json, os, multiprocessing as mp
    if __name__ == "__main__":
        ctx = mp.get_context("spawn")
        with ctx.Pool(1) as pool:
            pool.map(abs, range(3))  # three jobs
        left = sorted(n for n in os.listdir("/dev/shm") if "-leak-" in n)
        try:
            ctx.Lock()
            err = None
        except OSError as exc:
            err = exc.errno
        print(json.dumps({"left": left, "lock_errno": err}))
"""


def test_worker_hook_every_job_leaves_named_semaphores_until_dev_shm_is_full() -> None:
    # Each py() runs in a namespace of its own: a fresh 64 KiB /dev/shm (16 pages).
    with c.private_shm("64k") as ns, c.worker_hook() as hook:
        hook.every_job("leave_semaphores 2")
        seen = py(LEAVING_POOL, ns.wrap, hook.wrap)
        hook.every_job("leave_semaphores 1000")
        full = py(LEAVING_POOL, ns.wrap, hook.wrap)
    # Each job's two stayed, under the names multiprocessing gives its own (so pqd counts
    # them as the cycle's).
    left = [str(name) for name in seen["left"]]  # type: ignore[attr-defined]
    assert len(left) == 6 and all(n.startswith("sem.mp-pqdcond-leak-") for n in left), left
    assert seen["lock_errno"] is None
    # A semaphore takes a page: the first job took every page the pool left, the other two
    # found none and carried on; multiprocessing's next semaphore does not fit.
    assert len(full["left"]) < 16 and full["lock_errno"] == errno.ENOSPC, full  # type: ignore[arg-type]
