"""Datasets (declare, upload, show), the tier-0 catalog and tier-1 mock data."""

from __future__ import annotations

import io
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from analytics.schema import ColumnSpec, DatasetSchema, PrivacyUnit
from i18n import Msg
from policies.budget import summary
from policies.capabilities import Capability, may, require
from policies.errors import InvalidRequest
from policies.principals import Principal
from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import (
    BudgetOut,
    CatalogEntryOut,
    ColumnOut,
    DatasetIn,
    DatasetOut,
    VersionOut,
)
from sandbox.data import catalog, datasets
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset, DatasetVersion

router = APIRouter(prefix="/v1", tags=["datasets"])


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
            null_rate=c.null_rate,
        )
        for c in body.columns
    )
    unit = PrivacyUnit(body.privacy_unit.id_column, body.privacy_unit.max_rows_per_id)
    return DatasetSchema(columns, unit)


def _columns(dataset: Dataset) -> list[ColumnOut]:
    schema = datasets.schema_from_json(dataset.declaration)
    return [
        ColumnOut(
            name=c.name,
            type=c.type,
            column_class=c.column_class,
            lower=c.lower,
            upper=c.upper,
            categories=list(c.categories) if c.categories else None,
            nullable=c.nullable,
            null_rate=c.null_rate,
        )
        for c in schema.columns
    ]


def _version_out(v: DatasetVersion, owner: bool) -> VersionOut:
    return VersionOut(
        version=v.version,
        source_format=v.source_format,
        size_bytes=v.size_bytes,
        ciphertext_sha256=v.ciphertext_sha256,
        created_at=v.created_at,
        row_count=v.row_count if owner else None,
    )


def _cap(dataset: Dataset) -> BudgetOut:
    return BudgetOut(**summary(dataset.cap, dataset.cap_spent))


def _out(veil: Veil, dataset: Dataset, viewer: Principal) -> DatasetOut:
    with veil.db.transaction() as session:
        latest = datasets.latest_version(session, dataset.id)
    owner = may(viewer, Capability.OWN_DATA)
    return DatasetOut(
        id=dataset.id,
        enterprise_id=dataset.enterprise_id,
        name=dataset.name,
        columns=_columns(dataset),
        privacy_unit=dataset.declaration["privacy_unit"],
        latest_version=_version_out(latest, owner) if latest else None,
        cap=_cap(dataset) if owner else None,
        created_at=dataset.created_at,
    )


@router.post("/datasets", status_code=status.HTTP_201_CREATED, response_model_by_alias=True)
def create_dataset(body: DatasetIn, veil: VeilDep, caller: PrincipalDep) -> DatasetOut:
    """Declare a dataset: columns with type, class, bounds, categories; the privacy unit; caps."""
    dataset = datasets.create_dataset(
        veil,
        caller,
        body.name,
        _schema(body),
        epsilon_cap=body.epsilon_cap,
        delta_cap=body.delta_cap,
    )
    return _out(veil, dataset, caller)


@router.get("/datasets", response_model_by_alias=True)
def list_datasets(veil: VeilDep, caller: PrincipalDep) -> list[DatasetOut]:
    """An enterprise's own datasets; a provider's granted ones (schema only, no row counts)."""
    if may(caller, Capability.USE_GRANTS):
        return [_out(veil, d, caller) for d in datasets.granted_datasets(veil, caller)]
    return [_out(veil, d, caller) for d, _ in datasets.list_datasets(veil, caller)]


@router.get("/datasets/{dataset_id}", response_model_by_alias=True)
def get_dataset(dataset_id: str, veil: VeilDep, caller: PrincipalDep) -> DatasetOut:
    require(caller, Capability.READ_DATASETS)  # the role refusal comes first: 403
    return _out(veil, datasets.visible_dataset(veil, caller, dataset_id), caller)


@router.get("/catalog", response_model_by_alias=True)
def get_catalog(veil: VeilDep, caller: PrincipalDep) -> list[CatalogEntryOut]:
    """Tier 0: granted datasets with schema, classes, bounds, categories, a rounded row count."""
    return [
        CatalogEntryOut(
            dataset_id=e.dataset.id,
            name=e.dataset.name,
            enterprise_id=e.dataset.enterprise_id,
            columns=_columns(e.dataset),
            privacy_unit=e.dataset.declaration["privacy_unit"],
            row_count_rounded=e.row_count_rounded,
            granted_columns=e.columns,
            tiers=e.tiers,
            purposes=e.purposes,
            grant_ids=e.grant_ids,
        )
        for e in catalog.catalog(veil, caller)
    ]


MEDIA = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


@router.get(
    "/datasets/{dataset_id}/mock", responses={200: {"content": {m: {} for m in MEDIA.values()}}}
)
def get_mock(
    dataset_id: str,
    veil: VeilDep,
    caller: PrincipalDep,
    rows: Annotated[int, Query(ge=1, le=catalog.MAX_MOCK_ROWS)] = 1000,
    seed: Annotated[int, Query(ge=0, le=2**32 - 1)] = 0,
    format: Literal["csv", "parquet"] = "csv",
) -> Response:
    """Tier 1: synthetic rows from the declaration only; reproducible from ``seed``; free."""
    require(caller, Capability.READ_DATASETS)
    data = catalog.mock_data(veil, caller, dataset_id, rows=rows, seed=seed, fmt=format)
    filename = f"{dataset_id}-mock-{seed}.{format}"
    return Response(
        content=data,
        media_type=MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


class PayloadTooLarge(InvalidRequest):
    """An upload over VEIL_MAX_UPLOAD_BYTES (the same code as the request guard's 413)."""

    default_code = "body_too_large"


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body in memory, refusing past ``limit`` without reading further."""
    message = Msg("the upload is larger than VEIL_MAX_UPLOAD_BYTES ({limit} bytes)", limit=limit)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(message)
    # A BytesIO grows in place and hands its buffer over without a copy, where joining a list
    # of chunks would hold the body twice at the end.
    body = io.BytesIO()
    async for chunk in request.stream():
        if body.tell() + len(chunk) > limit:
            raise PayloadTooLarge(message)
        body.write(chunk)
    return body.getvalue()


@router.post(
    "/datasets/{dataset_id}/versions",
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                m: {"schema": {"type": "string", "format": "binary"}} for m in MEDIA.values()
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
    encoding: str | None = None,
) -> VersionOut:
    """Upload the data as the raw body (CSV or Parquet); stored encrypted as a new version.

    A CSV's ``encoding`` (utf-8, gb18030, gbk, utf-16, ...) is detected when not given:
    UTF-8, UTF-16 with a BOM, or GB18030 Chinese text (``docs/datasets.md``)."""
    data = await _read_body(request, veil.settings.max_upload_bytes)
    version = await run_in_threadpool(
        datasets.upload_version,
        veil,
        caller,
        dataset_id,
        data,
        content_type=request.headers.get("content-type"),
        filename=filename,
        encoding=encoding,
    )
    return _version_out(version, owner=True)
