"""Datasets: declared by their enterprise, uploaded, validated, stored only encrypted, versioned.

Plaintext exists only in memory: the upload body is read into memory (the API
never spools it to disk), validated and re-encoded as Parquet in memory batch by
batch (``sandbox.ingest.parse.encode_upload``), and written encrypted under a fresh data key
(``keys`` streaming format) bound to tenant, dataset and version.
"""

from __future__ import annotations

import io
import secrets
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema, PrivacyUnit
from i18n import Msg
from policies import audit
from policies.budget import Budget
from policies.capabilities import Capability, may, require
from policies.db import new_id
from policies.errors import Conflict, InvalidRequest, NotFound
from policies.grants import Grant
from policies.grants import grants_for as provider_grants
from policies.principals import Principal
from sandbox.data.objects import read_decrypted, write_encrypted
from sandbox.ingest import parse as ingest
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset, DatasetVersion
from sandbox.store.node_models import refuse_if_on_node

# A dataset's name is a label, never a path; separators in it only ever serve to mislead.
_PATH_SEPARATORS = frozenset("/\\")


def schema_to_json(schema: DatasetSchema) -> dict[str, Any]:
    return {
        "columns": [
            {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(c).items()}
            for c in schema.columns
        ],
        "privacy_unit": asdict(schema.privacy_unit),
    }


def schema_from_json(data: dict[str, Any]) -> DatasetSchema:
    columns = tuple(
        ColumnSpec(
            name=c["name"],
            type=ColumnType(c["type"]),
            column_class=ColumnClass(c["column_class"]),
            lower=c.get("lower"),
            upper=c.get("upper"),
            categories=tuple(c["categories"]) if c.get("categories") is not None else None,
            nullable=bool(c.get("nullable", False)),
            null_rate=c.get("null_rate"),
        )
        for c in data["columns"]
    )
    return DatasetSchema(columns, PrivacyUnit(**data["privacy_unit"]))


def _problems_to_invalid(error: ingest.IngestError) -> InvalidRequest:
    invalid = InvalidRequest(error.args[0])  # a Msg: read in the caller's language
    invalid.problems = [  # type: ignore[attr-defined]
        {"column": p.column, "row": p.row, "expected": p.expected} for p in error.problems
    ]
    return invalid


def rounded_count(n: int) -> int:
    """The row count providers see (tier 0): two significant figures, at least 10.

    Not differentially private: two versions whose counts straddle a rounding
    step reveal that the count moved.  Treated as public (tier 0).
    """
    if n < 15:
        return 10
    digits = len(str(n))
    step = max(10, 10 ** (digits - 2))
    return int(round(n / step) * step)


def create_dataset(
    veil: Veil,
    enterprise: Principal,
    name: str,
    schema: DatasetSchema,
    *,
    epsilon_cap: float | None = None,
    delta_cap: float | None = None,
) -> Dataset:
    """Declare a dataset; its privacy caps default to the platform settings."""
    require(enterprise, Capability.UPLOAD_DATA)
    with veil.db.read() as session:
        refuse_if_on_node(session, enterprise.id)
    name = name.strip()
    if not (1 <= len(name) <= 200 and name.isprintable() and not _PATH_SEPARATORS & set(name)):
        raise InvalidRequest(
            Msg("name must be 1-200 printable characters, without control characters, / or \\")
        )
    schema = ingest.normalised_schema(schema)  # names stored and compared in NFC
    try:
        ingest.validate_schema(schema)
    except ingest.IngestError as exc:
        raise _problems_to_invalid(exc) from None
    s = veil.settings
    cap = Budget.from_floats(
        s.default_dataset_epsilon_cap if epsilon_cap is None else epsilon_cap,
        s.default_dataset_delta_cap if delta_cap is None else delta_cap,
    )
    with veil.db.transaction() as session:
        dataset = Dataset(
            id=new_id("ds"),
            enterprise_id=enterprise.id,
            name=name,
            declaration=schema_to_json(schema),
            epsilon_cap=cap.epsilon_units,
            delta_cap=cap.delta_units,
            epsilon_spent=0,
            delta_spent=0,
            created_at=veil.clock(),
        )
        session.add(dataset)
        session.flush()
        audit.record(
            session,
            "dataset.created",
            actor=enterprise,
            tenant_id=enterprise.id,
            resource=f"dataset:{dataset.id}",
            details={
                "name": name,
                "columns": list(schema.names),
                "epsilon_cap": cap.epsilon,
                "delta_cap": cap.delta,
            },
        )
    return dataset


def owned_dataset(session: Session, enterprise: Principal, dataset_id: str) -> Dataset:
    """The enterprise's own dataset; another tenant's answers exactly like a missing one."""
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.enterprise_id != enterprise.id:
        raise NotFound("dataset", dataset_id)
    return dataset


