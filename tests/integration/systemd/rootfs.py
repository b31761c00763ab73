"""The container's root file system: Debian bookworm, debootstrap's minbase with systemd, dbus,
python3 and make, cached in the git-ignored .cache/systemd-root/ under a key made of its package
list, so only the first run downloads (Debian packages, and nothing else) and builds it (about a
minute); later runs boot it as it is. It is only ever booted read-only (systemd-nspawn
--volatile=overlay), so nothing a test does reaches the cache."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CACHE = REPO / ".cache/systemd-root"
SUITE = "bookworm"
VARIANT = "minbase"
MIRROR = "http://deb.debian.org/debian"
#: What the tests need in the container: systemd as PID 1 with its D-Bus, Debian's python3 with
#: venv for pqd's virtualenv, and make for README's `make install`.
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "make")
BUILD_SECONDS = 900.0
#: Marks a finished build; a directory without it is a build that was cut short.
COMPLETE = ".pqd-test-root-complete"


def cache_key() -> str:
    recipe = json.dumps([SUITE, VARIANT, MIRROR, sorted(PACKAGES)])
    return f"{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}"


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One builder at a time (two test sessions may start together)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def root_fs() -> tuple[Path, float]:
    """The cached root file system, built first if needed; and the seconds spent building it
    (0.0 when it was cached)."""
    with _locked():
        final = CACHE / cache_key()
        if (final / COMPLETE).exists():
            return final, 0.0
        for other in CACHE.iterdir():
            if other.is_dir():  # other package lists, or a build cut short
                shutil.rmtree(other)
        started = time.monotonic()
        _debootstrap(final)
        return final, time.monotonic() - started


def _debootstrap(target: Path) -> None:
    debootstrap = shutil.which("debootstrap")
    assert debootstrap, "debootstrap is not installed: `make system-deps` installs it"
    log = CACHE / "debootstrap.log"
    command = [
        debootstrap,
        f"--variant={VARIANT}",
        "--include=" + ",".join(PACKAGES),
        SUITE,
        str(target),
        MIRROR,
    ]
    with open(log, "wb") as out:
        try:
            result = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_SECONDS, check=False
            )
        except subprocess.TimeoutExpired:
            raise AssertionError(f"debootstrap took over {BUILD_SECONDS:.0f}s; see {log}") from None
    if result.returncode != 0:
        inner = target / "debootstrap/debootstrap.log"
        detail = inner.read_text(errors="replace")[-3000:] if inner.exists() else ""
        tail = log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"debootstrap exited {result.returncode}:\n{tail}\n{detail}")
    # The downloaded packages are installed now; they would only double the cache.
    for deb in (target / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    (target / COMPLETE).write_text(" ".join(command) + "\n")
