"""pqd.runner.causes: every rule from a table of evidence, the good case and the misleading one
next to it (docs/design.md §1, "Causes"; /work research in docs/runbook.md's cause sections)."""

from __future__ import annotations

import dataclasses

import pytest

from pqd.results import FAILURE_CAUSES
from pqd.runner.causes import (
    Evidence,
    Exit,
    OomKills,
    PidsLimit,
    ShmFacts,
    classify,
    no_usable_tmpdirs,
    size,
)

SHM_OK = ShmFacts("/dev/shm", True, True, False, 64 << 20, 60 << 20)
SHM_FULL = dataclasses.replace(SHM_OK, size_bytes=64 << 10, free_bytes=0)
SHM_RO = dataclasses.replace(SHM_OK, read_only=True)
#: Out of inodes with space to spare: a tmpfs of nr_inodes=4096 whose entries took them all.
SHM_NO_INODES = dataclasses.replace(SHM_OK, inodes=4096, free_inodes=0)
#: nr_inodes=0, no limit: statvfs says 0 inodes of 0.
SHM_UNLIMITED_INODES = dataclasses.replace(SHM_OK, inodes=0, free_inodes=0)
SHM_ABSENT = ShmFacts("/dev/shm", False, False, False, 0, 0)
SHM_MODE_000 = dataclasses.replace(SHM_OK, writable=False)
BASE = Evidence(reason="spawn_failed", detail="", shm=SHM_OK, workers=8, tmpdir="/tmp")

FORKSERVER_EAGAIN = """Traceback (most recent call last):
  File "/usr/lib/python3.11/multiprocessing/forkserver.py", line 265, in main
    pid = os.fork()
BlockingIOError: [Errno 11] Resource temporarily unavailable
"""
REBUILD = """Traceback (most recent call last):
  File "/usr/lib/python3.11/multiprocessing/synchronize.py", line 115, in __setstate__
    self._semlock = _multiprocessing.SemLock._rebuild(*state)
FileNotFoundError: [Errno 2] No such file or directory
"""
RESULT_HANDLER = """Exception in thread Thread-3 (_handle_results):
Traceback (most recent call last):
  File "/usr/lib/python3.11/multiprocessing/pool.py", line 579, in _handle_results
    task = get()
TypeError: _Unpicklable.__init__() missing 1 required positional argument: 'code'
/usr/lib/python3.11/multiprocessing/resource_tracker.py:123: UserWarning: resource_tracker: \
process died unexpectedly, relaunching.  Some resources might leak.
"""
PIDS = PidsLimit("/limited", "12", 3, 2)
OOM = OomKills("/mem", 150 << 20, 1, 150 << 20)
KILLED_WORKER = Exit("pool worker", 1014, signal=9)
TMP_CANDIDATES = (("/x/gone", "missing"), ("/tmp", "read-only"), ("/var/tmp", "read-only"),
                  ("/usr/tmp", "missing"), ("/srv", "not writable"))  # fmt: skip

