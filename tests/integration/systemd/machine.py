"""A real systemd to run pqd's unit under, and the fixtures that hand it to the tests.

The container is the cached Debian root file system (rootfs.py) booted by ``systemd-nspawn
--boot --volatile=overlay`` (read-only below a tmpfs, so every session starts from the same
state), with a network namespace of its own so its pqd has port 10029 to itself. It is driven
only from outside: ``nsenter -t <its PID 1> -a`` for systemctl, journalctl and make, and HTTP
over a socket opened in its network namespace. pqd is installed the way README's install section
says, `make install`, from a copy of this checkout; offline, because the container has no package
index: ``PIP_ARGS='--no-index --find-links'`` on the wheelhouse `make wheelhouse` built.

nspawn runs in a cgroup of its own on the host (every process of the container is below it), is
told to die with the test process (PR_SET_PDEATHSIG), is shut down at the end of the session and
killed (cgroup.kill) if it does not go; its cgroups are then removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.waiting import wait_until
from tests.integration.systemd import rootfs

WHEELHOUSE = Path(sys.prefix) / "wheelhouse"
SOURCE = "/usr/local/src/pqd"  # where the copy of the checkout is, inside
PORT = 10029
BOOT_SECONDS = 120.0
SHUTDOWN_SECONDS = 30.0
ENV = ("PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8")
_PR_SET_PDEATHSIG = 1
_CLONE_NEWNET = 0x40000000


def cgroup2_mount() -> Path:
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                return Path(left.split()[4])
    raise AssertionError("the host has no cgroup v2 hierarchy: nspawn's container needs one")


def _named_systemd_mount() -> Path | None:
    """The v1 name=systemd hierarchy of a hybrid host, which nspawn places the container in too."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.startswith("cgroup ") and "name=systemd" in right.split()[-1]:
                return Path(left.split()[4])
    return None


def _libc_call(name: str, *args: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}: {os.strerror(err)}")


