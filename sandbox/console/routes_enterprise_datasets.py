"""The enterprise's dataset pages: its datasets and versions, and uploads with the
column-classification form (detection from a sample; the upload read in memory)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from analytics.schema import ColumnClass, ColumnType, DatasetSchema
from i18n import N_
from i18n.catalog import gettext
from policies.errors import NotFound
from policies.principals import Principal
from sandbox.api.deps import VeilDep
from sandbox.api.errors import status_for
from sandbox.api.routes_classification import XLSX
from sandbox.console import enterprise_forms as forms
from sandbox.console import enterprise_upload as uploads
from sandbox.console.render import error_text, page
from sandbox.console.routes_enterprise import (
    ERRORS,
    FORM_SLACK,
    EnterpriseDep,
    FieldsDep,
    UploadCsrf,
    done_redirect,
    notice_text,
    problem_fragment,
)
from sandbox.console.session import CsrfDep
from sandbox.data import classification, datasets, important_data
from sandbox.ingest import parse as ingest
from sandbox.ingest import suggest as ingest_suggest
from sandbox.ingest.text import ENCODINGS
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset, DatasetVersion

router = APIRouter()


# ---------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetView:
    dataset: Dataset
    schema: DatasetSchema
    versions: list[DatasetVersion]
    national: list[classification.ColumnClassification]

    @property
    def epsilon(self) -> tuple[float, float]:
        return self.dataset.cap_spent.epsilon, self.dataset.cap.epsilon


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
    return [
        DatasetView(
            d,
            datasets.schema_from_json(d.declaration),
            versions[d.id],
            classification.columns_of(d),
        )
        for d in owned
    ]


_NOTICES: Final = {"classified": N_("The classification was saved; it is in the audit log.")}


@router.get("/datasets")
def datasets_page(
    request: Request, veil: VeilDep, owner: EnterpriseDep, notice: str | None = None
) -> Response:
    return _datasets_page(request, veil, owner, notice=notice)


def _datasets_page(
    request: Request,
    veil: Veil,
    owner: Principal,
    status: int = 200,
    *,
    notice: str | None = None,
    error: dict[str, Any] | None = None,
) -> Response:
    return page(
        request,
        "enterprise_datasets.html",
        owner,
        status,
        datasets=_dataset_views(veil, owner),
        notice=notice_text(notice) or _own_notice(notice),
        classification_error=error,
        sample_bytes=uploads.SAMPLE_BYTES,
        max_bytes=veil.settings.max_upload_bytes,
        default_cap=veil.settings.default_dataset_epsilon_cap,
        encodings=ENCODINGS[1:],
        domains=classification.DOMAIN_LABELS,
        levels=classification.LEVEL_LABELS,
    )


def _own_notice(key: str | None) -> str | None:
    """This page's own notices (translated); gettext("") would answer the catalog's header."""
    text = _NOTICES.get(key or "")
    return gettext(text) if text else None


@router.post("/datasets/{dataset_id}/classification", dependencies=[CsrfDep])
def classify_columns(
    dataset_id: str, request: Request, veil: VeilDep, owner: EnterpriseDep, fields: FieldsDep
) -> Response:
    """Set the MIIT domain and GB/T 43697 level of the dataset's columns (all of them: a
    level left empty goes back to its class's default)."""
    try:
        count = forms.parse_int(fields.one("columns"), "the number of columns", 1, 500)
        given = {
            fields.one(f"col-{i}-name"): {
                "domain": fields.one(f"col-{i}-domain"),
                "level": fields.one(f"col-{i}-level"),
            }
            for i in range(count)
        }
        classification.classify(veil, owner, dataset_id, given, replace=True)
    except NotFound:
        raise
    except ERRORS as exc:
        return _datasets_page(request, veil, owner, status_for(exc), error=error_text(exc))
    return done_redirect("/datasets", "classified")


@router.get("/important-data.{fmt}")
def important_data_download(fmt: str, veil: VeilDep, owner: EnterpriseDep) -> Response:
    """The enterprise's catalogue of important data (重要数据目录), as XLSX or JSON."""
    if fmt not in ("xlsx", "json"):
        raise NotFound("page", f"important-data.{fmt}")
    catalogue = important_data.build(veil, owner)
    name = f"important-data-{owner.slug or owner.id}.{fmt}"
    disposition = {"Content-Disposition": f'attachment; filename="{name}"'}
    if fmt == "xlsx":
        return Response(important_data.to_xlsx(catalogue), media_type=XLSX, headers=disposition)
    body = json.dumps(catalogue, ensure_ascii=False, indent=2).encode()
    return Response(body, media_type="application/json", headers=disposition)


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
