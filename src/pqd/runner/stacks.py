"""Where a failed cycle's processes were stuck: their /proc state and their Python stacks.

Every Python process of a probe's tree (the runner, the Manager, each pool worker and the
forkserver) calls ``install()`` early: it registers faulthandler on ``DUMP_SIGNAL`` with its
own file ``<PQD_STACKS_DIR>/<pid>``. Before a failed cycle's tree is killed, ``capture()`` reads
each live process's state and wchan from /proc, sends the signal to those that can answer, and
reads what they wrote.

faulthandler, not a Python-level signal handler: its dump is written from C inside the signal
handler, so a process answers even while its main thread is blocked in a system call or holds
the GIL in C code. A stopped (T) or uninterruptible (D) process cannot run a handler at all; it
is reported by its state and not waited for.

Top-level imports are the standard library only: every pool worker imports this module.
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import time
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from pqd.results import StuckProcess

#: SIGURG's default action is to ignore it, so a process of the tree that did not install the
#: handler (a job's own child) is not killed by being asked.
DUMP_SIGNAL = signal.SIGURG
#: Environment variable naming the directory of dump files; set by pqd for each runner and
#: inherited by everything the runner starts (spawn, fork and forkserver alike).
STACKS_DIR_ENV = "PQD_STACKS_DIR"
#: The whole capture's bound: the cycle's deadline still holds (result within timeout + 1 s).
CAPTURE_SECONDS = 0.4
#: How much of one process's dump is kept (the innermost frames come first in each thread).
MAX_STACK_BYTES = 16 * 1024
#: How many processes a capture reports; a fork bomb's tree is reported by its first ones.
MAX_PROCESSES = 64
_POLL_SECONDS = 0.005

#: What each /proc state letter means (proc(5)); "?" is a state that could not be read.
STATE_MEANINGS = {
    "R": "running",
    "S": "sleeping",
    "D": "uninterruptible sleep",
    "T": "stopped",
    "t": "tracing stop",
    "Z": "zombie",
    "X": "dead",
    "I": "idle",
    "P": "parked",
    "W": "waking",
    "K": "wakekill",
    "?": "could not be read",
}

# The file the current registration writes to; kept open for as long as it is registered.
_dump_file: IO[str] | None = None


def state_meaning(letter: str) -> str:
    return STATE_MEANINGS.get(letter, "unknown")


def install(directory: str | None = None) -> bool:
    """Register this process's stack dump (idempotent; a forked child calls it again to get a
    file of its own instead of writing into its parent's). False if there is no directory."""
    global _dump_file
    directory = directory or os.environ.get(STACKS_DIR_ENV)
    if not directory:
        return False
    try:
        dump_file = open(os.path.join(directory, str(os.getpid())), "w")  # noqa: SIM115
    except OSError:
        return False
    faulthandler.register(DUMP_SIGNAL, file=dump_file, all_threads=True, chain=False)
    previous, _dump_file = _dump_file, dump_file
    if previous is not None:
        previous.close()  # a fork's copy of the parent's file; the parent's stays open
    return True


