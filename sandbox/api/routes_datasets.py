"""Datasets: declare, upload versions (raw body, never spooled to disk), list, show."""

from __future__ import annotations

from fastapi import APIRouter, Request, status

from analytics.schema import ColumnSpec, DatasetSchema, PrivacyUnit
from policies.errors import InvalidRequest
from policies.principals import Principal, Role
from sandbox import datasets
from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import ColumnOut, DatasetIn, DatasetOut, VersionOut
from sandbox.core import Veil
from sandbox.models import Dataset, DatasetVersion

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


class PayloadTooLarge(InvalidRequest):
    pass


def _schema(body: DatasetIn) -> DatasetSchema:
    columns = tuple(
        ColumnSpec(
            name=c.name,
            type=c.type,
            column_class=c.column_class,
            lower=c.lower,
            upper=c.upper,
            categories=tuple(c.categories) if c.categories else None,
            nullable=c.nullable,
        )
        for c in body.columns
    )
    unit = PrivacyUnit(body.privacy_unit.id_column, body.privacy_unit.max_rows_per_id)
    return DatasetSchema(columns, unit)


def _version_out(v: DatasetVersion, owner: bool) -> VersionOut:
    return VersionOut(
        version=v.version,
        source_format=v.source_format,
        size_bytes=v.size_bytes,
        ciphertext_sha256=v.ciphertext_sha256,
        created_at=v.created_at,
        row_count=v.row_count if owner else None,
    )


def _out(veil: Veil, dataset: Dataset, viewer: Principal) -> DatasetOut:
    schema = datasets.schema_from_json(dataset.declaration)
    with veil.db.transaction() as session:
        latest = datasets.latest_version(session, dataset.id)
    owner = viewer.role == Role.ENTERPRISE
    return DatasetOut(
        id=dataset.id,
        enterprise_id=dataset.enterprise_id,
        name=dataset.name,
        columns=[
            ColumnOut(
                name=c.name,
                type=c.type,
                column_class=c.column_class,
                lower=c.lower,
                upper=c.upper,
                categories=list(c.categories) if c.categories else None,
                nullable=c.nullable,
            )
            for c in schema.columns
        ],
        privacy_unit=dataset.declaration["privacy_unit"],
        latest_version=_version_out(latest, owner) if latest else None,
        created_at=dataset.created_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model_by_alias=True)
def create_dataset(body: DatasetIn, veil: VeilDep, caller: PrincipalDep) -> DatasetOut:
    """Declare a dataset: columns with type, class, bounds, categories; the privacy unit."""
    dataset = datasets.create_dataset(veil, caller, body.name, _schema(body))
    return _out(veil, dataset, caller)


@router.get("", response_model_by_alias=True)
def list_datasets(veil: VeilDep, caller: PrincipalDep) -> list[DatasetOut]:
    """An enterprise's own datasets; a provider's granted ones (schema only, no row counts)."""
    if caller.role == Role.PROVIDER:
        return [_out(veil, d, caller) for d in datasets.granted_datasets(veil, caller)]
    return [_out(veil, d, caller) for d, _ in datasets.list_datasets(veil, caller)]


@router.get("/{dataset_id}", response_model_by_alias=True)
def get_dataset(dataset_id: str, veil: VeilDep, caller: PrincipalDep) -> DatasetOut:
    return _out(veil, datasets.visible_dataset(veil, caller, dataset_id), caller)


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body in memory, refusing (413) past ``limit`` without reading further."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the upload is larger than VEIL_MAX_UPLOAD_BYTES ({limit} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"the upload is larger than VEIL_MAX_UPLOAD_BYTES ({limit} bytes)"
            )
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/{dataset_id}/versions",
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string", "format": "binary"}},
                "application/vnd.apache.parquet": {
                    "schema": {"type": "string", "format": "binary"}
                },
            },
        }
    },
)
async def upload_version(
    dataset_id: str,
    request: Request,
    veil: VeilDep,
    caller: PrincipalDep,
    filename: str | None = None,
) -> VersionOut:
    """Upload the data as the raw body (CSV or Parquet); stored encrypted as a new version."""
    data = await _read_body(request, veil.settings.max_upload_bytes)
    from starlette.concurrency import run_in_threadpool

    version = await run_in_threadpool(
        datasets.upload_version,
        veil,
        caller,
        dataset_id,
        data,
        content_type=request.headers.get("content-type"),
        filename=filename,
    )
    return _version_out(version, owner=True)
