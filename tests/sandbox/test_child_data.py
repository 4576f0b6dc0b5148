"""A job's data on its way into the job process: as the parent frames it, into memory or
straight into a file in the job's tmpfs, never more than announced, never half a stream."""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import pytest

from analytics import dp_scratch
from sandbox.isolation.child import CHUNK, Incoming, ProtocolError, Task, read_frame, write_frame


def framed(data: bytes, *, end: bool = True) -> io.BytesIO:
    """``data`` as the parent sends it after the task (``SandboxProcess._send``)."""
    wire = io.BytesIO()
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        write_frame(wire, view[start : start + CHUNK])
    if end:
        write_frame(wire, b"")
    wire.seek(0)
    return io.BufferedReader(wire)  # type: ignore[arg-type]


def written(incoming: Incoming, directory: Path) -> bytes | None:
    """What the job's file held once its data was in (None: no file was written)."""
    with dp_scratch.scratch_file(directory, incoming.size, incoming.write_to) as path:
        return None if path is None else path.read_bytes()


DATA = os.urandom(CHUNK) + os.urandom(CHUNK // 3)  # a whole frame and a part


def test_the_data_is_read_or_written_to_a_file_exactly_as_sent(memory_dir: Path) -> None:
    assert Incoming(framed(DATA), len(DATA)).read() == DATA
    assert written(Incoming(framed(DATA), len(DATA)), memory_dir) == DATA
    assert list(memory_dir.iterdir()) == []  # gone after the query


def test_more_data_than_announced_is_refused_and_nothing_is_left(memory_dir: Path) -> None:
    incoming = Incoming(framed(DATA), len(DATA) - 1)
    with pytest.raises(ProtocolError, match="announced"):
        written(incoming, memory_dir)
    assert list(memory_dir.iterdir()) == []


def test_a_stream_that_ends_early_is_never_taken_for_the_data(memory_dir: Path) -> None:
    cut = framed(DATA, end=False).read()[: CHUNK + 100]  # inside the second frame
    for stream in (io.BytesIO(cut), io.BytesIO(framed(DATA, end=False).read())):
        incoming = Incoming(stream, len(DATA))
        with pytest.raises(ProtocolError, match="ended"):
            written(incoming, memory_dir)
    assert list(memory_dir.iterdir()) == []
    with pytest.raises(ProtocolError):
        Incoming(io.BytesIO(cut), len(DATA)).read()


def test_a_frame_larger_than_a_chunk_is_refused(memory_dir: Path) -> None:
    wire = io.BytesIO()
    write_frame(wire, bytes(CHUNK + 1))
    wire.seek(0)
    incoming = Incoming(wire, CHUNK + 1)
    with pytest.raises(ProtocolError, match="exceeds"):
        written(incoming, memory_dir)


def test_without_room_in_memory_the_file_is_not_written_and_the_data_stays_readable() -> None:
    on_disk = Path(__file__).resolve().parent  # the checkout: a disk, not a tmpfs
    before = sorted(on_disk.iterdir())
    incoming = Incoming(framed(DATA), len(DATA))
    with dp_scratch.scratch_file(on_disk, incoming.size, incoming.write_to) as path:
        assert path is None
    assert sorted(on_disk.iterdir()) == before
    assert incoming.read() == DATA  # the job then parses it in memory


def test_the_parent_announces_the_size_it_sends() -> None:
    """``SandboxProcess._send`` puts the data's length in the task it pickles."""
    from sandbox.isolation.pool import SandboxProcess

    wire = io.BytesIO()

    class Sent:
        stdin = wire

    process = SandboxProcess.__new__(SandboxProcess)
    process._proc = Sent()  # type: ignore[assignment]
    process._send(Task("query", None, None), DATA, keep_open=True)
    wire.seek(0)
    task = pickle.loads(read_frame(wire))  # noqa: S301 - written just above
    assert task.data_size == len(DATA)
    assert Incoming(wire, task.data_size).read() == DATA


def test_a_stream_that_fails_is_not_ended_and_its_sandbox_is_killed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``DataStream`` failing after all its bytes went out (a stored object whose end does
    not authenticate): no end frame follows, so the job process can never take the bytes
    for its data, and the sandbox is killed at once."""
    from sandbox.isolation import pool

    class Failing:
        size = len(DATA)

        def write_to(self, out: io.RawIOBase) -> None:
            out.write(DATA)
            raise ValueError("the stream's end does not authenticate")

    killed: list[int] = []
    monkeypatch.setattr(pool.os, "killpg", lambda pid, _signal: killed.append(pid))

    class Pipe(io.BytesIO):
        ended = False

        def close(self) -> None:  # what the child would read stays readable here
            self.ended = True

    wire = Pipe()

    class Sent:
        stdin = wire
        pid = 4242

        def poll(self) -> None:
            return None  # still running

    class Init:  # the sandbox's PID namespace's init (``SandboxInit``)
        killed = False

        def kill(self) -> None:
            self.killed = True

    process = pool.SandboxProcess.__new__(pool.SandboxProcess)
    process._proc = Sent()  # type: ignore[assignment]
    process._init = init = Init()  # type: ignore[assignment]
    process._data_failed = None
    process._send(Task("query", None, None), Failing(), keep_open=True)  # type: ignore[arg-type]
    assert init.killed and killed == [4242] and wire.ended  # killed, and its stdin closed
    assert isinstance(process._data_failed, ValueError)
    wire.seek(0)
    assert pickle.loads(read_frame(wire)).data_size == len(DATA)  # noqa: S301 - written above
    with pytest.raises(ProtocolError, match="ended"):
        Incoming(wire, len(DATA)).read()  # every byte, and no end: never the data
