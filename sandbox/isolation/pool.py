"""The isolated runner: every job's computation runs in its own bubblewrap sandbox.

A sandboxed process (its command line: ``sandbox.isolation.bwrap``) sees a read-only view of the
system's shared libraries, Python and its packages, and Veil's ``analytics`` package and
``sandbox/isolation/child.py`` — nothing else of the host: no data directory, database, key
server files or any tenant's objects.  It runs as an unprivileged uid with no
capabilities and a seccomp filter (``sandbox.isolation.seccomp``), has no network (new network,
PID, IPC, UTS and cgroup namespaces), a fresh session, an empty environment, and a
private ``/tmp`` in memory (``job_tmpfs_mb``).  Limits come from settings: address
space, CPU time, processes (``job_memory_mb``, ``job_cpu_s``, ``job_processes``), set
with ``prlimit`` before bubblewrap starts, and wall-clock time (``job_wall_s``),
enforced here by killing the sandbox.

While a job runs, its process may ask the parent questions (``{"type": "request"}``
messages; tier 5's DP helpers): ``run``'s ``on_request`` answers each on the process's
stdin, so that what must be trusted — the DP mechanism and its record of released
values — stays outside the process that runs the provider's code.

The decrypted dataset is sent over a pipe, never written to disk, and dies with
the process, which handles one job and exits.  A spare process is started ahead
(``SandboxPool``) so that a job does not wait for Python and its libraries to
import; it holds no data until a job is handed to it.

There is no fallback: without bubblewrap, jobs fail (closed), they never run
unsandboxed.  Design and figures: ``docs/isolation.md``.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import io
import json
import logging
import os
import pickle
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Final, Protocol, cast

from sandbox.config.settings import Settings
from sandbox.isolation import child
from sandbox.isolation.bwrap import Limits, SandboxUnavailable, sandbox_command, seccomp_pipe
from sandbox.isolation.child import CHUNK, Task
from sandbox.isolation.namespace import SandboxInit

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

log = logging.getLogger(__name__)

#: Most bytes of the child's stderr kept (for debugging; never shown to providers).
STDERR_TAIL: Final = 64 * 1024
#: How often the parent looks at the clock and the cancel flag while a job runs.
POLL_S: Final = 0.25
#: Most questions one job process may ask the parent (tier 5: DP helper calls).
MAX_REQUESTS: Final = 1000

#: Answers a job process's question (a JSON object) with a JSON object.
RequestHandler = Callable[[dict[str, Any]], dict[str, Any]]


class DataStream(Protocol):
    """A job's data produced as it is sent (a stored object decrypted chunk by chunk,
    ``sandbox.data.objects.Decrypting``), so that the parent never holds it whole."""

    @property
    def size(self) -> int:
        """At most this many bytes are written (the child makes room for them)."""
        ...

    def write_to(self, out: BinaryIO) -> None:
        """Write the data to ``out``; raise if it cannot all be produced, authentic."""
        ...


class _Frames(io.RawIOBase):
    """What is written, sent on as the child's data frames (at most ``CHUNK`` bytes each)."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self.broken = False  # the child stopped reading: it died, and says why itself

    def writable(self) -> bool:
        return True

    def write(self, data: ReadableBuffer, /) -> int:
        view = memoryview(data).cast("B")
        try:
            for start in range(0, len(view), CHUNK):
                child.write_frame(self._out, view[start : start + CHUNK])
        except (OSError, ValueError):  # a broken pipe, or stdin closed by kill()
            self.broken = True
            raise
        return len(view)


class SandboxError(Exception):
    """The sandboxed computation produced no result; ``reason`` says why (for the job)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SandboxCancelled(SandboxError):
    """``should_stop`` asked to stop; the sandbox was killed."""


@dataclass(frozen=True)
class ChildResult:
    """The child's result message (JSON, untrusted) and its binary attachments."""

    message: dict[str, Any]
    blobs: tuple[bytes, ...]