CASES = [
    # (name, evidence, cause, words the sentence must have)
    ("shm full", dict(texts=("", "OSError: [Errno 28] No space left on device"), shm=SHM_FULL),
     "shm_full", ["/dev/shm is full", "64 KiB", "0 B free", "--shm-size"]),
    ("ENOSPC elsewhere, /dev/shm roomy", dict(texts=("", "OSError: [Errno 28] No space")),
     "unknown", []),
    ("shm out of inodes, space to spare", dict(texts=("", "OSError: [Errno 28] No space"),
     shm=SHM_NO_INODES), "shm_full", ["/dev/shm has no free inode", "4095 entries", "60 MiB",
     "nr_inodes"]),
    ("ENOSPC elsewhere, /dev/shm inodes unlimited", dict(texts=("", "OSError: [Errno 28] x"),
     shm=SHM_UNLIMITED_INODES), "unknown", []),
    ("shm read-only", dict(texts=("", "OSError: [Errno 30] Read-only file system"), shm=SHM_RO),
     "shm_unavailable", ["read-only"]),
    ("shm absent", dict(texts=("", "FileNotFoundError: [Errno 2] No such file"), shm=SHM_ABSENT),
     "shm_unavailable", ["does not exist"]),
    ("shm mode 000: glibc says ENOENT", dict(texts=("", "FileNotFoundError: [Errno 2] x"),
     shm=SHM_MODE_000), "shm_unavailable", ["not writable"]),
    ("ENOENT with a usable /dev/shm", dict(texts=("", "FileNotFoundError: [Errno 2] x")),
     "unknown", []),
    ("semaphore removed", dict(reason="worker_died", texts=(REBUILD, "exit code 1")),
     "semaphore_removed", ["RemoveIPC"]),
    ("pids cgroup, the runner saw an echo", dict(texts=(FORKSERVER_EAGAIN, "EOFError"),
     pids_limits=(PIDS,)), "process_limit", ["/limited", "12 of 12"]),
    ("pids cgroup wins over a job's EOFError", dict(reason="job_error", texts=("", "EOFError"),
     pids_limits=(PIDS,)), "process_limit", ["/limited"]),
    ("a counter that did not move is no evidence", dict(texts=("", "EOFError"),
     pids_limits=(dataclasses.replace(PIDS, refused=0),)), "unknown", []),
    ("EAGAIN without a cgroup: RLIMIT_NPROC at its limit", dict(texts=(FORKSERVER_EAGAIN, ""),
     nproc=(8, 8, 61000)), "process_limit", ["RLIMIT_NPROC of 8", "uid 61000"]),
    ("can't start new thread, no limit found", dict(texts=("RuntimeError: can't start new "
     "thread", "")), "process_limit", ["seccomp"]),
    ("RLIMIT_NPROC too small for the tree, no EAGAIN seen", dict(texts=("", "FileNotFoundError:"
     " [Errno 2] x"), nproc=(8, 1, 61000), workers=4), "process_limit", ["RLIMIT_NPROC of 8"]),
    ("RLIMIT_NPROC with room", dict(texts=("", "x"), nproc=(4096, 10, 61000)), "unknown", []),
    ("EMFILE", dict(texts=("", "OSError: [Errno 24] Too many open files"), nofile=(24, 24)),
     "open_files_limit", ["RLIMIT_NOFILE", "24", "8 workers"]),
    ("ENFILE", dict(texts=("", "OSError: [Errno 23] Too many open files in system")),
     "open_files_limit", ["fs.file-max"]),
    ("OOM kill counted and the worker SIGKILLed", dict(reason="worker_died", exits=(KILLED_WORKER,),
     oom_kills=(OOM,), oom_victims=((1014, 127 << 20),)), "memory_limit",
     ["pool worker pid 1014", "OOM killer", "150 MiB", "/mem", "127 MiB"]),
    ("OOM counted, no kernel log", dict(exits=(KILLED_WORKER,), oom_kills=(OOM,)),
     "memory_limit", ["150 MiB"]),
    ("the kernel named the runner", dict(reason="helper_died", exits=(Exit("runner", 7, 9),),
     oom_victims=((7, 60 << 20),)), "memory_limit", ["runner pid 7"]),
    ("SIGKILL alone is not an OOM kill", dict(exits=(KILLED_WORKER,)), "killed",
     ["signal 9", "no OOM kill"]),
    ("an OOM kill elsewhere in the group, nobody of ours SIGKILLed", dict(oom_kills=(OOM,),
     exits=(Exit("pool worker", 5, signal=11),)), "crashed", ["SIGSEGV"]),
    ("TMPDIR too long (forkserver: in the runner)", dict(texts=("", "OSError: AF_UNIX path too "
     "long"), tmpdir="/t" * 53), "tmpdir_unusable", ["106 characters", "107 bytes"]),
    ("TMPDIR too long (spawn: in the Manager's stderr, the runner saw EOF)", dict(texts=(
     "Process SyncManager-1:\nTraceback (most recent call last):\nOSError: AF_UNIX path too long"
     "\n", "EOFError"), tmpdir="/t" * 53), "tmpdir_unusable", ["106 characters"]),
    ("no usable temp dir, no candidates read", dict(texts=("", "starting the runner: [Errno 2] "
     "No usable temporary directory found in ['/tmp']")), "tmpdir_unusable",
     ["no usable temporary directory", "75 characters"]),
    ("no usable temp dir: TMPDIR and each fallback named", dict(texts=("", "No usable temporary "
     "directory found in [...]"), tmp_candidates=TMP_CANDIDATES), "tmpdir_unusable",
     ["TMPDIR /x/gone is missing", "/tmp read-only", "/usr/tmp missing",
      "the working directory /srv not writable", "75 characters"]),
    ("result does not pickle", dict(reason="job_error", texts=("", "<MaybeEncodingError: Error "
     "sending result: 'x'>")), "unpicklable", ["MaybeEncodingError"]),
    ("exception does not unpickle: the result handler died", dict(reason="timeout", texts=(
     RESULT_HANDLER, "producer job of round 1 unfinished")), "unpicklable", ["TypeError"]),
    ("segfault", dict(exits=(Exit("pool worker", 5, signal=11),)), "crashed", ["SIGSEGV"]),
    ("SIGBUS outside the shared-memory phase", dict(exits=(Exit("pool worker", 5, signal=7),),
     shm=SHM_FULL), "crashed", ["SIGBUS"]),
    ("SIGBUS in the shared-memory phase with /dev/shm short", dict(exits=(Exit("pool worker", 5,
     signal=7),), shm=SHM_FULL, shm_phase=True, shm_block=1 << 20), "shm_full",
     ["SIGBUS", "1.0 MiB", "64 KiB tmpfs"]),
    ("SIGBUS in the shared-memory phase with room in /dev/shm", dict(exits=(Exit("pool worker",
     5, signal=7),), shm_phase=True, shm_block=1 << 20), "crashed", ["SIGBUS"]),
    ("abort", dict(exits=(Exit("pool worker", 5, signal=6),)), "crashed", ["SIGABRT"]),
    ("exit status 3", dict(exits=(Exit("pool worker", 5, status=3),)), "unknown", []),
    ("stopped", dict(reason="timeout", states=(("pool worker 1", 5, "T", "do_signal_stop"),)),
     "stopped", ["pool worker 1 pid 5", "state T"]),
    ("D wins over T", dict(states=(("Manager", 4, "T", ""), ("pool worker 1", 5, "D",
     "__refrigerator"))), "uninterruptible", ["state D", "__refrigerator"]),
    ("nothing at all", dict(), "unknown", ["no host cause found"]),
]  # fmt: skip


