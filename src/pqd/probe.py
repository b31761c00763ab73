"""One probe's settings: the plain data the config layer hands to the supervisor and the runner.

Apart from pqd.config.load (which loads and validates it) so that a probe's runner, which imports
this, does not pay for the TOML parser and the validation code it never runs. Each field with a
:class:`~pqd.settings_table.Spec` is a per-probe setting (pqd.settings_table says what follows from
that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from pqd.settings_table import Spec, setting

START_METHODS: Final = ("forkserver", "spawn", "fork")


@dataclass(frozen=True)
class ProbeConfig:
    """One probe: the seed's producer/consumer cycle and when to run it.

    Constructing one directly does not validate it (tests of the cycle need, say, a timeout shorter
    than the work); the loaders in pqd.config.load validate everything they return.
    """

    name: str = "default"
    start_method: str = setting(
        "forkserver",
        Spec(
            "enum",
            "The multiprocessing start method of the cycle's pool and processes",
            "METHOD",
            choices=START_METHODS,
        ),
    )
    workers: int = setting(4, Spec("int", "Processes in the pool", "N", range=(1, 256)))
    queue_maxsize: int = setting(3, Spec("int", "Capacity of the queue", "N", range=(1, 1_000_000)))
    rounds: int = setting(
        5, Spec("int", "Producer/consumer rounds per cycle", "N", range=(1, 100_000))
    )
    items_per_producer: int = setting(
        5, Spec("int", "Items each producer puts per round", "N", range=(1, 1_000_000))
    )
    shared_memory_bytes: int = setting(
        0,
        Spec(
            "int",
            "Bytes of a multiprocessing.shared_memory block that a producer job fills and a "
            "consumer job reads back each cycle, as data loaders pass batches; 0 turns the "
            "shared-memory phase off",
            "BYTES",
            range=(0, 1 << 36),
            note="A page /dev/shm has no room for kills the writing worker (SIGBUS): the cycle "
            "fails with cause shm_full, as a data loader would.",
        ),
    )
    # Seconds slept inside each job.
    job_pause: float = setting(
        0.0,
        Spec(
            "duration",
            "Pause inside each job",
            "DURATION",
            note="The seed slept 1s in each job; 0s keeps a cycle short and cheap.",
        ),
    )
    # Seconds for the whole cycle.
    timeout: float = setting(
        30.0,
        Spec(
            "duration",
            "Deadline of one cycle",
            "DURATION",
            positive=True,
            note="A cycle that has not finished by then is killed and counted as a timeout "
            "failure. It must be longer than 2 * rounds * job_pause.",
        ),
    )
    # Seconds between the starts of two cycles; exactly one of interval and cron is set.
    interval: float | None = setting(
        15.0,
        Spec(
            "duration",
            "Run the probe at this interval",
            "DURATION",
            positive=True,
            # A default cycle takes 50-100 ms, and a schedule no host can honour only produces
            # skips (1 ms gave 680 skip warnings a second and 40% of a core).
            minimum=0.1,
            one_of="schedule",
            daemon_only=True,
        ),
    )
    cron: str | None = setting(
        None,
        Spec(
            "cron",
            "Run the probe on this 5-field cron schedule instead of an interval",
            "CRON",
            one_of="schedule",
            daemon_only=True,
            note='Name the days of the week ("mon-fri"): APScheduler 3 numbers them from Monday, '
            "crontab from Sunday, so numbers are refused.",
            example="*/5 * * * *",
        ),
    )
    # docs/design.md §1a: the interpreter of the runner and of everything it starts.
    python: str | None = setting(
        None,
        Spec(
            "python",
            "The Python the probe's runner, Pool, Manager, forkserver and resource tracker run "
            "under: a path, or a name looked up in PATH",
            "PATH",
            unset="pqd's own interpreter",
            example="/usr/bin/python3.9",
            note="Any CPython from 3.9 on, with nothing installed: pqd hands the runner its own "
            "runner-side modules and nothing else of its installation. check-config and "
            "start-up refuse a path that is not one.",
        ),
    )
    # Pairs, in the order written: a frozen probe stays hashable.
    environment: tuple[tuple[str, str], ...] | None = setting(
        None,
        Spec(
            "environment",
            "Variables the probe's runner gets on top of pqd's own environment (TMPDIR, "
            "PYTHON_CPU_COUNT, PYTHONWARNINGS...), so the probe sees what the application sees",
            "VAR=TEXT,...",
            unset="pqd's environment as it is",
            example='{ TMPDIR = "/var/tmp", PYTHONWARNINGS = "default" }',
            note="A table in the file; VAR=TEXT pairs separated by commas in PQD_ENVIRONMENT "
            "and --environment. Under another python, pqd's PYTHONPATH, PYTHONHOME and "
            "VIRTUAL_ENV are not passed on unless set here.",
        ),
    )
    capture_stacks: bool = setting(
        True,
        Spec(
            "bool",
            "Before a failed cycle's processes are killed, capture their Python stacks (SIGURG "
            "to each process of the probe's tree); false reports only their /proc state",
            "BOOL",
        ),
    )
