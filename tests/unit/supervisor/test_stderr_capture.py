"""pqd.supervisor.stderr_capture: a cycle's stderr is kept bounded and its warnings counted."""

from __future__ import annotations

import os

from pqd.bounds import STDERR_HEAD_BYTES, STDERR_TAIL_BYTES
from pqd.supervisor.stderr_capture import StderrCapture

TRACKER = (
    "/usr/lib/python3.11/multiprocessing/resource_tracker.py:254: UserWarning: resource_tracker:"
    " There appear to be 6 leaked semaphore objects to clean up at shutdown\n"
    "  warnings.warn('resource_tracker: There appear to be %d '\n"
    "/usr/lib/python3.11/multiprocessing/resource_tracker.py:123: UserWarning: resource_tracker:"
    " process died unexpectedly, relaunching.  Some resources might leak.\n"
)
FORK = (
    "/usr/lib/python3.12/multiprocessing/popen_fork.py:66: DeprecationWarning: This process "
    "(pid=7) is multi-threaded, use of fork() may lead to deadlocks in the child.\n"
)
CLEANUP = (
    "Traceback (most recent call last):\n"
    '  File "/usr/lib/python3.11/multiprocessing/synchronize.py", line 87, in _cleanup\n'
    "    sem_unlink(name)\n"
    "FileNotFoundError: [Errno 2] No such file or directory\n"
)
OTHER = "x.py:1: ResourceWarning: unclosed file\nx.py:2: RuntimeWarning: odd\n"


def capture() -> tuple[StderrCapture, int]:
    read, write = os.pipe()
    return StderrCapture(read), write


def test_warnings_are_counted_by_category_and_the_text_kept() -> None:
    cap, write = capture()
    os.write(write, (TRACKER + FORK + CLEANUP + OTHER).encode())
    cap.drain()
    text, written, warnings = cap.take()
    assert warnings == {
        "leaked_objects": 1,
        "tracker_relaunched": 1,
        "fork_with_threads": 1,
        "semaphore_removed": 1,
        "resource_warning": 1,
        "other": 1,
    }
    assert text == TRACKER + FORK + CLEANUP + OTHER and written == len(text)
    os.write(write, b"next cycle")
    os.close(write)
    assert cap.take() == ("next cycle", 10, {})  # each take starts anew
    assert cap.eof


def test_a_flood_keeps_its_head_and_tail_and_counts_every_byte() -> None:
    cap, write = capture()
    total = 0
    for n in range(400):
        line = f"{n:05d} ".encode() + b"x" * 1000 + b"\n"
        os.write(write, line)
        total += len(line)
        cap.drain()  # a pipe holds 64 KiB: read as pqd does while it waits
    text, written, warnings = cap.take()
    assert written == total and warnings == {}
    assert text.startswith("00000 ") and text.rstrip().endswith("x")
    assert "00399 " in text[-STDERR_TAIL_BYTES:]
    assert f"{total - STDERR_HEAD_BYTES - STDERR_TAIL_BYTES} bytes not kept" in text
    assert len(text) < STDERR_HEAD_BYTES + STDERR_TAIL_BYTES + 100
    os.close(write)
    cap.close()
