"""Probe configs the tests write into pqd.toml."""

from __future__ import annotations


def quick_probe(name: str, start_method: str = "forkserver") -> str:
    """A ``[probes.NAME]`` table that cycles every second and takes a fraction of one: two
    workers, two rounds, no pause (a few cycles within seconds on a loaded 2-core machine)."""
    return f"""\
[probes.{name}]
start_method = "{start_method}"
workers = 2
queue_maxsize = 3
rounds = 2
items_per_producer = 5
job_pause = "0s"
timeout = "30s"
interval = "1s"
"""
