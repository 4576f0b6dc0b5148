"""One run of a source: read, map, validate, store the dataset's next version, move the cursor.

A run reads batches from its cursor until the source has nothing new (or the run holds
``VEIL_SOURCE_RUN_ROWS`` rows), maps them onto the declared columns, and checks them with the
upload's own code (``sandbox.ingest.encode_upload``: the same problems, row or message,
column, expected, never a non-public value; rows are counted within the run).

**Versions are full snapshots**: the new version is the previous version's rows followed by
the run's rows, encrypted as one object, so every job, catalog entry and mock reads one
version as before, and every version stands alone (the privacy unit's rows-per-id rule is
checked on the whole snapshot). The cost is one decrypt and re-encrypt of the dataset per
run that brings rows (a run that brings none stores nothing).

**Nothing half-written becomes a version**: the object is written under a new name first
(fsynced, renamed), then one transaction inserts the version, moves the cursor and records
the event, and only while this run still holds the source's lease and the cursor is the one
it read from. A crash before that commit leaves the previous version and the old cursor (and
an unreferenced object file); the next run reads the same rows again.

A failed run is retried after ``VEIL_SOURCE_RETRY_S`` doubled per failure in a row, at most
``VEIL_SOURCE_RETRY_MAX_S``; its message is kept (``last_error``) and audited
``source.run_failed``.
"""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError

from analytics.schema import DatasetSchema
from i18n import Msg
from policies import audit
from policies.capabilities import Capability, require
from policies.db import new_id
from policies.errors import Conflict, VeilError
from policies.principals import Principal
from sandbox.data import liveness
from sandbox.data.datasets import latest_version, load_frame, owned_dataset, schema_from_json
from sandbox.data.objects import write_encrypted
from sandbox.ingest import parse as ingest
from sandbox.runtime.veil import Veil
from sandbox.sources import kinds, leases
from sandbox.sources.base import Batch, Source, SourceError
from sandbox.sources.declarations import current_mapping, no_source, open_credentials
from sandbox.sources.mapping import MappingProblem, apply_mapping
from sandbox.store.models import Dataset, DatasetVersion
from sandbox.store.node_models import refuse_if_on_node
from sandbox.store.source_models import SourceDeclaration, SourceState

log = logging.getLogger(__name__)


class RunFailed(Exception):
    """Why a run stored nothing: a message for the enterprise (never a data value)."""


@dataclass(frozen=True)
class RunOutcome:
    source_id: str
    dataset_id: str
    rows: int = 0
    version: int | None = None
    error: str | None = None
    problems: tuple[str, ...] = ()  # what the source could not read (``Batch.problems``)
    #: Not run here: the scheduler that reads this continuous source runs it at its next
    #: poll (``run_now``); its state says the outcome.
    queued: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "dataset_id": self.dataset_id,
            "rows": self.rows,
            "version": self.version,
            "error": self.error,
            "problems": list(self.problems),
            "queued": self.queued,
        }


#: Opens a source from its kind, settings and credentials (the scheduler keeps them open).
Opener = Callable[[SourceDeclaration, Mapping[str, str]], Source]


def open_declared(source: SourceDeclaration, credentials: Mapping[str, str]) -> Source:
    return kinds.kind_named(source.kind).open_source(source.config, credentials)


# -- a run ----------------------------------------------------------------------------------
def run_now(veil: Veil, enterprise: Principal, dataset_id: str) -> RunOutcome:
    """Run the enterprise's source now, whatever its schedule: here, opened for this run,
    when no one holds it; queued (``RunOutcome.queued``) for the scheduler that holds a
    continuous source, its one reader (a copy opened here would store a cursor of another
    opening: ``sandbox.sources.leases``); 409 while another run holds it."""
    require(enterprise, Capability.UPLOAD_DATA)
    with veil.db.read() as session:
        refuse_if_on_node(session, enterprise.id)
        owned_dataset(session, enterprise, dataset_id)
        source = session.scalars(
            select(SourceDeclaration).where(SourceDeclaration.dataset_id == dataset_id)
        ).one_or_none()
        if source is not None:
            session.expunge(source)
    if source is None:
        raise no_source()
    owner = leases.run_owner()
    if leases.claim(veil, source.id, owner, due=False):
        return run_source(veil, source.id, owner, open_declared)
    if kinds.continuous(source.kind, source.config) and leases.queue(veil, source.id):
        return RunOutcome(source.id, dataset_id, queued=True)
    raise Conflict(Msg("a run of this source is under way; wait for it to end"))