def copy_checkout(dest: Path) -> Path:
    """The checkout's files (tracked, and new ones not ignored) in ``dest``, readable by all: the
    unit's transient user reads the test harnesses from it."""
    listed = subprocess.run(
        [
            "git",
            "-C",
            str(rootfs.REPO),
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = rootfs.REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    for path in [dest, *dest.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return dest


class Machine:
    """One booted container. ``pid1`` is the host pid of its systemd."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.name = f"pqd-systemd-test-{os.getpid()}"
        self.groups = [m / self.name for m in (cgroup2_mount(), _named_systemd_mount()) if m]
        self.log = workdir / "nspawn.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1 = 0
        self.timings: dict[str, float] = {}

    # -- life cycle -----

    def boot(self, root: Path, checkout: Path) -> None:
        assert (WHEELHOUSE / ".built").exists(), f"no wheelhouse in {WHEELHOUSE}: `make wheelhouse`"
        nspawn = shutil.which("systemd-nspawn")
        assert nspawn, "systemd-nspawn is not installed: `make system-deps` installs it"
        for group in self.groups:
            group.mkdir()
        command = [
            nspawn,
            "--register=no",  # no machined on the host, and no scope unit: see --keep-unit
            "--keep-unit",
            "--boot",
            f"--directory={root}",
            "--volatile=overlay",
            "--private-network",
            "--console=read-only",
            f"--machine={self.name}",
            f"--bind-ro={WHEELHOUSE}:/opt/wheelhouse",
            f"--bind={checkout}:{SOURCE}",
        ]
        started = time.monotonic()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=self._enter_cgroup,
            )
        self.pid1 = wait_until(self._find_pid1, "the container's systemd to start", BOOT_SECONDS)
        state = wait_until(self._boot_finished, "the container to finish booting", BOOT_SECONDS)
        assert state == "running", f"the container booted {state}: {self._failed_units()}"
        self.timings["boot"] = time.monotonic() - started

    def _enter_cgroup(self) -> None:
        """In the child, before exec: into the container's cgroups; die with the test process."""
        for group in self.groups:
            with open(group / "cgroup.procs", "w") as f:
                f.write(str(os.getpid()))
        _libc_call("prctl", _PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    def _find_pid1(self) -> int | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited {self.proc.returncode}: {self.log_tail()}")
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
            for pid in map(int, children.split()):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return pid
        return None

    def _boot_finished(self) -> str | None:
        result = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=60)
        state = result.stdout.strip()
        return state if state and state not in ("offline", "unknown") else None

    def _failed_units(self) -> str:
        return self.run("systemctl", "--failed", "--no-legend", check=False).stdout

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def shutdown(self) -> None:
        """Halt the container; kill everything in its cgroup if it does not stop in time."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nspawn asks systemd to halt
            try:
                self.proc.wait(SHUTDOWN_SECONDS)
            except subprocess.TimeoutExpired:
                (self.groups[0] / "cgroup.kill").write_text("1")
                self.proc.wait(SHUTDOWN_SECONDS)
        for group in self.groups:
            _remove_cgroup(group)
        shutil.rmtree(f"/run/systemd/nspawn/propagate/{self.name}", ignore_errors=True)

    # -- driving it from outside -----

    def run(
        self, *argv: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``argv`` inside the container (all its namespaces), with a clean environment."""
        command = ["nsenter", "-t", str(self.pid1), "-a", "env", "-i", *ENV, *argv]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def write(self, path: str, text: str) -> None:
        """Replace the file at ``path`` in one rename: pqd never reads half of it."""
        script = 'mkdir -p "$(dirname "$1")" && cat > "$1.new" && mv -f "$1.new" "$1"'
        self.run("sh", "-c", script, "sh", path, input=text)

    def connect(self, port: int = PORT, timeout: float = 10.0) -> socket.socket:
        """A TCP connection to 127.0.0.1:``port`` in the container's network namespace: the
        socket is created there (setns on this thread, and straight back)."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        theirs = os.open(f"/proc/{self.pid1}/ns/net", os.O_RDONLY)
        try:
            _libc_call("setns", theirs, _CLONE_NEWNET)
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            finally:
                _libc_call("setns", own, _CLONE_NEWNET)
        finally:
            os.close(own)
            os.close(theirs)
        sock.settimeout(timeout)
        try:
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        return sock

    def http(self, path: str, method: str = "GET") -> tuple[int, str]:
        """(status, body) of one request to pqd in the container; (0, "") if nothing answers."""
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=10)
        try:
            conn.sock = self.connect()
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.read().decode()
        except OSError:
            return 0, ""
        finally:
            conn.close()

    def host_pid(self, pid: int) -> int:
        """The host pid of the container's process ``pid``."""
        ns = os.readlink(f"/proc/{self.pid1}/ns/pid")
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{entry.name}/ns/pid") != ns:
                        continue
                    for line in Path(f"/proc/{entry.name}/status").read_text().splitlines():
                        if line.startswith("NSpid:") and line.split()[-1] == str(pid):
                            return int(entry.name)
        raise AssertionError(f"no host process is the container's pid {pid}")

    def host_cgroup(self, path: str) -> Path:
        """The host directory of the container's cgroup ``path`` (as the container names it)."""
        for line in Path(f"/proc/{self.pid1}/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                container_root = Path(line[3:]).parent  # PID 1 is in <root>/init.scope
                return cgroup2_mount() / str(container_root).lstrip("/") / path.lstrip("/")
        raise AssertionError("the container's PID 1 is in no cgroup v2 group")

    def journal(self, *args: str) -> list[dict[str, object]]:
        """journalctl's entries as JSON objects, after asking journald to write out what it has."""
        self.run("journalctl", "--sync")
        text = self.run("journalctl", "--no-pager", "-o", "json", *args).stdout
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def cursor(self) -> str:
        """The journal's newest entry, to read what comes after it."""
        (last,) = self.journal("-n", "1")
        return str(last["__CURSOR"])

    def install_pqd(self) -> None:
        """README's install section, offline: `make install` with the wheelhouse."""
        started = time.monotonic()
        self.run(
            "make",
            "-C",
            SOURCE,
            "install",
            "PIP_ARGS=--no-index --find-links /opt/wheelhouse",
            timeout=300,
        )
        self.timings["install"] = time.monotonic() - started


def _remove_cgroup(group: Path) -> None:
    """rmdir the group and its children, deepest first, once the processes in them are gone."""
    if not group.exists():
        return
    for directory in [*sorted((p for p in group.rglob("*") if p.is_dir()), reverse=True), group]:
        wait_until(lambda d=directory: _try_rmdir(d), f"{directory} to empty", SHUTDOWN_SECONDS)


def _try_rmdir(directory: Path) -> bool:
    try:
        directory.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


@contextlib.contextmanager
def booted(workdir: Path) -> Iterator[Machine]:
    """A booted container with pqd installed; always shut down, whatever failed."""
    started = time.monotonic()
    root, build_seconds = rootfs.root_fs()
    checkout = copy_checkout(workdir / "checkout")
    machine = Machine(workdir)
    machine.timings["root_fs_build"] = build_seconds
    try:
        machine.boot(root, checkout)
        machine.install_pqd()
        machine.timings["total"] = time.monotonic() - started
        print(f"\nsystemd test container: {machine.timings}", file=sys.stderr)
        yield machine
    finally:
        machine.shutdown()
