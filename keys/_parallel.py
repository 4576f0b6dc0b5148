"""Chunk work of a large stream on Veil's own worker processes (private).

Used by ``keys._stream`` for formats whose cipher is slow (SM4-GCM runs as portable C
at ~130 MiB/s a core, and ``cryptography`` holds the GIL while it does, so threads
do not help).  The STREAM construction seals every chunk independently, so runs of
chunks can be sealed or opened at once on several cores and written out in order.

A :class:`Pipeline` is a ring of slots in one shared-memory block (``/dev/shm``),
each an input and an output region: the caller fills a slot's input from its source
and submits it with a function that turns input into output; a worker process, which
maps the same block (no chunk goes through a pipe), runs it; the pipeline writes
each slot's output to ``dst`` in submission order, and only once that slot's function
has returned.  A function that raises (a tag that does not verify) stops the
pipeline: neither that slot's output nor any later slot's reaches ``dst``.  Memory
is the ring, fixed by the caller, whatever the length of the stream.

The workers are plain child processes (``python -c``, importing only ``keys``: not
``multiprocessing``, which would re-run the parent's main module in each), started on
first use, kept idle for the next stream (as many as there are cores) and ended
when the parent ends (their input closes).  The data key of a stream goes to them
with each run, over the pipe to each child, and lives in their memory only while
they seal or open that run.
"""

from __future__ import annotations

import atexit
import contextlib
import mmap
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from multiprocessing.shared_memory import SharedMemory
from types import TracebackType
from typing import IO, Any, BinaryIO

_SHM_DIR = "/dev/shm"  # noqa: S108 - where POSIX shared memory lives (Linux), not a temp file
# More processes than this brings little (each slot holds a run of about 1 MiB).
_MAX_WORKERS = 8
# Shared-memory blocks a worker keeps mapped between runs (one per stream in flight).
_MAPPED_LIMIT = 4
_LENGTH = struct.Struct(">I")
_ENV = {"PATH", "LD_LIBRARY_PATH", "PYTHONHOME", "SYSTEMROOT", "TMPDIR", "LANG"}
_ENV_PREFIXES = ("LC_", "OPENSSL_")

RunFunction = Callable[..., int]


class WorkerLost(RuntimeError):
    """A worker process ended or broke its protocol mid-stream (the stream is not written)."""


def worker_count() -> int:
    """How many worker processes a pipeline uses: the cores this process may run on
    (at most 8), or 0 where there is no ``/dev/shm`` to share chunks through."""
    if not os.path.isdir(_SHM_DIR):
        return 0
    affinity = getattr(os, "sched_getaffinity", None)
    cores = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    return min(cores, _MAX_WORKERS)


def _room_for(size: int) -> bool:
    """Whether ``/dev/shm`` has ``size`` bytes to spare, twice over: a mapping that
    outgrows it does not fail cleanly, the process dies (SIGBUS)."""
    fs = os.statvfs(_SHM_DIR)
    return fs.f_bavail * fs.f_frsize >= 2 * size


