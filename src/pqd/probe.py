"""One probe's settings: the plain data the config layer hands to the supervisor and the runner.

Apart from pqd.config (which loads and validates it) so that a probe's runner, which imports
this, does not pay for the TOML parser and the validation code it never runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeConfig:
    """One probe: the seed's producer/consumer cycle and when to run it.

    Constructing one directly does not validate it (tests of the cycle need, say, a timeout shorter
    than the work); the loaders in pqd.config validate everything they return.
    """

    name: str = "default"
    start_method: str = "forkserver"
    workers: int = 4
    queue_maxsize: int = 3
    rounds: int = 5
    items_per_producer: int = 5
    job_pause: float = 0.0  # seconds slept inside each job
    timeout: float = 30.0  # seconds for the whole cycle
    interval: float | None = 15.0  # seconds; exactly one of interval and cron is set
    cron: str | None = None  # 5-field crontab expression