def run_source(
    veil: Veil, source_id: str, owner: str, opener: Opener, *, hold: bool = False
) -> RunOutcome:
    """One run under the lease ``owner`` holds; the lease is given back at its end, or,
    with ``hold`` (a scheduler, which keeps sources open), kept for a continuous source."""
    with veil.db.read() as session:
        source = session.get(SourceDeclaration, source_id)
        state = session.get(SourceState, source_id)
        assert source is not None and state is not None
        dataset = session.get(Dataset, source.dataset_id)
        enterprise = session.get(Principal, source.enterprise_id)
        mapping = current_mapping(session, source_id)
        session.expunge_all()
    assert dataset is not None and enterprise is not None and enterprise.slug is not None
    hold = hold and kinds.continuous(source.kind, source.config)
    asked = state.next_attempt_at  # a later one, set during the run, is a run asked for
    outcome = RunOutcome(source_id, dataset.id)
    written: Path | None = None
    try:
        if mapping is None:
            raise RunFailed(
                "the source has no mapping yet: map its fields to the dataset's columns "
                "(veil sources map)"
            )
        credentials = open_credentials(veil, enterprise.slug, source)
        batch = _read_watched(
            veil, source, lambda: _read_all(veil, opener(source, credentials), state.cursor)
        )
        stored = None
        if batch.rows.height:
            schema = schema_from_json(dataset.declaration)
            mapped = _mapped(batch.rows, mapping.mapping, schema)
            stored = _snapshot(veil, enterprise.slug, dataset, schema, mapped, source.kind)
            written = veil.settings.objects_dir / stored.object_path
        version = _commit(veil, source, state.cursor, owner, batch, stored, mapping.version, asked)
        written = None
        return replace(outcome, rows=batch.rows.height, version=version, problems=batch.problems)
    except Exception as exc:  # every failure is the source's state, retried with back-off
        message = _message(exc)
        if written is not None:
            written.unlink(missing_ok=True)
        _failed(veil, source, owner, message, asked)
        return replace(outcome, error=message)
    finally:
        if hold:
            leases.hold(veil, source_id, owner)
        else:
            _release(veil, source_id, owner)


def _read_watched(veil: Veil, source: SourceDeclaration, read: Callable[[], Batch]) -> Batch:
    """``read`` the source, and record which of its devices answered (or, when it could not
    be read, that none did) for the equipment online rate, whatever becomes of the rows."""
    try:
        batch = read()
    except SourceError:
        with veil.db.transaction() as session:
            liveness.record_unreachable(session, source.id, source.enterprise_id, veil.clock())
        raise
    if batch.devices:
        with veil.db.transaction() as session:
            liveness.record_read(
                session, source.id, source.enterprise_id, batch.devices, veil.clock()
            )
    return batch


def _read_all(veil: Veil, source: Source, cursor: str | None) -> Batch:
    """Batches from ``cursor`` until one brings nothing or the run holds enough rows."""
    frames: list[pl.DataFrame] = []
    devices: dict[str, bool] = {}
    problems: dict[str, None] = {}  # in order, once each
    limit, rows = veil.settings.source_run_rows, 0
    try:
        while True:
            batch = source.read(cursor)
            for device, answered in batch.devices.items():  # answered any read of the run
                devices[device] = devices.get(device, False) or answered
            problems.update(dict.fromkeys(batch.problems))
            if batch.rows.height == 0:
                cursor = batch.cursor if batch.cursor is not None else cursor
                break
            frames.append(batch.rows)
            rows += batch.rows.height
            cursor = batch.cursor
            if rows >= limit:
                break
    finally:
        source.close()
    frame = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    return Batch(frame, cursor, devices, tuple(problems))


