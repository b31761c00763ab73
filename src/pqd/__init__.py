"""pqd: a probe daemon for Python multiprocessing health, exported to Prometheus."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pqd")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
