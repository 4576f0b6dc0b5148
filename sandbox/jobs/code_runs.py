"""Running a tier-5 job: the approved code on the granted columns only, checked against the
same code's run on the mock data, with DP answered from outside the sandbox.

* **The data a process holds.**  Here, in the worker, the decrypted dataset is cut to the
  approved request's columns before anything is sent: the sandboxed process that runs
  the provider's code receives only those, so nothing inside it — frames, globals, the
  heap — can reach another column.  The boundary is the data the process holds; the
  source filter (``analytics.syft_code``) only helps reviewers.
* **DP outside.**  The DP helpers' calls are answered here by a ``DpService`` on Veil's
  own copy of the granted columns: it alone computes, charges and records.
* **A reference run.**  Unless every granted column is public, the same approved code
  also runs, concurrently, in a second sandbox on the mock data alone — a process that
  never holds private data.  The checks compare the two outputs and release Veil's own
  values (``analytics.output_checks``, rules f and g).
"""

from __future__ import annotations

import io
import threading
from typing import Any

import polars as pl

from analytics import syft_dp
from analytics.cellkey import key_halves, record_keys
from analytics.mock import mock_frame
from analytics.output_cells import RECORD_KEYS
from analytics.output_checks import Inspection, OutputCheck, Status, inspect_output, verdict
from analytics.schema import ColumnClass, DatasetSchema
from analytics.syft_code import SyftCode, string_literals
from policies.tiers import CODE_TIER
from sandbox.isolation.child import Task, decode_value
from sandbox.isolation.pool import ChildResult, SandboxError, SandboxPool
from sandbox.jobs.progress import JobProgress
from sandbox.jobs.reviewed_code import (
    CheckedOutput,
    dp_required,
    reported_calls,
    stored_reference,
)
from sandbox.runtime.veil import Veil

#: Most seconds the reference run may take beyond the private one.
_REFERENCE_GRACE_S = 60.0


def granted_rows(data: bytes, columns: tuple[str, ...]) -> tuple[pl.DataFrame, bytes]:
    """The granted ``columns`` of a dataset's Parquet ``data``: as a frame, and as the
    Parquet bytes that are all the sandboxed process is sent."""
    rows = pl.read_parquet(io.BytesIO(data), columns=list(columns))
    buffer = io.BytesIO()
    rows.write_parquet(buffer)
    return rows, buffer.getvalue()


def run_code_job(
    veil: Veil,
    task: Task,
    data: bytes,
    schema: DatasetSchema,
    min_count: int,
    progress: JobProgress,
    secret: bytes | None = None,
    reference: dict[str, Any] | None = None,
) -> CheckedOutput:
    """Run the approved code of ``task`` on the granted columns of ``data``; its checked
    output.  ``secret``: the dataset's cell-key secret, which perturbs the aggregates Veil
    releases as tier 2 would (needed unless every granted column is public).
    ``reference``: the request's stored reference from its run on the mock at submission
    (``CodeRequest.reference``); without one, the reference runs now, concurrently.
    Raises SandboxError (or SandboxCancelled) when the private run fails."""
    columns = tuple(task.extra["columns"])
    rows, payload = granted_rows(data, columns)
    checked_rows = rows if secret is None else _with_record_keys(rows, data, schema, secret)
    del data  # the worker keeps its own reference; nothing below needs the other columns
    dp = syft_dp.DpService(syft_dp.DpBudget(task.epsilon, schema), rows) if task.epsilon else None
    stored = None if reference is None else stored_reference(reference)
    running = None if all_public(schema, columns) or stored else _Reference(veil, task)
    try:
        pool = veil.code_sandboxes or SandboxPool(veil.settings, warm=False, code=True)
        answer = pool.take().run(
            task, payload, progress.on_progress, progress.should_stop,
            on_request=dp.answer if dp is not None else None,
        )  # fmt: skip
    except BaseException:
        if running is not None:
            running.stop()
        raise
    mock = stored if running is None else running.inspection(schema, min_count)
    if all_public(schema, columns):
        mock = None  # nothing private: nothing to compare
    return check_code_output(answer, checked_rows, columns, schema, task.query, min_count, dp, mock)