def _mapped(rows: pl.DataFrame, mapping: Mapping[str, Any], schema: DatasetSchema) -> pl.DataFrame:
    try:
        return apply_mapping(rows, mapping, schema)
    except MappingProblem as exc:
        raise RunFailed("; ".join([str(exc.args[0]), *exc.problems])) from None


@dataclass(frozen=True)
class _Stored:
    version: int
    rows: int
    added: int
    object_path: str
    wrapped_key: str
    ciphertext_sha256: str
    size_bytes: int
    source_format: str


def _snapshot(
    veil: Veil,
    tenant: str,
    dataset: Dataset,
    schema: DatasetSchema,
    mapped: pl.DataFrame,
    kind: str,
) -> _Stored:
    """Check the run's rows as an upload, and write the previous version's rows and them,
    encrypted, as the next version's object (not yet a version: ``_commit`` makes it one)."""
    s = veil.settings
    limits = ingest.IngestLimits(
        max_bytes=s.max_upload_bytes, max_rows=s.max_upload_rows, max_columns=s.max_upload_columns
    )
    parquet = io.BytesIO()
    mapped.write_parquet(parquet)
    try:
        checked = ingest.encode_upload(
            parquet.getvalue(), ingest.FileFormat.PARQUET, schema, limits
        )
    except ingest.IngestError as exc:
        raise RunFailed(str(exc)) from None
    new = pl.read_parquet(io.BytesIO(checked.parquet))
    with veil.db.read() as session:
        previous = latest_version(session, dataset.id)
        if previous is not None:
            session.expunge(previous)
    if previous is not None:
        new = pl.concat([load_frame(veil, tenant, previous), new], how="vertical_relaxed")
        if schema.privacy_unit.id_column is not None:
            _check_whole(new, schema, previous.row_count)
    body = io.BytesIO()
    new.write_parquet(body)
    number = (previous.version if previous is not None else 0) + 1
    relative = Path(dataset.enterprise_id) / dataset.id / f"v{number}-{secrets.token_hex(4)}.veil"
    stored = write_encrypted(
        veil, tenant, f"dataset:{dataset.id}", number, body.getvalue(), relative
    )
    return _Stored(
        number,
        new.height,
        checked.rows,
        str(relative),
        stored.wrapped_key,
        stored.ciphertext_sha256,
        stored.size,
        f"source:{kind}"[:16],
    )


def _check_whole(frame: pl.DataFrame, schema: DatasetSchema, previous_rows: int) -> None:
    """The privacy unit's rule on the whole snapshot, with rows counted within the run."""
    body = io.BytesIO()
    frame.write_parquet(body)
    limits = ingest.IngestLimits(max_bytes=2**62, max_rows=2**62)
    try:
        ingest.read_upload(body.getvalue(), ingest.FileFormat.PARQUET, schema, limits)
    except ingest.IngestError as exc:
        rebased = [
            replace(p, row=p.row - previous_rows if p.row is not None else None)
            for p in exc.problems
        ]
        raise RunFailed(str(ingest.IngestError(rebased, exc.total))) from None


