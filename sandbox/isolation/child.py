"""The job process inside the sandbox: read one task and its data, compute, answer.

This file is bound read-only into the bubblewrap sandbox together with the
``analytics`` package, and nothing else of Veil: it imports only the standard
library and ``analytics``.  It is also imported by the parent (``sandbox.isolation.pool``)
for the message framing and the task type, so the two sides cannot drift apart.

Protocol, over the child's stdin and stdout (both pipes to the parent):

* every message is a *frame*: 4 bytes of big-endian length, then the payload;
* parent → child: one frame with the pickled ``Task`` (the parent is the more
  trusted side, so pickle is safe in this direction only; its ``data_size`` says how
  many bytes follow), then the dataset's plaintext Parquet bytes as frames of at most
  ``CHUNK`` bytes, then an empty frame;
* child → parent: JSON frames only (never pickle: the parent must not trust what
  the sandbox says): ``{"type": "ready"}`` once its libraries are imported,
  ``{"type": "progress", ...}`` any number of times, then one
  ``{"type": "result", "result": ..., "details": ..., "blobs": n}`` followed by
  ``n`` raw frames (model weights), or one
  ``{"type": "error", "error": <exception type>, "message": <safe text>}``.

Before reading, the child moves its stdout to a private descriptor and points
descriptor 1 at stderr, so nothing a library prints can corrupt the protocol.
A process handles exactly one task and exits: nothing of one job's data survives
into another's.  Started with ``--serve``, the process is a warm worker that forks
one such process per task (``_serve``); without it, it is that process itself.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import struct
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from i18n import Msg

CHUNK: Final = 1 << 20
_LENGTH = struct.Struct(">I")
#: A frame larger than this is refused (a broken or hostile peer).
MAX_FRAME: Final = 1 << 30


class ProtocolError(Exception):
    """The other side sent something that is not a well-formed frame."""


def write_frame(stream: IO[bytes], payload: bytes | memoryview) -> None:
    stream.write(_LENGTH.pack(len(payload)))
    stream.write(payload)


def read_frame(stream: IO[bytes], limit: int = MAX_FRAME) -> bytes:
    return _read_exactly(stream, _frame_length(stream, limit))


def _frame_length(stream: IO[bytes], limit: int) -> int:
    (length,) = _LENGTH.unpack(_read_exactly(stream, _LENGTH.size))
    if length > limit:
        raise ProtocolError(f"frame of {length} bytes exceeds the limit of {limit}")
    return int(length)


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    parts, left = [], size
    while left:
        part = stream.read(left)
        if not part:
            raise ProtocolError("the stream ended inside a frame")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _read_into(stream: IO[bytes], view: memoryview) -> None:
    filled = 0
    while filled < len(view):
        got = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not got:
            raise ProtocolError("the stream ended inside a frame")
        filled += got


@dataclass(frozen=True)
class Task:
    """What the parent asks of one sandboxed process (analytics objects, already checked)."""

    kind: str  # "table" (2), "query" / "kpi" (3), "training" (4), "syft" / "syft-mock" (5)
    schema: Any  # analytics.schema.DatasetSchema
    query: Any  # TableQuery, PrivateQuery or TrainingSpec
    epsilon: float = 0.0
    delta: float = 0.0
    rows_public: int = 0
    min_count: int = 10
    cell_secret: bytes = field(default=b"", repr=False)  # tier 2: the dataset's cell-key secret
    secure_mode: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    data_size: int = 0  # the bytes of Parquet that follow (set by the parent as it sends them)


class _Channel:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def send(self, message: dict[str, Any], blobs: tuple[bytes, ...] = ()) -> None:
        write_frame(self.out, json.dumps(message).encode())
        for blob in blobs:
            write_frame(self.out, blob)
        self.out.flush()


def _read_data(stream: IO[bytes]) -> bytes:
    buffer = io.BytesIO()
    while chunk := read_frame(stream, CHUNK):
        buffer.write(chunk)
    return buffer.getvalue()


class Incoming:
    """The job's Parquet as the parent sends it after the task (frames of at most ``CHUNK``
    bytes, then an empty frame), taken once: into memory (``read``), or written into a
    file as it arrives (``write_to``), so that a private query holds no copy of the rows
    in its own memory besides the file in its tmpfs that OpenDP scans."""

    def __init__(self, stream: IO[bytes], size: int) -> None:
        self._stream = stream
        self.size = size

    def read(self) -> bytes:
        return _read_data(self._stream)

    def write_to(self, out: IO[bytes]) -> None:
        view, written = memoryview(bytearray(CHUNK)), 0
        while length := _frame_length(self._stream, CHUNK):
            written += length
            if written > self.size:  # never more than the room the file was given
                raise ProtocolError(f"more than the {self.size} bytes of data announced")
            _read_into(self._stream, view[:length])
            out.write(view[:length])


def compute(task: Task, data: Incoming, channel: _Channel, stdin: IO[bytes] | None = None) -> None:
    """Run ``task`` on its Parquet ``data``; send its result (or raise).  ``stdin`` carries
    the parent's answers to the process's questions (tier 5's DP helper calls).  Every kind
    takes all of ``data`` before anything else is read from ``stdin``.

    ``task.kind`` names the function (``_COMPUTE``); the parent's job kind chose it
    (``sandbox.jobs.kinds``, which this process cannot import).
    """
    run = _COMPUTE.get(task.kind)
    if run is None:
        raise ValueError(f"unknown task kind {task.kind!r}")
    run(task, data, channel, stdin)


def _frame(data: bytes) -> Any:
    """The Parquet as a polars frame; None for a mock run (no data)."""
    import polars as pl

    return pl.read_parquet(io.BytesIO(data)) if data else None


def _table(task: Task, data: Incoming, channel: _Channel, stdin: IO[bytes] | None) -> None:
    """Tier 2: the cell-key perturbed, SDC-checked table."""
    from analytics.cellkey import statement
    from analytics.sdc import SdcRules, run_table_query

    frame = _frame(data.read())
    rules = SdcRules(min_count=task.min_count)
    table = run_table_query(frame, task.schema, task.query, rules, secret=task.cell_secret)
    cells = [asdict(c) for c in table.cells]
    suppressed = sum(1 for c in table.cells if c.status != "ok")
    result = {"tier": 2, "cells": cells, "rules": asdict(rules), "perturbation": statement()}
    channel.send(
        {
            "type": "result",
            "result": result,
            "details": {"cells": len(table.cells), "suppressed": suppressed},
            "blobs": 0,
        }
    )


def _training(task: Task, data: Incoming, channel: _Channel, stdin: IO[bytes] | None) -> None:
    """Tier 4: the DP-SGD model, its card, and its weights as the one blob."""
    from analytics.training import train_model

    frame = _frame(data.read())

    def on_epoch(epoch: int, loss: float) -> None:
        channel.send({"type": "progress", "epoch": epoch, "loss": loss})

    model = train_model(
        frame,
        task.schema,
        task.query,
        task.rows_public,
        on_epoch=on_epoch,
        secure_mode=task.secure_mode,
    )
    result = {
        "tier": 4,
        "card": model.card,
        "epsilon": model.epsilon,
        "delta": model.delta,
        "model_format": "safetensors",
    }
    details = {"epsilon_spent": model.epsilon, "delta_spent": model.delta}
    channel.send(
        {"type": "result", "result": result, "details": details, "blobs": 1},
        (model.weights,),
    )


def _code(task: Task, data: Incoming, channel: _Channel, stdin: IO[bytes] | None) -> None:
    """Tier 5 (``syft``, ``syft-mock``): see ``_run_code``."""
    frame = _frame(data.read())
    _run_code(task, frame, channel, stdin or sys.stdin.buffer)


def _private_query(task: Task, data: Incoming, channel: _Channel, stdin: IO[bytes] | None) -> None:
    """Tier 3.  The Parquet goes, as it arrives, to a file in the job's tmpfs, and OpenDP
    scans it there, decoding only the columns the query reads, once per plan
    (``analytics.dp_scratch``)."""
    import polars as pl

    from analytics.dp_scratch import scratch_file
    from analytics.private_query import run_private_query

    scratch = job_scratch(os.getpid())
    scratch.mkdir(exist_ok=True)
    with scratch_file(scratch, data.size, data.write_to) as path:
        source: pl.DataFrame | pl.LazyFrame
        if path is None:  # no room in the tmpfs: parsed into memory (spilled if it fits)
            source, spill = pl.read_parquet(io.BytesIO(data.read())), scratch
        else:
            source, spill = pl.scan_parquet(path, glob=False), None
        release = run_private_query(
            source, task.schema, task.query, task.epsilon, task.delta, scratch=spill
        )
    rows = [
        {
            "group": row.group,
            "values": [
                {
                    "aggregate": v.aggregate,
                    "value": v.value,
                    "noise_scale": v.noise_scale,
                    "ci95": list(v.ci95),
                }
                for v in row.values
            ],
        }
        for row in release.rows
    ]
    result = {
        "tier": 3,
        "rows": rows,
        "epsilon": release.epsilon,
        "delta": release.delta,
        "mechanism": release.mechanism,
    }
    details = {"epsilon_spent": release.epsilon, "delta_spent": release.delta}
    channel.send({"type": "result", "result": result, "details": details, "blobs": 0})


def _release_rows(release: Any, group: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """A private query's released rows as JSON (``group`` overrides each row's group)."""
    return [
        {
            "group": group if group is not None else row.group,
            "values": [
                {
                    "aggregate": v.aggregate,
                    "value": v.value,
                    "noise_scale": v.noise_scale,
                    "ci95": list(v.ci95),
                }
                for v in row.values
            ],
        }
        for row in release.rows
    ]


def _kpi(task: Task, data: Incoming, channel: _Channel, stdin: IO[bytes] | None) -> None:
    """Tier 3, a KPI contract's evaluation: each period's DP statistics (``analytics.kpi``);
    the verdict is computed from them outside, as post-processing."""
    from analytics.kpi import run_kpi
    from analytics.private_query import MECHANISM

    frame = _frame(data.read())
    releases = run_kpi(frame, task.schema, task.query, task.epsilon)
    rows = [r for period, got in releases.items() for r in _release_rows(got, {"period": period})]
    epsilon = sum(got.epsilon for got in releases.values())
    result = {"tier": 3, "kpi": str(task.query.kpi), "rows": rows, "epsilon": epsilon,
              "delta": 0.0, "mechanism": MECHANISM}  # fmt: skip
    details = {"epsilon_spent": epsilon, "delta_spent": 0.0}
    channel.send({"type": "result", "result": result, "details": details, "blobs": 0})


def _run_code(task: Task, frame: Any, channel: _Channel, stdin: IO[bytes]) -> None:
    """Tier 5: run the approved syft function on the granted columns (the only ones this
    process was sent), or on the mock only (``syft-mock``: for the reviewer, and for the
    job's reference run, which never holds private data); send its output encoded.

    On the private data, DP helper calls are answered by the parent (``_ask_parent``),
    which alone computes, charges and records them.  On the mock, they are computed here
    and reported with the output (``dp_calls``): the mock is not private.
    """
    from analytics import syft_dp
    from analytics.mock import mock_frame
    from analytics.syft_code import run_on_mock, run_syft_function, to_pandas, verify_pinned

    code, columns = task.query, list(task.extra["columns"])
    verify_pinned(code, task.extra["approved_sha256"])
    mock_rows = mock_frame(task.schema, task.extra["mock_rows"], 0).select(columns)
    mock = to_pandas(mock_rows)
    calls: list[tuple[Any, float]] = []
    if task.epsilon > 0:  # without a budget there is no veil_dp to import
        if task.kind == "syft-mock":
            service = syft_dp.DpService(syft_dp.DpBudget(task.epsilon, task.schema), mock_rows)
            syft_dp.install(task.schema, service.compute)
            calls = service.calls
        else:
            syft_dp.install(task.schema, _ask_parent(channel, stdin))
    workdir = Path(SANDBOX_TMP) / "syft"
    workdir.mkdir(exist_ok=True)
    if task.kind == "syft-mock":
        value = run_on_mock(code, mock, workdir)
    else:
        value = run_syft_function(code, to_pandas(frame.select(columns)), mock, workdir)
    encoded, blobs = encode_value(value)
    reported = [[call.message(), released] for call, released in calls]
    channel.send(
        {"type": "result", "result": {"tier": 5, "output": encoded}, "details": {},
         "dp_calls": reported, "blobs": len(blobs)},
        tuple(blobs),
    )  # fmt: skip


def _ask_parent(channel: _Channel, stdin: IO[bytes]) -> Any:
    """A DP helper's ``ask`` that sends the call to the parent and waits for its answer."""
    import threading

    from analytics.syft_dp import BudgetExceeded, DpCall, DpError

    lock = threading.Lock()  # PySyft may run the function in a thread of its own

    def ask(call: DpCall) -> float:
        with lock:
            channel.send(call.message())
            try:
                answer = json.loads(read_frame(stdin, 1 << 16))
            except (ProtocolError, ValueError):
                raise DpError(Msg("Veil did not answer the DP helper call")) from None
        value = answer.get("value") if isinstance(answer, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        refusal = answer.get("message") if isinstance(answer, dict) else None
        error = BudgetExceeded if answer.get("error") == "BudgetExceeded" else DpError
        raise error(str(refusal or "Veil refused the DP helper call"))

    return ask


#: What each task kind computes (``Task.kind``, set by the parent's job kind).
_COMPUTE: Final[dict[str, Callable[[Task, Incoming, _Channel, IO[bytes] | None], None]]] = {
    "table": _table,
    "query": _private_query,
    "kpi": _kpi,
    "training": _training,
    "syft": _code,
    "syft-mock": _code,
}


# ---------------------------------------------------------------- tier-5 outputs

SANDBOX_TMP: Final = "/tmp"  # noqa: S108 - the sandbox's private tmpfs
#: Largest pandas/numpy attachment of a tier-5 output (the checks cap far lower).
MAX_BLOB: Final = 16 * 2**20
_MAX_NESTING: Final = 8


class Opaque:
    """Stands for an output part that cannot be transferred; the checks block it."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"Opaque({self.what!r})"


def encode_value(value: Any) -> tuple[Any, list[bytes]]:
    """A tier-5 output as JSON plus attachments, without pickle.

    Primitives stay JSON; containers and special floats become one-key objects
    (``{"$d": [[key, value], ...]}``, ``{"$l": [...]}``, ``{"$t": [...]}``,
    ``{"$f": "nan"}``); pandas frames and series travel as Parquet attachments
    (``{"$frame": i}``, ``{"$series": i, "name": ...}``), numpy arrays as ``.npy``
    without pickle (``{"$array": i}``); anything else as ``{"$x": type name}``.
    """
    blobs: list[bytes] = []
    return _encode(value, blobs, 0), blobs


def _encode(value: Any, blobs: list[bytes], depth: int) -> Any:
    import math

    import numpy as np
    import pandas as pd  # type: ignore[import-untyped]

    if depth > _MAX_NESTING:
        return {"$x": "nested too deeply"}
    if isinstance(value, np.generic) and not isinstance(value, np.object_):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$f": repr(value)}
    if isinstance(value, dict):
        return {"$d": [[_encode(k, blobs, depth + 1), _encode(v, blobs, depth + 1)]
                       for k, v in value.items()]}  # fmt: skip
    if isinstance(value, list | tuple):
        tag = "$l" if isinstance(value, list) else "$t"
        return {tag: [_encode(v, blobs, depth + 1) for v in value]}
    try:
        buffer = io.BytesIO()
        if isinstance(value, pd.DataFrame):
            value.to_parquet(buffer)
            tagged: dict[str, Any] = {"$frame": len(blobs)}
        elif isinstance(value, pd.Series):
            value.to_frame(name="value").to_parquet(buffer)
            tagged = {"$series": len(blobs), "name": _encode(value.name, blobs, depth + 1)}
        elif isinstance(value, np.ndarray):
            np.save(buffer, value, allow_pickle=False)
            tagged = {"$array": len(blobs)}
        else:
            return {"$x": type(value).__name__}
    except Exception:
        return {"$x": type(value).__name__}
    if buffer.tell() > MAX_BLOB:
        return {"$x": "too large"}
    blobs.append(buffer.getvalue())
    return tagged


def decode_value(encoded: Any, blobs: tuple[bytes, ...]) -> Any:
    """The parent's side of ``encode_value`` (for untrusted input: no pickle anywhere)."""
    return _decode(encoded, blobs, 0)


def _decode(encoded: Any, blobs: tuple[bytes, ...], depth: int) -> Any:
    import numpy as np
    import pandas as pd

    if depth > _MAX_NESTING + 1:
        return Opaque("nested too deeply")
    if encoded is None or isinstance(encoded, bool | int | str | float):
        return encoded
    if isinstance(encoded, list) or not isinstance(encoded, dict) or len(encoded) > 2:
        return Opaque("malformed")
    if "$d" in encoded and isinstance(encoded["$d"], list):
        pairs = [p for p in encoded["$d"] if isinstance(p, list) and len(p) == 2]
        keys = [_decode(k, blobs, depth + 1) for k, _ in pairs]
        if any(isinstance(k, list | dict | Opaque) for k in keys):
            return Opaque("a dictionary with unusual keys")
        try:
            return {k: _decode(v, blobs, depth + 1) for k, (_, v) in zip(keys, pairs, strict=True)}
        except TypeError:  # an unhashable key (a tuple holding a list, say)
            return Opaque("a dictionary with unusual keys")
    for tag, kind in (("$l", list), ("$t", tuple)):
        if tag in encoded and isinstance(encoded[tag], list):
            return kind(_decode(v, blobs, depth + 1) for v in encoded[tag])
    if encoded.get("$f") in ("nan", "inf", "-inf"):
        return float(encoded["$f"])
    index = next((encoded[t] for t in ("$frame", "$series", "$array") if t in encoded), None)
    if not isinstance(index, int) or not 0 <= index < len(blobs):
        return Opaque(str(encoded.get("$x", "malformed")))
    try:
        data = io.BytesIO(blobs[index])
        if "$frame" in encoded:
            return pd.read_parquet(data)
        if "$series" in encoded:
            series = pd.read_parquet(data)["value"]
            series.name = _decode(encoded.get("name"), blobs, depth + 1)
            return series
        return np.load(data, allow_pickle=False)
    except Exception:
        return Opaque("an attachment that does not parse")


def _warm_up() -> None:
    """Run a tiny query on made-up rows, so that first-use costs of polars and OpenDP
    are paid before a job arrives (about 60 ms).  Nothing of it is kept or sent."""
    import polars as pl

    from analytics.private_query import run_private_query
    from analytics.query_document import parse_query
    from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema

    schema = DatasetSchema(
        (
            ColumnSpec("k", ColumnType.STRING, ColumnClass.PUBLIC, categories=("a", "b")),
            ColumnSpec("x", ColumnType.FLOAT, ColumnClass.INTERNAL, 0.0, 1.0),
        )
    )
    buffer = io.BytesIO()
    pl.DataFrame({"k": ["a", "b"] * 50, "x": [0.5] * 100}).write_parquet(buffer)
    frame = pl.read_parquet(io.BytesIO(buffer.getvalue()))
    query = parse_query(
        {"aggregates": [{"kind": "count"}, {"kind": "mean", "column": "x"}], "group_by": ["k"]}
    )
    scratch = job_scratch(os.getpid())  # also warms up the scan of a scratch file
    scratch.mkdir(exist_ok=True)
    try:
        run_private_query(frame, schema, query, 1.0, 0.0, scratch=scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


#: Exceptions whose messages are written for users and hold no data values.
_SAFE_MESSAGES: Final = (
    "TrainingError", "QueryError", "SdcQueryError", "CodeError", "DpError", "BudgetExceeded",
)  # fmt: skip


def _one_task(channel: _Channel) -> int:
    """Read one task and its data from stdin, compute, answer; the exit status."""
    try:
        stdin = sys.stdin.buffer
        try:
            head = read_frame(stdin)
        except ProtocolError:
            return EXIT_NO_TASK  # the parent closed the pipe: nothing more to do
        task = pickle.loads(head)  # noqa: S301 - from the parent, the more trusted side
        compute(task, Incoming(stdin, task.data_size), channel, stdin)
        return 0
    except MemoryError:
        channel.send({"type": "error", "error": "MemoryError", "message": "out of memory"})
        return 3
    except Exception as exc:  # the parent decides what reaches the user
        traceback.print_exc()  # stderr: logged by the parent at debug level only
        name = type(exc).__name__
        if "can't allocate memory" in str(exc):  # torch's allocator under the limit
            channel.send({"type": "error", "error": "MemoryError", "message": "out of memory"})
            return 3
        message = str(exc) if name in _SAFE_MESSAGES else "the computation failed"
        channel.send({"type": "error", "error": name, "message": message})
        return 2


def job_scratch(pid: int) -> Path:
    """A job process's directory in the sandbox's private tmpfs (memory), for the rows of a
    private query while OpenDP runs it (``analytics.dp_scratch``)."""
    return Path(SANDBOX_TMP) / f"job-{pid}"


#: A forked job process's status when the parent sent no task (its pipe closed).
EXIT_NO_TASK: Final = 4


def _serve(channel: _Channel, one_task: Callable[[_Channel], int] = _one_task) -> None:
    """The warm worker for built-in job kinds: fork one fresh process per task.

    This process imports the libraries and never reads a task or data itself; each job
    runs in a child forked ahead of it, which exits after answering, so its data dies
    with it.  (Warming the child up while it waits for its task slowed jobs that come
    back to back: measured with bench/runner_bench.py.)  No thread pool is started
    here (polars and torch start theirs on first use, in the child), which keeps
    forking safe.  After each child, ``{"type": "exit", "status"}``
    tells the parent how it ended, then ``ready`` that the next may come.
    ``one_task``: what each forked process runs (the sandbox's tests serve their probe).
    """
    while True:
        channel.send({"type": "ready"})
        pid = os.fork()
        if pid == 0:  # the job process, forked ahead of its task
            status = EXIT_NO_TASK
            try:
                status = one_task(channel)
            finally:
                channel.out.flush()
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        shutil.rmtree(job_scratch(pid), ignore_errors=True)  # what a killed job left behind
        status = os.waitstatus_to_exitcode(wait_status)
        if status == EXIT_NO_TASK:
            return
        channel.send({"type": "exit", "status": status})


def main() -> None:
    # Keep the protocol on a private descriptor; library output goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    channel = _Channel(out)
    # Import the heavy libraries before the task arrives: a warm process answers fast.
    if "--code" in sys.argv[1:]:  # tier 5 (reviewed code) only: PySyft, not torch
        from analytics.syft_code import preload

        preload()
    else:
        import analytics.private_query
        import analytics.sdc
        import analytics.training  # noqa: F401
        from analytics.dp_run import preload

        preload()  # what OpenDP would import in every job process on its first release

    if "--serve" in sys.argv[1:]:
        _serve(channel)
        return
    if "--code" not in sys.argv[1:]:
        _warm_up()  # a single-use process: pay polars' and OpenDP's first-use costs now
    channel.send({"type": "ready"})
    sys.exit(_one_task(channel))


if __name__ == "__main__":
    main()