class _ChildFailed(Exception):
    """The job process reported an error or died; a warm worker itself may live on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SandboxProcess:
    """One started sandbox: single-use, or (``reusable``) a warm worker that forks a fresh
    process for each task and stays up while they end cleanly.

    ``argv`` (``sandbox_command``) has bubblewrap report the sandbox's init on
    ``init.info_fd``; ``kill`` kills the sandbox through it."""

    def __init__(
        self,
        argv: list[str],
        limits: Limits,
        init: SandboxInit,
        reusable: bool = False,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        self.limits = limits
        self.reusable = reusable
        self._exit_seen = False
        self._unsettled = False  # a warm worker's job process answered; its end not yet seen
        self._data_failed: Exception | None = None  # the last run's DataStream raised this
        self.started = time.monotonic()
        self._init = init
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - our own fixed command line
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                pass_fds=(*pass_fds, init.info_fd),
            )
        except BaseException:
            init.close()
            raise
        init.started()
        assert self._proc.stdin is not None
        with contextlib.suppress(OSError):  # a pipe as large as a frame: fewer turns per MiB
            fcntl.fcntl(self._proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)
        self._buffer = bytearray()  # bytes read from the child, not yet parsed
        self._writer: threading.Thread | None = None  # sends the task and data
        self._on_request: RequestHandler | None = None
        self._requests = 0
        self.ready = False  # the child said it has imported its libraries
        self._stderr: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    @property
    def stderr_tail(self) -> str:
        return b"".join(self._stderr).decode(errors="replace")

    def _read_stderr(self) -> None:
        assert self._proc.stderr is not None
        for line in iter(self._proc.stderr.readline, b""):
            self._stderr.append(line)
            self._stderr_size += len(line)
            while self._stderr_size > STDERR_TAIL and len(self._stderr) > 1:
                self._stderr_size -= len(self._stderr.popleft())

    def kill(self) -> None:
        """Kill the sandbox, every process of it, and wait for its end."""
        self._stop()
        self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # data left unsent in stdin's buffer
                    stream.close()
        self._drain.join(5)

    def _stop(self) -> None:
        """SIGKILL the sandbox: its PID namespace's init, which ends every process of the
        namespace (returning once they are gone), then bubblewrap's process group."""
        self._init.kill()
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # it may just have ended
                os.killpg(self._proc.pid, signal.SIGKILL)

    def _pump(self, selector: selectors.BaseSelector) -> bool:
        """Add what the child sends within ``POLL_S`` to the buffer; False at its end."""
        if selector.select(POLL_S):
            assert self._proc.stdout is not None
            chunk = os.read(self._proc.stdout.fileno(), CHUNK)
            if not chunk:
                return False
            self._buffer += chunk
        return True

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the child has imported its libraries (benchmarks use this)."""
        stdout = self._proc.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while not self.ready and time.monotonic() < deadline:
                message = _next_message(self._buffer)
                if message is not None:
                    self.ready = self.ready or message.get("type") == "ready"
                elif not self._pump(selector):
                    return False
        return self.ready

    def run(
        self,
        task: Task,
        data: bytes | DataStream,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        on_request: RequestHandler | None = None,
    ) -> ChildResult:
        """Send ``task`` and its Parquet ``data``; wait for the result; always kill after.

        ``data`` may be a :class:`DataStream`, produced while it is sent.  If it fails (a
        stored object that does not authenticate, the key server gone), its end is never
        sent, so the job process never computes on part of it: the sandbox is killed and
        the stream's error is raised here.

        ``on_request`` answers the process's questions while it runs (without it, a
        question is a malformed message).  Raises SandboxError (with a reason for the job)
        when the child fails, breaks a limit or cannot be reached; SandboxCancelled when
        ``should_stop`` said so.  A warm worker's job process that answered is waited for
        by ``finish`` (the job worker calls it once the result is released), or else by
        the next ``run``: its exit is not part of the job's latency.
        """
        self.finish()
        self._exit_seen = False
        self._data_failed = None
        healthy = later = False
        keep_open = self.reusable or on_request is not None
        try:
            writer = threading.Thread(target=self._send, args=(task, data, keep_open), daemon=True)
            writer.start()
            self._writer, self._on_request, self._requests = writer, on_request, 0
            result = self._receive(on_progress, should_stop)
            writer.join()
            self._raise_data_failed()
            healthy = later = self.reusable
            return result
        except _ChildFailed as failed:
            writer.join(5)
            self._raise_data_failed()
            healthy = True
            raise SandboxError(failed.reason) from None
        except SandboxError:
            self._raise_data_failed()  # set before the kill that ended the receiving
            raise
        finally:
            if later:
                self._unsettled = True
            elif not (self.reusable and healthy and self._settle()):
                self.kill()

    def finish(self) -> None:
        """Wait for the end of the job process that answered the last ``run`` (a warm
        worker); kill the whole sandbox if it does not end cleanly (``take`` then starts
        another).  Nothing to do for a single-use sandbox: ``run`` killed it."""
        if self._unsettled:
            self._unsettled = False
            if not self._settle():
                self.kill()

    def _settle(self) -> bool:
        """A warm worker after a task: wait for its job process's end; True if it is up."""
        stdout = self._proc.stdout
        assert stdout is not None
        deadline = time.monotonic() + 30
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while not self._exit_seen:
                message = _next_message(self._buffer)
                if message is not None:
                    self._exit_seen = message.get("type") == "exit"
                    continue
                if time.monotonic() > deadline or not self.alive:
                    return False
                if not self._pump(selector):
                    return False
        return self.alive

    def _raise_data_failed(self) -> None:
        if self._data_failed is not None:
            raise self._data_failed

    def _send(self, task: Task, data: bytes | DataStream, keep_open: bool) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            try:
                size = len(data) if isinstance(data, bytes) else data.size
            except Exception as exc:  # e.g. the stored object is missing
                self._fail_data(exc, stdin)
                return
            child.write_frame(stdin, pickle.dumps(replace(task, data_size=size)))
            if isinstance(data, bytes):
                view = memoryview(data)
                for start in range(0, len(view), CHUNK):
                    child.write_frame(stdin, view[start : start + CHUNK])
            elif not self._stream(data, stdin):
                return
            child.write_frame(stdin, b"")
            stdin.flush()
            if not keep_open:
                stdin.close()
        except (BrokenPipeError, ValueError, OSError):
            pass  # the child died; _receive reports why

    def _stream(self, data: DataStream, stdin: IO[bytes]) -> bool:
        """Send ``data`` as it is produced; False (the sandbox killed, the error kept for
        ``run``) if producing it failed."""
        frames = _Frames(stdin)
        try:
            data.write_to(cast(BinaryIO, frames))
        except Exception as exc:
            if frames.broken:
                raise  # the child died first: it says why (_send ignores the broken pipe)
            self._fail_data(exc, stdin)
            return False
        return True

    def _fail_data(self, exc: Exception, stdin: IO[bytes]) -> None:
        """The data could not be produced: keep ``exc`` for ``run``, send no end frame, and
        stop the sandbox."""
        self._data_failed = exc
        self._stop()
        # Should the job process outlive that (no init reported), its stdin closed without
        # the end frame, it stops reading, never computing.
        with contextlib.suppress(OSError, ValueError):
            stdin.close()

    def _answer(self, message: dict[str, Any], deadline: float) -> None:
        """Answer one question of the job process on its stdin (``on_request``)."""
        if self._on_request is None:
            raise SandboxError("the job's process sent a malformed result")
        self._requests += 1
        if self._requests > MAX_REQUESTS:
            raise SandboxError(
                f"the job asked more than {MAX_REQUESTS} questions of Veil (DP helper calls) "
                "and was stopped; compute fewer statistics per run"
            )
        if self._writer is not None:
            self._writer.join()  # the task and data went first
        payload = json.dumps(self._on_request(message)).encode()
        stdin = self._proc.stdin
        assert stdin is not None
        frame = len(payload).to_bytes(4, "big") + payload
        fd = stdin.fileno()
        os.set_blocking(fd, False)  # a process that does not read must not stall the parent
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(fd, selectors.EVENT_WRITE)
                while frame:
                    if time.monotonic() > deadline:
                        raise SandboxError(self._wall_reason())
                    if not selector.select(POLL_S):
                        continue
                    try:
                        frame = frame[os.write(fd, frame) :]
                    except BlockingIOError:
                        continue
                    except OSError:
                        raise SandboxError(self._exit_reason()) from None
        finally:
            os.set_blocking(fd, True)

    def _receive(
        self,
        on_progress: Callable[[dict[str, Any]], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> ChildResult:
        stdout = self._proc.stdout
        assert stdout is not None
        buffer = self._buffer
        deadline = time.monotonic() + self.limits.wall_s
        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while True:
                message = _next_message(buffer)
                if message is not None:
                    kind = message.get("type")
                    if kind == "ready":
                        continue
                    if kind == "progress":
                        if on_progress is not None:
                            on_progress(message)
                        continue
                    if kind == "request":
                        self._answer(message, deadline)
                        continue
                    if kind == "result":
                        blobs = self._blobs(buffer, selector, message, deadline)
                        return ChildResult(message, blobs)
                    if kind == "exit":  # the job process died without answering
                        self._exit_seen = True
                        raise _ChildFailed(self._status_reason(message.get("status")))
                    if kind == "error":
                        raise _ChildFailed(self._error_reason(message))
                    raise SandboxError("the job's process sent a malformed result")
                if should_stop is not None and should_stop():
                    raise SandboxCancelled("cancelled")
                if time.monotonic() > deadline:
                    raise SandboxError(self._wall_reason())
                if not self._pump(selector):
                    raise SandboxError(self._exit_reason())

    def _wall_reason(self) -> str:
        return (
            f"the job ran longer than its wall-clock limit of {self.limits.wall_s:g} s "
            "(VEIL_JOB_WALL_S) and was stopped"
        )

    def _blobs(
        self,
        buffer: bytearray,
        selector: selectors.BaseSelector,
        message: dict[str, Any],
        deadline: float,
    ) -> tuple[bytes, ...]:
        count = message.get("blobs", 0)
        if not isinstance(count, int) or not 0 <= count <= 64:
            raise SandboxError("the job's process sent a malformed result")
        blobs: list[bytes] = []
        while len(blobs) < count:
            blob = _next_frame(buffer)
            if blob is not None:
                blobs.append(blob)
                continue
            if time.monotonic() > deadline:
                raise SandboxError("the job ran longer than its wall-clock limit")
            if not self._pump(selector):
                raise SandboxError(self._exit_reason())
        return tuple(blobs)

    def _error_reason(self, message: dict[str, Any]) -> str:
        error, text = message.get("error"), message.get("message")
        if error == "MemoryError":
            return self._memory_reason()
        if error in child._SAFE_MESSAGES and isinstance(text, str):
            return text
        log.debug("sandboxed job failed: %s; stderr: %s", error, self.stderr_tail)
        return "internal error while computing the result"

    def _memory_reason(self) -> str:
        return (
            f"the job exceeded its memory limit of {self.limits.memory_mb} MiB "
            "(VEIL_JOB_MEMORY_MB) and was stopped"
        )

    def _exit_reason(self) -> str:
        return self._status_reason(self._proc.wait())

    def _status_reason(self, code: object) -> str:
        # SIGXCPU at the soft CPU limit; SIGKILL at the hard one, 5 s later.
        killed = code in (-signal.SIGKILL, 128 + signal.SIGKILL)
        if code in (-signal.SIGXCPU, 128 + signal.SIGXCPU) or (
            killed and time.monotonic() - self.started >= self.limits.cpu_s
        ):
            return (
                f"the job exceeded its CPU-time limit of {self.limits.cpu_s} s "
                "(VEIL_JOB_CPU_S) and was stopped"
            )
        if any(sign in self.stderr_tail for sign in _OUT_OF_MEMORY):
            return self._memory_reason()
        log.debug("sandboxed job exited with %s; stderr: %s", code, self.stderr_tail)
        return f"the job's sandboxed process ended without a result (exit status {code})"


#: What a process that ran out of memory leaves on stderr (Python, C++, Rust).
_OUT_OF_MEMORY: Final = ("MemoryError", "std::bad_alloc", "memory allocation of")


def _next_frame(buffer: bytearray) -> bytes | None:
    if len(buffer) < 4:
        return None
    length = int.from_bytes(buffer[:4], "big")
    if length > child.MAX_FRAME:
        raise SandboxError("the job's process sent a malformed result")
    if len(buffer) < 4 + length:
        return None
    frame = bytes(buffer[4 : 4 + length])
    del buffer[: 4 + length]
    return frame


def _next_message(buffer: bytearray) -> dict[str, Any] | None:
    frame = _next_frame(buffer)
    if frame is None:
        return None
    try:
        message = json.loads(frame)
    except ValueError:
        raise SandboxError("the job's process sent a malformed result") from None
    if not isinstance(message, dict):
        raise SandboxError("the job's process sent a malformed result")
    return message


class SandboxPool:
    """Hands out sandboxes for jobs.

    ``reusable``: one warm worker (started with ``--serve``) that forks a fresh process
    per job — for the built-in job kinds, whose code is Veil's; it is replaced whenever a
    job does not end cleanly (limit, cancel, crash).  Otherwise single-use sandboxes,
    with one spare started ahead when ``warm`` — for code that is not Veil's (tier 5).
    ``code``: sandboxes for tier 5 only, which import PySyft ahead (a spare is then ready
    to run the provider's code at once; it is still used for one job only).
    Sandboxes are started from the thread that takes them (bubblewrap's
    ``--die-with-parent`` follows the starting thread): the job worker's.
    """

    def __init__(
        self,
        settings: Settings,
        entry: Path | None = None,
        warm: bool = True,
        reusable: bool = False,
        code: bool = False,
    ) -> None:
        self.limits = Limits.from_settings(settings)
        self.entry = entry
        self.warm = warm
        self.reusable = reusable
        self.code = code
        self._spare: SandboxProcess | None = None
        self._lock = threading.Lock()

    def _start(self) -> SandboxProcess:
        init = SandboxInit()
        try:
            with seccomp_pipe() as filter_fd:
                argv = sandbox_command(
                    self.limits,
                    filter_fd,
                    init.info_fd,
                    self.entry,
                    serve=self.reusable,
                    code=self.code,
                )
                return SandboxProcess(
                    argv, self.limits, init, reusable=self.reusable, pass_fds=(filter_fd,)
                )
        except SandboxUnavailable as exc:
            init.close()
            raise SandboxError(str(exc)) from None
        except BaseException:
            init.close()
            raise

    def take(self) -> SandboxProcess:
        """A started sandbox: the warm worker, or the spare if it is alive."""
        with self._lock:
            spare = self._spare
            if not self.reusable:
                self._spare = None
        if spare is None or not spare.alive:
            if spare is not None:
                spare.kill()
            spare = self._start()
            if self.reusable:
                with self._lock:
                    self._spare = spare
        if self.warm and not self.reusable:
            with self._lock:
                self._spare = self._start()
        return spare

    def prepare(self) -> None:
        """Start the worker or spare now (call from the thread that will take it)."""
        if self.warm or self.reusable:
            with self._lock:
                if self._spare is None:
                    self._spare = self._start()

    def close(self) -> None:
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None:
            spare.kill()
