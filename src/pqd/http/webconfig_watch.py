"""The web config the server runs with, re-read when its file or a file it names changes.

Rotating a certificate or a password hash must not need a restart, and a broken new version must
not take the server down: it is logged once and the last good version kept. The files are looked
at only when the server has traffic to serve with them (at most once per check interval), never
on a timer, so an idle pqd stays asleep.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from pqd.errors import ConfigError
from pqd.http.webconfig import WebConfig, referenced_files, ssl_context, web_config_from_file

__all__ = ["LoadedWebConfig", "WebConfigWatcher", "files_signature", "load_web_config"]

log = logging.getLogger("pqd.http")

#: Per file: its path and (device, inode, size, mtime), or only its path if it cannot be stat()ed.
Signature = tuple[tuple[str, int, int, int, int] | tuple[str], ...]


def files_signature(paths: Iterable[str]) -> Signature:
    """What changes when one of ``paths`` is replaced, rewritten, created or removed."""
    out: list[tuple[str, int, int, int, int] | tuple[str]] = []
    for path in paths:
        try:
            st = os.stat(path)
        except (OSError, ValueError):
            out.append((path,))
        else:
            out.append((path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


@dataclass(frozen=True)
class LoadedWebConfig:
    """A web config and the TLS context built from it (None: plain HTTP)."""

    config: WebConfig
    context: ssl.SSLContext | None


def load_web_config(path: str) -> tuple[LoadedWebConfig | ConfigError, tuple[str, ...], Signature]:
    """Load ``path``; also return which files the attempt depended on and their signature, so
    that a failed attempt is retried only once one of them changes."""
    # Stat before reading: a change racing with the read then shows up as a new signature.
    signature = files_signature((path,))
    try:
        config = web_config_from_file(path)
    except ConfigError as err:
        return err, (path,), signature
    files = referenced_files(config)
    signature += files_signature(files)
    try:
        context = ssl_context(config.tls) if config.tls is not None else None
    except ConfigError as err:
        return err, (path, *files), signature
    return LoadedWebConfig(config, context), (path, *files), signature


class WebConfigWatcher:
    """Holds the web config in force (:attr:`current`) and reloads it when its files change.

    Without a file, the config is the empty one: plain HTTP, no auth. With one, the constructor
    loads it and raises ConfigError if it is broken; later broken versions are only logged.
    """

    def __init__(self, path: str | None, check_interval: float) -> None:
        self._path = path
        self._check_interval = check_interval
        self._next_check = 0.0
        self._watched: tuple[str, ...] = ()
        self._watched_signature: Signature = ()
        self.current = LoadedWebConfig(WebConfig(), None)
        if path is not None:
            loaded, self._watched, self._watched_signature = load_web_config(path)
            if isinstance(loaded, ConfigError):
                raise loaded
            self.current = loaded
        # Fixed for the server's life: its listener was set up for one or the other.
        self.tls = self.current.context is not None

    def check(self, now: float) -> None:
        """Reload if a watched file changed since the last look (at most once per interval)."""
        if self._path is None or now < self._next_check:
            return
        self._next_check = now + self._check_interval
        if files_signature(self._watched) == self._watched_signature:
            return
        loaded, self._watched, self._watched_signature = load_web_config(self._path)
        if not isinstance(loaded, ConfigError) and (loaded.context is not None) != self.tls:
            loaded = ConfigError(
                self._path,
                self._path,
                "TLS cannot be switched on or off while pqd runs; restart pqd",
            )
        if isinstance(loaded, ConfigError):
            # Logged once: the attempt is retried only when one of its files changes again.
            log.error(
                "web config not reloaded, keeping the previous one",
                extra={"path": self._path, "err": str(loaded)},
            )
            return
        self.current = loaded
        log.info("web config reloaded", extra={"path": self._path})
