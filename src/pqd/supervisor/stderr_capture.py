"""What a probe's process tree writes to stderr, taken per cycle (docs/design.md §1, "Causes").

The runner's stderr, which its whole tree inherits (forkserver, resource tracker, Manager, pool
workers), is a pipe that pqd reads whenever it waits on the runner, so nothing of the tree reaches
pqd's own stderr or journald. What is kept stays bounded (pqd.bounds): the first
STDERR_HEAD_BYTES, the last STDERR_TAIL_BYTES and a count of every byte; the warnings in it are
counted by category as the lines go by (results.WARNING_CATEGORIES).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections import Counter
from typing import Final

from pqd.bounds import STDERR_HEAD_BYTES, STDERR_LINE_BYTES, STDERR_TAIL_BYTES

#: Line patterns of each warning category, tried in this order; "other" is any other warning.
_CATEGORIES: Final = (
    ("leaked_objects", re.compile(r"There appear to be \d+ leaked \S+ objects")),
    ("tracker_relaunched", re.compile(r"process died unexpectedly, relaunching")),
    ("fork_with_threads", re.compile(r"is multi-threaded, use of fork\(\) may lead to deadlock")),
    ("resource_warning", re.compile(r"\bResourceWarning\b")),
)
_OTHER_WARNING: Final = re.compile(r"^(?:\S+:\d+: )?[A-Z]\w*Warning: ")
#: A traceback of a named semaphore that vanished: SemLock._rebuild (a new process opening it)
#: or SemLock._cleanup (sem_unlink at teardown), ending in FileNotFoundError.
_SEMAPHORE_FRAME: Final = re.compile(r", in (?:_rebuild|__setstate__|_cleanup)$")


class StderrCapture:
    """The bounded text of one cycle's stderr and its warning counts; ``take`` starts anew."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self.eof = False
        self._reset()

    def _reset(self) -> None:
        self._head = bytearray()
        self._tail = bytearray()
        self._total = 0
        self._line = bytearray()
        self._semaphore_frame = False
        self._warnings: Counter[str] = Counter()

    def drain(self) -> None:
        """Read what the tree has written so far (never blocks)."""
        while not self.eof:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.eof = True
                return
            self.feed(data)

    def feed(self, data: bytes) -> None:
        self._total += len(data)
        self._lines(data)
        room = STDERR_HEAD_BYTES - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail = (self._tail + data)[-STDERR_TAIL_BYTES:]

    def _lines(self, data: bytes) -> None:
        *complete, rest = (self._line + data).split(b"\n")
        self._line = bytearray(rest[:STDERR_LINE_BYTES])
        for raw in complete:
            self._classify(raw[:STDERR_LINE_BYTES].decode("utf-8", "replace"))

    def _classify(self, line: str) -> None:
        if line.startswith("Traceback (most recent call last):"):
            self._semaphore_frame = False
        elif _SEMAPHORE_FRAME.search(line):
            self._semaphore_frame = True
        elif line.startswith("FileNotFoundError") and self._semaphore_frame:
            self._warnings["semaphore_removed"] += 1
            self._semaphore_frame = False
        for category, pattern in _CATEGORIES:
            if pattern.search(line):
                self._warnings[category] += 1
                return
        if _OTHER_WARNING.search(line):
            self._warnings["other"] += 1

    def take(self) -> tuple[str, int, dict[str, int]]:
        """(text kept, bytes written in all, warnings by category) since the last take."""
        self.drain()
        if self._line:
            self._classify(self._line.decode("utf-8", "replace"))
        text = self._head.decode("utf-8", "replace")
        dropped = self._total - len(self._head) - len(self._tail)
        if dropped > 0:
            text += f"\n[... {dropped} bytes not kept ...]\n"
        text += self._tail.decode("utf-8", "replace")
        taken = (text, self._total, dict(self._warnings))
        self._reset()
        return taken

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.eof = True
