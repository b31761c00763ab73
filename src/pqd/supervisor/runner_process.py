"""pqd's handle on one runner process (pqd.runner.main): starting it, sending it a cycle, and
reading the events it streams back (pqd.runner.events), never blocking past a deadline
(docs/design.md §1a)."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from pqd.probe import ProbeConfig
from pqd.runner import stacks
from pqd.runner.containment import ProbeCgroup
from pqd.runner.events import Event, LineReader, RunCycle, encode_command
from pqd.supervisor.stderr_capture import StderrCapture

#: How long a runner may take to start (interpreter + imports) before the cycle fails.
START_SECONDS = 10.0
#: How a runner under another interpreter starts: like ``-m MODULE``, but with pqd's private
#: runner-side directory (pqd.supervisor.runner_files) first on its path and not the working
#: directory. run_module(alter_sys=True) gives __main__ the module's __spec__, as -m does, so
#: spawn children import the runner module as their __mp_main__ just the same.
BOOTSTRAP: Final = (
    "import runpy, sys; sys.path[:] = [sys.argv[1]] + [p for p in sys.path if p]; "
    "name = sys.argv[2]; del sys.argv[1:3]; "
    "runpy.run_module(name, run_name='__main__', alter_sys=True)"
)
#: pqd's own interpreter settings, never handed to another interpreter: they would point it at
#: pqd's installation (a probe's ``environment`` may set them again).
NOT_INHERITED: Final = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONEXECUTABLE")


def runner_command(python: str, module: str, files: str | None, options: list[str]) -> list[str]:
    """The runner's argv: ``python -m module`` for pqd's own interpreter (``files`` None), else
    the bootstrap that imports the runner side from ``files``."""
    if files is None:
        return [python, "-m", module, *options]
    return [python, "-c", BOOTSTRAP, files, module, *options]


def runner_environment(
    environment: Mapping[str, str], files: str | None, base: Mapping[str, str]
) -> dict[str, str]:
    """pqd's environment (``base``) with the probe's ``environment`` over it; under another
    interpreter without pqd's own interpreter settings, and with ``files`` first on
    PYTHONPATH, before any the probe sets."""
    if files is None:
        return {**base, **environment}
    env = {k: v for k, v in base.items() if k not in NOT_INHERITED and not k.startswith("__PYVENV")}
    env.update(environment)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (files, environment.get("PYTHONPATH"))))
    return env


@dataclass
class RunnerProcess:
    proc: subprocess.Popen[bytes]
    events: int  # read end of the runner's event pipe
    pidfd: int | None  # readable once the runner exits; None without pidfd support
    group: ProbeCgroup | None
    stacks_dir: str  # where its tree's processes write their stack dumps (pqd.runner.stacks)
    stderr: StderrCapture  # what its tree writes to stderr, read whenever pqd waits on it
    reader: LineReader = field(default_factory=LineReader)
    # What it was started with (the probe's python and environment): a probe whose settings
    # changed gets a new runner.
    started_with: tuple[object, ...] = ()
    python: tuple[str, str] = ("", "")  # implementation and version, from its "ready"

    @classmethod
    def launch(
        cls,
        python: str,
        module: str,
        options: list[str],
        group: ProbeCgroup | None,
        *,
        files: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> RunnerProcess:
        """Start ``python -m module --events-fd N *options`` in a process group of its own (the
        runner joins ``group`` itself, told so in ``options``); under another interpreter with
        the runner side from ``files`` (runner_command). Raises OSError."""
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        err_read, err_write = os.pipe2(os.O_CLOEXEC)
        stacks_dir = ""
        env = runner_environment(environment or {}, files, os.environ)
        try:
            stacks_dir = tempfile.mkdtemp(prefix="pqd-stacks-")
            proc = subprocess.Popen(
                runner_command(python, module, files, ["--events-fd", str(write_fd), *options]),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=err_write,
                pass_fds=(write_fd,),
                process_group=0,
                env={**env, stacks.STACKS_DIR_ENV: stacks_dir},
            )
        except BaseException:
            os.close(read_fd)
            os.close(err_read)
            if stacks_dir:
                shutil.rmtree(stacks_dir, ignore_errors=True)
            raise
        finally:
            os.close(write_fd)
            os.close(err_write)
        return cls(proc, read_fd, _pidfd(proc.pid), group, stacks_dir, StderrCapture(err_read))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close_fds(self) -> None:
        self.stderr.drain()  # what a killed tree wrote last; a process still holding it waits
        self.stderr.close()
        for fd in (self.events, self.pidfd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()

    def send(self, probe: ProbeConfig, cycle_id: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode_command(RunCycle(probe, cycle_id)))
        self.proc.stdin.flush()

    def wait_readable(self, seconds: float) -> tuple[bool, bool]:
        """(events readable, runner exited), waiting at most ``seconds``."""
        watched = [self.events] if self.pidfd is None else [self.events, self.pidfd]
        if not self.stderr.eof:
            watched.append(self.stderr.fd)
        if self.pidfd is None:
            seconds = min(seconds, 0.1)  # poll for the runner's exit instead
        readable, _, _ = select.select(watched, [], [], max(seconds, 0.0))
        if self.stderr.fd in readable:
            self.stderr.drain()
        exited = self.pidfd in readable if self.pidfd is not None else self.proc.poll() is not None
        return self.events in readable, exited

    def read_events(self) -> list[Event]:
        """The events complete now. EOFError once the runner closed its event pipe; ProtocolError
        (a ValueError) on a line that is not an event."""
        data = os.read(self.events, 1 << 20)
        if not data:
            raise EOFError("the runner closed its event pipe")
        return self.reader.feed(data)

    def first_event(self, deadline: float) -> Event | None:
        """The runner's first event, or None if it exited first. TimeoutError past the deadline
        or START_SECONDS."""
        limit = min(deadline, time.monotonic() + START_SECONDS)
        while True:
            left = limit - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"runner pid {self.pid} not ready in time")
            events_ready, exited = self.wait_readable(left)
            if events_ready:
                try:
                    events = self.read_events()
                except EOFError:
                    return None
                if events:
                    return events[0]
            elif exited:
                return None

    def death(self, wait: float) -> tuple[str, str]:
        """Why the cycle ends when the runner went away: helper_died, and how it died."""
        try:
            code = self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            return ("helper_died", f"runner pid {self.pid} closed its event pipe")
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        return ("helper_died", f"runner pid {self.pid} {how}")


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except OSError:  # kernel < 5.3
        return None