def list_datasets(veil: Veil, enterprise: Principal) -> list[tuple[Dataset, DatasetVersion | None]]:
    require(enterprise, Capability.OWN_DATA)
    with veil.db.transaction() as session:
        datasets = session.scalars(
            select(Dataset)
            .where(Dataset.enterprise_id == enterprise.id)
            .order_by(Dataset.created_at)
        ).all()
        return [(d, latest_version(session, d.id)) for d in datasets]


def latest_version(session: Session, dataset_id: str) -> DatasetVersion | None:
    return session.scalars(
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset_id)
        .order_by(DatasetVersion.version.desc())
        .limit(1)
    ).first()


def upload_version(
    veil: Veil,
    enterprise: Principal,
    dataset_id: str,
    data: bytes,
    *,
    content_type: str | None = None,
    filename: str | None = None,
    encoding: str | None = None,
) -> DatasetVersion:
    """Validate ``data`` against the declaration and store it encrypted as the next version
    (a CSV's ``encoding`` detected unless named: ``sandbox.ingest.text``)."""
    require(enterprise, Capability.UPLOAD_DATA)
    assert enterprise.slug is not None
    with veil.db.transaction() as session:
        refuse_if_on_node(session, enterprise.id)
        dataset = owned_dataset(session, enterprise, dataset_id)
        schema = schema_from_json(dataset.declaration)
        next_version = (
            session.scalar(
                select(func.max(DatasetVersion.version)).where(
                    DatasetVersion.dataset_id == dataset_id
                )
            )
            or 0
        ) + 1
    s = veil.settings
    limits = ingest.IngestLimits(
        max_bytes=s.max_upload_bytes, max_rows=s.max_upload_rows, max_columns=s.max_upload_columns
    )
    try:
        fmt = ingest.detect_format(data, content_type, filename)
        encoding = encoding or ingest.charset(content_type)  # text/csv; charset=gbk
        checked = ingest.encode_upload(data, fmt, schema, limits, encoding=encoding)
    except ingest.IngestError as exc:
        raise _problems_to_invalid(exc) from None
    row_count = checked.rows
    relative = Path(enterprise.id) / dataset_id / f"v{next_version}-{secrets.token_hex(4)}.veil"
    stored = write_encrypted(
        veil, enterprise.slug, f"dataset:{dataset_id}", next_version, checked.parquet, relative
    )
    del checked
    try:
        with veil.db.transaction() as session:
            version = DatasetVersion(
                id=new_id("dv"),
                dataset_id=dataset_id,
                version=next_version,
                row_count=row_count,
                source_format=str(fmt),
                object_path=str(relative),
                wrapped_key=stored.wrapped_key,
                ciphertext_sha256=stored.ciphertext_sha256,
                size_bytes=stored.size,
                created_at=veil.clock(),
            )
            session.add(version)
            session.flush()
            audit.record(
                session,
                "dataset.uploaded",
                actor=enterprise,
                tenant_id=enterprise.id,
                resource=f"dataset:{dataset_id}",
                details={
                    "version": next_version,
                    "format": str(fmt),
                    "ciphertext_sha256": stored.ciphertext_sha256,
                    "size_bytes": stored.size,
                },
            )
    except IntegrityError:
        (s.objects_dir / relative).unlink(missing_ok=True)
        raise Conflict(Msg("another upload of this dataset finished first; upload again")) from None
    return version


def load_frame(veil: Veil, tenant: str, version: DatasetVersion) -> pl.DataFrame:
    """Decrypt a stored version into memory (never to disk) and parse it."""
    plain = read_decrypted(
        veil,
        tenant,
        f"dataset:{version.dataset_id}",
        version.version,
        version.wrapped_key,
        version.object_path,
    )
    return pl.read_parquet(io.BytesIO(plain))


def visible_dataset(veil: Veil, principal: Principal, dataset_id: str) -> Dataset:
    """Its owner sees a dataset; a provider sees it while one of its grants names it."""
    with veil.db.transaction() as session:
        if may(principal, Capability.OWN_DATA):
            return owned_dataset(session, principal, dataset_id)
        if may(principal, Capability.USE_GRANTS):
            dataset = session.get(Dataset, dataset_id)
            now = veil.clock()
            if dataset is not None and any(
                g.active_at(now) for g in provider_grants(session, principal.id, dataset_id)
            ):
                return dataset
        raise NotFound("dataset", dataset_id)


def granted_datasets(veil: Veil, provider: Principal) -> list[Dataset]:
    """Datasets named by the provider's active grants."""
    require(provider, Capability.USE_GRANTS)
    with veil.db.transaction() as session:
        now = veil.clock()
        ids = sorted(
            {
                d
                for g in session.scalars(select(Grant).where(Grant.provider_id == provider.id))
                if g.active_at(now)
                for d in g.dataset_ids
            }
        )
        return [d for d in (session.get(Dataset, i) for i in ids) if d is not None]
