"""National classification of columns (MIIT domain, GB/T 43697-2024 level) and the
enterprise's catalogue of important data (重要数据目录), as JSON or XLSX."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import Input
from sandbox.data import classification, important_data

router = APIRouter(prefix="/v1", tags=["classification"])

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class ColumnClassIn(Input):
    domain: classification.Domain | None = None
    level: classification.Level | None = None


class ClassificationIn(Input):
    columns: dict[str, ColumnClassIn] = Field(max_length=500)
    replace: bool = Field(
        default=False, description="Reset the columns not named to their defaults"
    )


class ClassificationOut(BaseModel):
    dataset_id: str
    columns: list[dict[str, Any]]


@router.get("/datasets/{dataset_id}/classification")
def get_classification(dataset_id: str, veil: VeilDep, caller: PrincipalDep) -> ClassificationOut:
    """Each column's Veil class, MIIT domain and GB/T 43697 level (its owner, and a provider
    whose grant names the dataset, as in the catalog)."""
    columns = classification.visible_columns(veil, caller, dataset_id)
    return ClassificationOut(dataset_id=dataset_id, columns=[c.as_json() for c in columns])


@router.put("/datasets/{dataset_id}/classification")
def set_classification(
    dataset_id: str, body: ClassificationIn, veil: VeilDep, caller: PrincipalDep
) -> ClassificationOut:
    """Set some columns' domain and level (enterprise; its own datasets)."""
    given = {
        name: {k: str(v) for k, v in entry.model_dump().items() if v is not None}
        for name, entry in body.columns.items()
    }
    columns = classification.classify(veil, caller, dataset_id, given, replace=body.replace)
    return ClassificationOut(dataset_id=dataset_id, columns=[c.as_json() for c in columns])


@router.get("/important-data", response_model=None)
def important_data_catalogue(
    veil: VeilDep,
    caller: PrincipalDep,
    enterprise_id: str | None = None,
    fmt: Annotated[Literal["json", "xlsx"], Query(alias="format")] = "json",
) -> Response:
    """The enterprise's catalogue of important data (重要数据目录): every column classed
    重要数据 or 核心数据, with no data value.  Enterprises read their own; operators and
    security officers (within their scope) name ``enterprise_id``."""
    catalogue = important_data.build(veil, caller, enterprise_id)
    if fmt == "xlsx":
        name = f"important-data-{catalogue['enterprise']['id']}.xlsx"
        return Response(
            important_data.to_xlsx(catalogue),
            media_type=XLSX,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return JSONResponse(catalogue)