def check_code_output(
    answer: ChildResult,
    rows: pl.DataFrame,
    columns: tuple[str, ...],
    schema: DatasetSchema,
    code: SyftCode,
    min_count: int,
    dp: syft_dp.DpService | None,
    mock: Inspection | str | None,
) -> CheckedOutput:
    """Decode the sandbox's answer (untrusted) and check it against the private rows and
    the reference run's inspection (``mock``; a string: why there is none)."""
    result = answer.message.get("result")
    output = result.get("output") if isinstance(result, dict) else None
    value = decode_value(output, answer.blobs)
    required = dp_required(schema, columns)
    calls = dp.calls if dp is not None else []
    inspection = inspect_output(
        value, rows, schema, columns, min_count=min_count,
        dp_values=[released for _, released in calls], dp_calls=[call for call, _ in calls],
        dp_required=required, labels=string_literals(code),
    )  # fmt: skip
    check = verdict(inspection, mock if isinstance(mock, Inspection) else inspection, required)
    if isinstance(mock, str) and check.status == "pass" and inspection.private:
        # No reference to compare with: never released without the enterprise's look.
        status: Status = "blocked" if required else "held"
        check = OutputCheck(status, (mock,), None if required else inspection.value)
    spent = dp.budget.spent if dp is not None else 0.0
    checks = {"status": check.status, "reasons": list(check.reasons)}
    released = {
        "tier": CODE_TIER,
        "output": check.value,
        "checks": checks,
        "code_sha256": code.sha256,
        "epsilon": float(spent),
        "delta": 0.0,
    }
    details = {"code_sha256": code.sha256, "checks": checks, "epsilon_spent": float(spent)}
    return CheckedOutput(check.status, check.reasons, released, details)


def all_public(schema: DatasetSchema, columns: tuple[str, ...]) -> bool:
    """Whether every column of a request is public (then nothing in its output is private:
    no reference run, no cell-key secret needed)."""
    return all(_class(schema, c) is ColumnClass.PUBLIC for c in columns)


def _class(schema: DatasetSchema, name: str) -> ColumnClass:
    try:
        return schema.column(name).column_class
    except KeyError:
        return ColumnClass.SECRET


def _with_record_keys(
    rows: pl.DataFrame, data: bytes, schema: DatasetSchema, secret: bytes
) -> pl.DataFrame:
    """``rows`` with each unit's record key (computed on all its declared columns, as tier 2
    does), for the worker's own checks only: never sent to the sandbox."""
    high, low = key_halves(record_keys(pl.read_parquet(io.BytesIO(data)), schema, secret))
    return rows.with_columns(pl.Series(RECORD_KEYS[0], high), pl.Series(RECORD_KEYS[1], low))


class _Reference:
    """The approved code's run on the mock data alone, in a sandbox of its own, in a thread
    (a sandbox lives as long as the thread that started it)."""

    def __init__(self, veil: Veil, task: Task) -> None:
        self._task = Task("syft-mock", task.schema, task.query, epsilon=task.epsilon,
                          extra=dict(task.extra))  # fmt: skip
        self._settings = veil.settings
        self._stopped = threading.Event()
        self._answer: ChildResult | None = None
        self._failure: str | None = None
        self._thread = threading.Thread(target=self._run, name="tier5-reference", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            sandbox = SandboxPool(self._settings, warm=False, code=True).take()
            self._answer = sandbox.run(self._task, b"", should_stop=self._stopped.is_set)
        except SandboxError as exc:
            self._failure = exc.reason
        except Exception:  # reported as a failed reference; never raised in the thread
            self._failure = "internal error"

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(10)

    def inspection(self, schema: DatasetSchema, min_count: int) -> Inspection | str:
        """How the output on the mock reads (or why there is none), once the run ended."""
        self._thread.join(self._settings.job_wall_s + _REFERENCE_GRACE_S)
        if self._answer is None:
            self.stop()
            return (
                "the code did not run on the mock data "
                f"({self._failure or 'it took too long'}), so its output cannot be compared "
                "with the output on the mock"
            )
        message = self._answer.message
        result = message.get("result")
        value = decode_value(result.get("output") if isinstance(result, dict) else None,
                             self._answer.blobs)  # fmt: skip
        calls = reported_calls(message.get("dp_calls"))
        columns = tuple(self._task.extra["columns"])
        mock = mock_frame(schema, self._task.extra["mock_rows"], 0).select(list(columns))
        return inspect_output(
            value, mock, schema, columns, min_count=min_count,
            dp_values=[released for _, released in calls], dp_calls=[call for call, _ in calls],
            dp_required=dp_required(schema, columns), labels=string_literals(self._task.query),
        )  # fmt: skip