def _commit(
    veil: Veil,
    source: SourceDeclaration,
    cursor: str | None,
    owner: str,
    batch: Batch,
    stored: _Stored | None,
    mapping_version: int,
    asked: datetime,
) -> int | None:
    """The version, the cursor and the state in one transaction, while the lease is ours and
    the cursor the one read from. The next attempt is the schedule's, unless a run was asked
    for during this one (``run_now`` queued it: ``asked``, the next attempt when this run
    began, moved): that one stays due."""
    now = veil.clock()
    scheduled = _next(veil, source, now)
    try:
        with veil.db.transaction() as session:
            moved = session.execute(
                update(SourceState)
                .where(SourceState.source_id == source.id, SourceState.claimed_by == owner)
                .where(
                    SourceState.cursor.is_(None) if cursor is None else SourceState.cursor == cursor
                )
                .values(
                    cursor=batch.cursor,
                    last_run_at=now,
                    last_success_at=now,
                    last_rows=batch.rows.height,
                    failures=0,
                    last_error=None,
                    devices=dict(batch.devices) or None,
                    next_attempt_at=case(
                        (SourceState.next_attempt_at > asked, SourceState.next_attempt_at),
                        else_=scheduled,
                    ),
                    **({"last_version": stored.version} if stored is not None else {}),
                )
            )
            if moved.rowcount != 1:
                raise RunFailed("the run's lease ran out before it could store its rows")
            if stored is None:
                return None
            session.add(
                DatasetVersion(
                    id=new_id("dv"),
                    dataset_id=source.dataset_id,
                    version=stored.version,
                    row_count=stored.rows,
                    source_format=stored.source_format,
                    object_path=stored.object_path,
                    wrapped_key=stored.wrapped_key,
                    ciphertext_sha256=stored.ciphertext_sha256,
                    size_bytes=stored.size_bytes,
                    created_at=now,
                )
            )
            session.flush()
            audit.record(
                session,
                "dataset.uploaded",
                tenant_id=source.enterprise_id,
                resource=f"dataset:{source.dataset_id}",
                details={
                    "version": stored.version,
                    "format": stored.source_format,
                    "source_id": source.id,
                    "mapping_version": mapping_version,
                    **({"problems": list(batch.problems)} if batch.problems else {}),
                    "rows_added": stored.added,
                    "ciphertext_sha256": stored.ciphertext_sha256,
                    "size_bytes": stored.size_bytes,
                },
            )
            return stored.version
    except IntegrityError:
        raise RunFailed("an upload of this dataset stored a version first; retried") from None


def _next(veil: Veil, source: SourceDeclaration, now: datetime) -> datetime:
    if source.interval_s is None:
        return now + timedelta(seconds=veil.settings.source_continuous_pause_s)
    return now + timedelta(seconds=source.interval_s)


def backoff_s(veil: Veil, failures: int) -> float:
    """The wait before the next attempt after ``failures`` failed runs in a row."""
    s = veil.settings
    return float(min(s.source_retry_s * 2 ** max(0, min(failures, 40) - 1), s.source_retry_max_s))


def _failed(
    veil: Veil, source: SourceDeclaration, owner: str, message: str, asked: datetime
) -> None:
    now = veil.clock()
    with veil.db.transaction() as session:
        state = session.get(SourceState, source.id)
        if state is None or state.claimed_by != owner:
            return  # another run holds it now: its outcome is the state's
        state.failures += 1
        failures = state.failures
        state.last_run_at, state.last_error = now, message
        if state.next_attempt_at <= asked:  # else a run asked for during this one stays due
            state.next_attempt_at = now + timedelta(seconds=backoff_s(veil, state.failures))
        audit.record(
            session,
            "source.run_failed",
            outcome=audit.Outcome.FAILED,
            tenant_id=source.enterprise_id,
            resource=f"dataset:{source.dataset_id}",
            details={
                "source_id": source.id,
                "failures": state.failures,
                "error": message,
                "next_attempt_at": state.next_attempt_at.isoformat(),
            },
        )
    log.warning("source %s: run failed (%d in a row), retried later", source.id, failures)


_release = leases.release  # a name of this module: a test stands in for it


def _message(exc: Exception) -> str:
    """What the enterprise is shown: the error's own message where Veil wrote it (no values),
    else only the error's class."""
    if isinstance(exc, RunFailed | SourceError | VeilError):
        return str(exc)
    log.warning("source run failed: %s", type(exc).__name__)
    return f"the run failed ({type(exc).__name__}); it is retried"
