"""pqd: a probe daemon for Python multiprocessing health, exported to Prometheus."""

from __future__ import annotations


def __getattr__(name: str) -> str:
    # Looked up on first use, not at import: spawn workers import the pqd package too, and
    # reading the installed distribution's metadata cost each of them 40-60 ms.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("pqd")
        except PackageNotFoundError:  # a source tree that was never installed
            return "0.0.0+unknown"
    raise AttributeError(f"module 'pqd' has no attribute {name!r}")
