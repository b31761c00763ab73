"""The runner's pipe protocol (docs/design.md §1a): the command pqd sends a runner and the events
the runner streams back, their types, their encoding and their decoding, in one module both sides
import. One JSON object per line in each direction:

* pqd -> runner, on the runner's stdin: ``{"cycle": {ProbeConfig fields}, "cycle_id": "..."}``
  (``RunCycle``). EOF: stop.
* runner -> pqd, on the inherited events pipe: ``ready`` once, then per cycle ``begun``,
  ``processes``, ``job`` (one per finished job), ``failing`` (if it fails) and ``result`` (the
  whole CycleResult). A runner that cannot read a command says ``failing`` and stops.

Standard library only: the runner side imports it, and may run under another CPython.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, Union

from pqd.probe import ProbeConfig
from pqd.results import CycleResult, Headroom, JobReport, job_report_from_dict, result_from_dict

#: Longest command line pqd sends (a ProbeConfig is a few hundred bytes).
MAX_COMMAND_BYTES = 64 * 1024
#: A line from the runner longer than this ends the cycle (pqd's memory stays bounded).
MAX_EVENT_BYTES = 256 * 1024 * 1024


class ProtocolError(ValueError):
    """A line that is not what this pqd's runner sends (or pqd sends its runner)."""


@dataclass(frozen=True)
class Ready:
    """The runner has started and waits for commands."""

    pid: int
    # The interpreter it runs under (the probe's python): sys.implementation.name and
    # sys.version's first word.
    python: tuple[str, str] = ("", "")


@dataclass(frozen=True)
class Begun:
    """A cycle began: the host's pid count before it, the helpers already running, and the
    probe's headroom as read then (docs/design.md §2), kept by pqd for a cycle it must end."""

    helpers: dict[int, str]  # pid -> role ("forkserver", "resource tracker")
    host_pid_count: int
    headroom: Headroom | None = None


@dataclass(frozen=True)
class ProcessesStarted:
    """The Manager and the pool are up."""

    manager_pid: int
    worker_pids: tuple[int, ...]


@dataclass(frozen=True)
class JobFinished:  # one job of the cycle finished, well or not
    report: JobReport


@dataclass(frozen=True)
class Failing:
    """The runner has judged the cycle failed and is tearing it down."""

    reason: str
    detail: str


@dataclass(frozen=True)
class Finished:
    result: CycleResult


# A runtime alias, so Union: the runner side also runs under CPython 3.9 (PEP 604 is 3.10).
Event = Union[Ready, Begun, ProcessesStarted, JobFinished, Failing, Finished]


def _wire(event: Event) -> dict[str, Any]:
    if isinstance(event, Ready):
        return {"event": "ready", "pid": event.pid, "python": list(event.python)}
    if isinstance(event, Begun):
        room = None if event.headroom is None else dataclasses.asdict(event.headroom)
        return {
            "event": "begun",
            "host_pid_count": event.host_pid_count,
            "helpers": event.helpers,
            "headroom": room,
        }
    if isinstance(event, ProcessesStarted):
        return {
            "event": "processes",
            "manager": event.manager_pid,
            "workers": list(event.worker_pids),
        }
    if isinstance(event, JobFinished):
        return {"event": "job", "report": dataclasses.asdict(event.report)}
    if isinstance(event, Failing):
        return {"event": "failing", "reason": event.reason, "detail": event.detail}
    if isinstance(event, Finished):
        return {"event": "result", "result": dataclasses.asdict(event.result)}
    raise TypeError(f"not an event: {type(event).__name__}")


def encode(event: Event) -> bytes:
    """One line, newline included."""
    return json.dumps(_wire(event), separators=(",", ":")).encode() + b"\n"


def _from_wire(data: Mapping[str, Any]) -> Event:
    kind = data.get("event")
    if kind == "ready":
        implementation, version = data.get("python") or ("", "")
        return Ready(int(data["pid"]), (str(implementation), str(version)))
    if kind == "begun":
        helpers = {int(pid): str(role) for pid, role in dict(data["helpers"]).items()}
        room = data.get("headroom")
        return Begun(
            helpers, int(data["host_pid_count"]), None if room is None else Headroom(**room)
        )
    if kind == "processes":
        return ProcessesStarted(int(data["manager"]), tuple(int(p) for p in data["workers"]))
    if kind == "job":
        return JobFinished(job_report_from_dict(data["report"]))
    if kind == "failing":
        return Failing(str(data["reason"]), str(data["detail"]))
    if kind == "result":
        return Finished(result_from_dict(data["result"]))
    raise ProtocolError(f"unknown event {str(kind)[:40]!r}")


def decode(line: bytes | str) -> Event:
    """The event of one line. Raises ProtocolError on anything else."""
    try:
        data = json.loads(line)
        if not isinstance(data, dict):
            raise ProtocolError(f"an event is a JSON object, not {type(data).__name__}")
        return _from_wire(data)
    except ProtocolError:
        raise
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"malformed event: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class RunCycle:
    """pqd -> runner: run one cycle of ``probe``."""

    probe: ProbeConfig
    cycle_id: str


def encode_command(command: RunCycle) -> bytes:
    # The probe's python and environment are the runner's own already (how it was started).
    cycle = dataclasses.asdict(command.probe)
    del cycle["python"], cycle["environment"]
    line = {"cycle": cycle, "cycle_id": command.cycle_id}
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def decode_command(line: bytes | str) -> RunCycle:
    """The command of one line. Raises ProtocolError on anything else."""
    if len(line) > MAX_COMMAND_BYTES:
        raise ProtocolError(f"command longer than {MAX_COMMAND_BYTES} bytes")
    try:
        data = json.loads(line)
        return RunCycle(ProbeConfig(**data["cycle"]), str(data["cycle_id"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"malformed command: {type(exc).__name__}: {exc}") from None


class LineReader:
    """Splits what arrives on the events pipe into events, holding at most ``max_bytes`` of an
    unfinished line."""

    def __init__(self, max_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max_bytes = max_bytes
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[Event]:
        """The events completed by ``data``. Raises ProtocolError."""
        self._pending += data
        *lines, rest = self._pending.split(b"\n")
        if len(rest) > self._max_bytes:
            raise ProtocolError(f"the runner sent more than {self._max_bytes} bytes in one event")
        self._pending = bytearray(rest)
        return [decode(bytes(line)) for line in lines if line]


class EventWriter:
    """The runner's side: a CycleObserver (pqd.runner.cycle) that writes each event to pqd as it
    happens, from whichever thread it happens on."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._lock = threading.Lock()

    def send(self, event: Event) -> None:
        line = encode(event)
        with self._lock:
            self._out.write(line)
            self._out.flush()

    def begun(
        self, host_pid_count: int, helpers: dict[int, str], headroom: Headroom | None = None
    ) -> None:
        self.send(Begun(helpers, host_pid_count, headroom))

    def processes_started(self, manager_pid: int, worker_pids: tuple[int, ...]) -> None:
        self.send(ProcessesStarted(manager_pid, worker_pids))

    def job_finished(self, report: JobReport) -> None:
        self.send(JobFinished(report))

    def failing(self, reason: str, detail: str) -> None:
        self.send(Failing(reason, detail))