def prune(directory: str, keep: Sequence[int] = ()) -> None:
    """Remove the dump files of processes that are gone (and not in ``keep``)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.isdigit() or int(name) in keep:
            continue
        if _read_state(int(name)) in (None, "Z", "X"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(directory, name))


def _read_state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            data = stat.read()
    except OSError:
        return None
    # The command name in parentheses may itself hold spaces and parentheses.
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0].decode() if fields else None


def _read_wchan(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/wchan") as wchan:
            text = wchan.read().strip()
    except OSError:
        return ""
    return "" if text == "0" else text


def _catches_dump_signal(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (DUMP_SIGNAL - 1) & 1)
    except (OSError, ValueError, IndexError):
        return False
    return False


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _read_from(path: str, offset: int) -> str:
    try:
        with open(path, "rb") as dump:
            dump.seek(offset)
            data = dump.read(MAX_STACK_BYTES + 1)
    except OSError:
        return ""
    text = data[:MAX_STACK_BYTES].decode("utf-8", "replace")
    if len(data) > MAX_STACK_BYTES:
        text += f"\n[cut at {MAX_STACK_BYTES} bytes]\n"
    return text


def _ask(targets: dict[int, tuple[str, int]], seconds: float) -> dict[int, str]:
    """Signal every target at once and collect the dumps that arrive within ``seconds``.
    A dump is complete once its file stopped growing for one poll."""
    for pid in targets:
        with contextlib.suppress(OSError):
            os.kill(pid, DUMP_SIGNAL)
    deadline = time.monotonic() + seconds
    last_size = {pid: offset for pid, (_, offset) in targets.items()}
    done: dict[int, str] = {}
    while len(done) < len(targets) and time.monotonic() < deadline:
        time.sleep(_POLL_SECONDS)
        for pid, (path, offset) in targets.items():
            if pid in done:
                continue
            size = _size(path)
            if size > offset and size == last_size[pid]:
                done[pid] = _read_from(path, offset)
            last_size[pid] = size
    return done


def capture(
    roles: Mapping[int, str],
    directory: str | None,
    seconds: float = CAPTURE_SECONDS,
    *,
    ask: bool = True,
) -> tuple[StuckProcess, ...]:
    """Every live process of ``roles`` (pid -> role, in the order to report them): state,
    wchan and, where it can answer, every thread's Python stack. Takes at most ``seconds``.
    ``ask=False`` (a probe's ``capture_stacks = false``) signals nothing: states and wchans."""
    from pqd.results import StuckProcess

    seen: list[tuple[int, str, str, str]] = []
    for pid, role in list(roles.items())[:MAX_PROCESSES]:
        letter = _read_state(pid)
        if letter is not None and letter != "X":
            seen.append((pid, role, letter, _read_wchan(pid)))
    targets: dict[int, tuple[str, int]] = {}
    notes: dict[int, str] = {}
    for pid, _, letter, _ in seen:
        path = os.path.join(directory, str(pid)) if directory else ""
        if not ask:
            notes[pid] = "stacks not captured (capture_stacks = false)"
        elif letter in ("T", "t", "D", "Z"):
            notes[pid] = f"{state_meaning(letter)}: not asked, it cannot answer in that state"
        elif not path or not os.path.exists(path) or not _catches_dump_signal(pid):
            notes[pid] = "no stack dump handler (started without pqd's hooks)"
        else:
            targets[pid] = (path, _size(path))
    stacks = _ask(targets, seconds) if targets else {}
    for pid in targets:
        if pid not in stacks:
            notes[pid] = f"no answer within {seconds:g}s"
    return tuple(
        StuckProcess(pid, role, letter, wchan, stacks.get(pid), notes.get(pid, ""))
        for pid, role, letter, wchan in seen
    )


def summary(processes: Sequence[StuckProcess], limit: int = 400) -> str:
    """One line for the cycle's log entry: each process's role, pid, state and where its main
    thread was: "pool worker 1 pid 812 T; Manager pid 805 S at managers.py:201 in serve"."""
    parts = []
    for proc in processes:
        part = f"{proc.role} pid {proc.pid} {proc.state}"
        frame = innermost_frame(proc.stack) if proc.stack else None
        if frame:
            part += f" at {frame}"
        parts.append(part)
    line = "; ".join(parts)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def innermost_frame(stack: str) -> str | None:
    """``file:line in function`` of the main thread's innermost frame. faulthandler lists
    threads newest first, so the main thread is the last block, and frames innermost first."""
    blocks = [b for b in stack.split("\n\n") if "(most recent call first)" in b]
    for block in reversed(blocks):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith('File "'):
                path, _, rest = line[len('File "') :].partition('", line ')
                return f"{os.path.basename(path)}:{rest}"
    return None
