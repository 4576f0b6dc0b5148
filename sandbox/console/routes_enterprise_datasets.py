"""The enterprise's dataset pages: its datasets and versions, and uploads with the
column-classification form (detection from a sample; the upload read in memory)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from analytics.schema import ColumnClass, ColumnType, DatasetSchema
from policies.grants import EPSILON_UNIT
from policies.principals import Principal
from sandbox import classification, datasets, ingest, ingest_suggest
from sandbox.api.deps import VeilDep
from sandbox.console import enterprise_forms as forms
from sandbox.console import enterprise_upload as uploads
from sandbox.console.render import page
from sandbox.console.routes_enterprise import (
    ERRORS,
    FORM_SLACK,
    NOTICES,
    EnterpriseDep,
    UploadCsrf,
    done_redirect,
    problem_fragment,
)
from sandbox.core import Veil
from sandbox.models import Dataset, DatasetVersion

router = APIRouter()


# ---------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetView:
    dataset: Dataset
    schema: DatasetSchema
    versions: list[DatasetVersion]

    @property
    def epsilon(self) -> tuple[float, float]:
        return self.dataset.epsilon_spent / EPSILON_UNIT, self.dataset.epsilon_cap / EPSILON_UNIT


def _dataset_views(veil: Veil, owner: Principal) -> list[DatasetView]:
    owned = [d for d, _ in datasets.list_datasets(veil, owner)]
    versions: dict[str, list[DatasetVersion]] = defaultdict(list)
    with veil.db.transaction() as session:
        rows = session.scalars(
            select(DatasetVersion)
            .where(DatasetVersion.dataset_id.in_([d.id for d in owned]))
            .order_by(DatasetVersion.version.desc())
        )
        for row in rows:
            versions[row.dataset_id].append(row)
    return [DatasetView(d, datasets.schema_from_json(d.declaration), versions[d.id]) for d in owned]


@router.get("/datasets")
def datasets_page(
    request: Request, veil: VeilDep, owner: EnterpriseDep, notice: str | None = None
) -> Response:
    return page(
        request,
        "enterprise_datasets.html",
        owner,
        datasets=_dataset_views(veil, owner),
        notice=NOTICES.get(notice or ""),
        sample_bytes=uploads.SAMPLE_BYTES,
        max_bytes=veil.settings.max_upload_bytes,
        default_cap=veil.settings.default_dataset_epsilon_cap,
    )


@router.post("/datasets/detect", dependencies=[UploadCsrf])
async def detect_columns(request: Request, veil: VeilDep, owner: EnterpriseDep) -> Response:
    """The columns of a sample of the chosen file, as fieldsets to classify (a fragment)."""
    try:
        upload = await uploads.read_multipart(request, veil.settings.max_upload_bytes + FORM_SLACK)
        sample = upload.file("sample")
        partial = upload.fields.one("partial") == "1"
        encoding = upload.fields.one("encoding") or None
        columns = await run_in_threadpool(uploads.detect_columns, sample, partial, encoding)
    except ERRORS as exc:
        return problem_fragment(request, owner, exc)
    return page(
        request,
        "enterprise_columns.html",
        owner,
        columns=columns,
        classes=list(ColumnClass),
        types=list(ColumnType),
        domains=classification.DOMAIN_LABELS,
        levels=classification.LEVEL_LABELS,
        default_level=classification.DEFAULT_LEVEL,
        bounds_help=ingest_suggest.BOUNDS_HELP,
    )


@router.post("/datasets", dependencies=[UploadCsrf])
async def create_dataset(request: Request, veil: VeilDep, owner: EnterpriseDep) -> Response:
    """Declare the dataset the form describes and store the file as its version 1."""
    try:
        upload = await uploads.read_multipart(request, veil.settings.max_upload_bytes + FORM_SLACK)
        declared = forms.declaration(upload.fields)
        encoding = upload.fields.one("encoding") or None
        await run_in_threadpool(
            _create_with_upload, veil, owner, declared, upload.file("file"), encoding
        )
    except ERRORS as exc:
        return problem_fragment(request, owner, exc)
    return done_redirect("/datasets", "dataset-created")


def _create_with_upload(
    veil: Veil,
    owner: Principal,
    declared: forms.Declaration,
    file: uploads.FilePart,
    encoding: str | None,
) -> None:
    """Check the file against the declaration first, so a bad file creates nothing."""
    s = veil.settings
    limits = ingest.IngestLimits(s.max_upload_bytes, s.max_upload_rows, s.max_upload_columns)
    try:
        fmt = ingest.detect_format(file.data, file.content_type, file.filename)
        schema = ingest.normalised_schema(declared.schema)
        ingest.read_upload(file.data, fmt, schema, limits, encoding=encoding)
    except ingest.IngestError as exc:
        raise uploads.invalid_upload(exc) from None
    classification.parse_columns(schema, declared.classification)  # before anything is made
    dataset = datasets.create_dataset(
        veil,
        owner,
        declared.name,
        declared.schema,
        epsilon_cap=declared.epsilon_cap,
        delta_cap=declared.delta_cap,
    )
    if declared.classification:
        classification.classify(veil, owner, dataset.id, declared.classification)
    datasets.upload_version(
        veil,
        owner,
        dataset.id,
        file.data,
        content_type=file.content_type,
        filename=file.filename,
        encoding=encoding,
    )


@router.post("/datasets/{dataset_id}/versions", dependencies=[UploadCsrf])
async def upload_version(
    dataset_id: str, request: Request, veil: VeilDep, owner: EnterpriseDep
) -> Response:
    """A new version of an existing dataset, checked against its declaration."""
    try:
        upload = await uploads.read_multipart(request, veil.settings.max_upload_bytes + FORM_SLACK)
        file = upload.file("file")
        await run_in_threadpool(
            datasets.upload_version,
            veil,
            owner,
            dataset_id,
            file.data,
            content_type=file.content_type,
            filename=file.filename,
            encoding=upload.fields.one("encoding") or None,
        )
    except ERRORS as exc:
        return problem_fragment(request, owner, exc)
    return done_redirect("/datasets", "version-uploaded")