@pytest.mark.parametrize(("name", "fields", "cause", "words"), CASES, ids=[c[0] for c in CASES])
def test_each_rule(name: str, fields: dict[str, object], cause: str, words: list[str]) -> None:
    found, sentence = classify(dataclasses.replace(BASE, **fields))  # type: ignore[arg-type]
    assert found == cause, sentence
    for word in words:
        assert word in sentence, (word, sentence)


def test_the_table_covers_every_cause() -> None:
    assert {c[2] for c in CASES} == set(FAILURE_CAUSES)


def test_sizes_read_as_people_write_them() -> None:
    assert [size(0), size(65536), size(150 << 20), size(1536), size(None)] == [
        "0 B",
        "64 KiB",
        "150 MiB",
        "1.5 KiB",
        "an unknown amount",
    ]


NO_TMPDIR = "FileNotFoundError: [Errno 2] No usable temporary directory found in "


@pytest.mark.parametrize(
    ("texts", "found"),
    [
        ((f"{NO_TMPDIR}['/a', '/tmp', '/var/tmp', '/usr/tmp', '/w']\n",),
         ("/a", "/tmp", "/var/tmp", "/usr/tmp", "/w")),
        (("EOFError", f"x\n  {NO_TMPDIR}['/b]c', \"/it's\"]"), ("/b]c", "/it's")),
        ((f"{NO_TMPDIR}['/cut off",), ()),
        (("OSError: AF_UNIX path too long",), ()),
    ],
)  # fmt: skip
def test_the_temp_dirs_tempfile_tried_are_read_from_its_message(
    texts: tuple[str, ...], found: tuple[str, ...]
) -> None:
    assert no_usable_tmpdirs(texts) == found


def test_a_tmpdir_not_set_is_said_so() -> None:
    evidence = dataclasses.replace(BASE, texts=(NO_TMPDIR,), tmp_candidates=TMP_CANDIDATES[1:])
    assert classify(evidence)[1].startswith(
        "no usable temporary directory: TMPDIR is not set, and no fallback is usable either "
        "(/tmp read-only, /var/tmp read-only, /usr/tmp missing, the working directory /srv "
        "not writable)"
    )