def _send(pipe: IO[bytes], message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    pipe.write(_LENGTH.pack(len(data)) + data)
    pipe.flush()


def _receive(pipe: IO[bytes]) -> Any:
    header = pipe.read(_LENGTH.size)
    if len(header) != _LENGTH.size:
        raise EOFError
    (size,) = _LENGTH.unpack(header)
    data = pipe.read(size)
    if len(data) != size:
        raise EOFError
    return pickle.loads(data)  # noqa: S301 - from our own parent or child, over a private pipe


class _Worker:
    def __init__(self) -> None:
        # The child finds ``keys`` where this process found it, and nowhere else: ``-P``
        # keeps the working directory off its path.  Of the environment it gets only what
        # the interpreter and OpenSSL read, not this process's tokens and secrets.
        env = {k: v for k, v in os.environ.items() if k in _ENV or k.startswith(_ENV_PREFIXES)}
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._process = subprocess.Popen(
            [sys.executable, "-P", "-c", "from keys._parallel import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    def send(self, message: object) -> None:
        assert self._process.stdin is not None
        try:
            _send(self._process.stdin, message)
        except OSError as error:
            raise WorkerLost("a worker process ended") from error

    def receive(self) -> tuple[str, Any]:
        assert self._process.stdout is not None
        try:
            reply: tuple[str, Any] = _receive(self._process.stdout)
        except (OSError, EOFError, pickle.UnpicklingError) as error:
            raise WorkerLost("a worker process ended") from error
        return reply

    def alive(self) -> bool:
        return self._process.poll() is None

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()  # the worker's cue to end
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


_lock = threading.Lock()
_idle: list[_Worker] = []


def _check_out(count: int) -> list[_Worker]:
    with _lock:
        ready = [w for w in _idle[:count] if w.alive()]
        del _idle[:count]
    return ready + [_Worker() for _ in range(count - len(ready))]


def _check_in(workers: list[_Worker]) -> None:
    with _lock:
        for worker in workers:
            if len(_idle) < worker_count():
                _idle.append(worker)
            else:
                worker.close()


@atexit.register
def _close_idle() -> None:
    with _lock:
        for worker in _idle:
            worker.close()
        _idle.clear()


class _Slot:
    def __init__(self, number: int, input_view: memoryview, in_offset: int, out_offset: int):
        self.number = number
        self.input = input_view
        self.in_offset = in_offset
        self.out_offset = out_offset
        self.worker: _Worker | None = None  # the one running it, once submitted


class Pipeline:
    """``slots`` slots of ``in_size`` input and ``out_size`` output bytes, written to ``dst``.

    Use as a context manager: leaving it normally writes every outstanding output in
    order; leaving it by an exception waits for the workers and discards what they made.
    Raises ``OSError`` if no shared memory or worker can be had (the caller stays serial).
    """

    def __init__(self, slots: int, in_size: int, out_size: int, dst: BinaryIO) -> None:
        size = slots * (in_size + out_size)
        if not _room_for(size):
            raise OSError("not enough shared memory for the worker processes' ring")
        self._out_size = out_size
        self._dst = dst
        self._shm = SharedMemory(create=True, size=size)
        buf = self._shm.buf
        assert buf is not None
        self._buf: memoryview = buf
        self._slots = []
        for i in range(slots):
            start = i * (in_size + out_size)
            self._slots.append(_Slot(i, self._buf[start : start + in_size], start, start + in_size))
        try:
            self._workers = _check_out(worker_count())
        except OSError:
            self._release()
            raise
        self._queued = dict.fromkeys(self._workers, 0)
        self._busy: deque[_Slot] = deque()
        self._next = 0
        self.written = 0

    def take(self) -> _Slot:
        """The next slot to fill, in ring order (its earlier output written out first)."""
        slot = self._slots[self._next]
        self._next = (self._next + 1) % len(self._slots)
        while slot in self._busy:
            self._reap_oldest()
        return slot

    def submit(self, slot: _Slot, length: int, fn: RunFunction, *args: Any) -> None:
        """Run ``fn(input[:length], output, *args)`` in a worker; it returns the bytes of output.

        The worker with the fewest runs outstanding gets it: on a shared machine one
        worker may be slowed, and outputs leave in order, so it should not hold up the rest.
        """
        worker = min(self._workers, key=lambda w: self._queued[w])
        self._queued[worker] += 1
        slot.worker = worker
        self._busy.append(slot)
        message = (self._shm.name, slot.in_offset, length, slot.out_offset, self._out_size)
        worker.send((*message, fn, args))

    def _answer(self, slot: _Slot) -> tuple[str, Any]:
        worker = slot.worker
        assert worker is not None
        self._queued[worker] -= 1
        return worker.receive()

    def _reap_oldest(self) -> None:
        slot = self._busy.popleft()
        status, value = self._answer(slot)
        if status != "ok":
            raise value
        with self._buf[slot.out_offset : slot.out_offset + value] as output:
            self._dst.write(output)
        self.written += value

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if kind is None:
                while self._busy:
                    self._reap_oldest()
        finally:
            # The workers may still be using the block: hear from each before it goes.
            # (Interrupted mid-reply, or one lost, they are out of step: end them all.)
            healthy = kind is None or (
                issubclass(kind, Exception) and not issubclass(kind, WorkerLost)
            )
            while healthy and self._busy:
                try:
                    self._answer(self._busy.popleft())
                except WorkerLost:
                    healthy = False
            self._busy.clear()
            if healthy:
                _check_in(self._workers)
            else:
                for worker in self._workers:
                    worker.close()
            self._release()

    def _release(self) -> None:
        for slot in self._slots:
            slot.input.release()
        self._shm.unlink()
        # A view still held somewhere (BufferError): the mapping goes when that view does.
        with contextlib.suppress(BufferError):
            self._shm.close()


def serve() -> None:
    """A worker process's loop: run each slot it is sent, answer in order, end on EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle
    requests = sys.stdin.buffer
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not corrupt the replies
    mapped: OrderedDict[str, mmap.mmap] = OrderedDict()
    while True:
        try:
            name, in_offset, length, out_offset, out_size, fn, args = _receive(requests)
        except EOFError:
            return
        try:
            block = _map(mapped, name)
            with memoryview(block) as buf:
                data = buf[in_offset : in_offset + length]
                out = buf[out_offset : out_offset + out_size]
                try:
                    reply: tuple[str, Any] = ("ok", fn(data, out, *args))
                finally:
                    data.release()
                    out.release()
        except Exception as error:  # the parent raises it
            reply = ("error", error)
        try:
            _send(replies, reply)
        except (pickle.PicklingError, TypeError, AttributeError):
            _send(replies, ("error", RuntimeError(repr(reply[1]))))


def _map(mapped: OrderedDict[str, mmap.mmap], name: str) -> mmap.mmap:
    """The block ``name``, mapped once and kept for the stream's later runs."""
    block = mapped.get(name)
    if block is None:
        fd = os.open(os.path.join(_SHM_DIR, name), os.O_RDWR)
        try:
            block = mapped[name] = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)
        while len(mapped) > _MAPPED_LIMIT:
            mapped.popitem(last=False)[1].close()
    mapped.move_to_end(name)
    return block
