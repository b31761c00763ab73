"""The runner's pipe protocol: every event and the command survive encode/decode unchanged,
framing splits and joins lines wherever the pipe cuts them, and what is not an event is one
ProtocolError naming what was wrong."""

from __future__ import annotations

import io
import typing

import pytest

from pqd.probe import ProbeConfig
from pqd.results import HelperProcess, StuckProcess
from pqd.runner import events
from pqd.runner.events import (
    Begun,
    Failing,
    Finished,
    JobFinished,
    LineReader,
    ProcessesStarted,
    ProtocolError,
    Ready,
    RunCycle,
)
from tests.helpers.factories import seed_jobs, seed_shaped_result, tight_headroom

JOBS = seed_jobs()
FAILED = seed_shaped_result(
    success=False,
    reason="timeout",
    detail="jobs unfinished after 5s; pqd killed the tree",
    jobs=JOBS[:3],
    helpers_started=(HelperProcess(pid=41, role="forkserver"),),
    leaked_pids=(77, 78),
    stuck=(
        StuckProcess(pid=43, role="pool worker 1", state="T", wchan="do_signal_stop", stack=None),
    ),
)

EVERY_EVENT: tuple[events.Event, ...] = (
    Ready(pid=4242),
    Begun(host_pid_count=91, helpers={41: "forkserver", 42: "resource tracker"}),
    Begun(host_pid_count=91, helpers={}),
    Begun(host_pid_count=91, helpers={}, headroom=tight_headroom()),
    ProcessesStarted(manager_pid=43, worker_pids=(44, 45, 46, 47)),
    JobFinished(report=JOBS[0]),
    JobFinished(report=JOBS[1]),
    Failing(reason="worker_died", detail="pool worker pid 44 exited (exit code -9)"),
    Finished(result=seed_shaped_result(jobs=JOBS)),
    Finished(result=FAILED),
)


def test_every_event_type_has_a_round_trip_case() -> None:
    assert {type(event) for event in EVERY_EVENT} == set(typing.get_args(events.Event))


@pytest.mark.parametrize("event", EVERY_EVENT, ids=lambda e: type(e).__name__)
def test_an_event_survives_encode_and_decode(event: events.Event) -> None:
    line = events.encode(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert events.decode(line) == event
    assert events.decode(line.decode()) == event


def test_the_wire_names_are_the_documented_ones() -> None:
    # docs/design.md §1a names them; the daemon's tests and old runners read these words.
    names = [events.encode(e).split(b'"event":"')[1].split(b'"')[0] for e in EVERY_EVENT]
    assert sorted(set(names)) == [
        b"begun",
        b"failing",
        b"job",
        b"processes",
        b"ready",
        b"result",
    ]


def test_the_command_survives_encode_and_decode() -> None:
    command = RunCycle(ProbeConfig(name="loader", workers=2, start_method="spawn"), "c-9")
    assert events.decode_command(events.encode_command(command)) == command


def test_the_writer_is_a_cycle_observer_writing_what_the_reader_reads() -> None:
    out = io.BytesIO()
    writer = events.EventWriter(out)
    writer.send(Ready(7))
    writer.begun(91, {41: "forkserver"})
    writer.processes_started(43, (44, 45))
    writer.job_finished(JOBS[0])
    writer.failing("job_error", "consumer job of round 3 raised EOFError")
    expected = [
        Ready(7),
        Begun({41: "forkserver"}, 91),
        ProcessesStarted(43, (44, 45)),
        JobFinished(JOBS[0]),
        Failing("job_error", "consumer job of round 3 raised EOFError"),
    ]
    assert LineReader().feed(out.getvalue()) == expected


def test_the_reader_joins_lines_the_pipe_cut_anywhere() -> None:
    stream = b"".join(events.encode(e) for e in EVERY_EVENT)
    for cut in (1, 7, 100, 4096):
        reader = LineReader()
        got: list[events.Event] = []
        for start in range(0, len(stream), cut):
            got += reader.feed(stream[start : start + cut])
        assert got == list(EVERY_EVENT), cut


BAD_LINES = [
    (b"not json\n", "malformed event: JSONDecodeError"),
    (b"[1, 2]\n", "an event is a JSON object, not list"),
    (b'{"event": "hello"}\n', "unknown event 'hello'"),
    (b'{"pid": 3}\n', "unknown event 'None'"),
    (b'{"event": "ready"}\n', "malformed event: KeyError: 'pid'"),
    (b'{"event": "ready", "pid": "x"}\n', "malformed event: ValueError"),
    (b'{"event": "processes", "manager": 1, "workers": 5}\n', "malformed event: TypeError"),
    (b'{"event": "job", "report": {"kind": "producer"}}\n', "malformed event: KeyError: 'items'"),
    (b'{"event": "result", "result": []}\n', "malformed event: "),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_what_is_not_an_event_is_one_protocol_error(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        LineReader().feed(line)
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


def test_an_unfinished_line_past_the_bound_is_refused() -> None:
    reader = LineReader(max_bytes=64)
    assert reader.feed(b'{"event":"ready",') == []
    with pytest.raises(ProtocolError, match="more than 64 bytes in one event"):
        reader.feed(b" " * 64)


BAD_COMMANDS = [
    (b"x" * (events.MAX_COMMAND_BYTES + 1), "command longer than 65536 bytes"),
    (b"{}\n", "malformed command: KeyError: 'cycle'"),
    (b'{"cycle": {"colour": 1}, "cycle_id": "c"}\n', "malformed command: TypeError"),
    (b"\xff\n", "malformed command: "),
]


@pytest.mark.parametrize(("line", "message"), BAD_COMMANDS)
def test_what_is_not_a_command_is_one_protocol_error(line: bytes, message: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        events.decode_command(line)
    assert str(caught.value).startswith(message)
