"""The bureau's programme tables (docs/programme.md): JSON, CSV or XLSX."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from policies.capabilities import Capability, require
from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.kpi.verdicts import settle_pending
from sandbox.programme import export, service
from sandbox.programme.protection import MIN_ENTERPRISES
from sandbox.programme.tables import BREAKDOWNS, COLUMNS, TableName

router = APIRouter(prefix="/v1", tags=["programme"])

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@router.get("/programme")
def programme_index(caller: PrincipalDep) -> dict[str, Any]:
    """The tables the bureau may read, their breakdowns, and the rule their figures pass."""
    require(caller, Capability.READ_PROGRAMME)
    return {
        "tables": [
            {
                "name": name.value,
                "columns": list(COLUMNS[name]),
                "by": ["total"] if name is TableName.PROVIDERS else list(BREAKDOWNS),
            }
            for name in TableName
        ],
        "min_enterprises": MIN_ENTERPRISES,
    }


@router.get("/programme/{table}", response_model=None)
def programme_table(
    table: str,
    veil: VeilDep,
    caller: PrincipalDep,
    by: str = "total",
    fmt: Annotated[Literal["json", "csv", "xlsx"], Query(alias="format")] = "json",
) -> Response:
    """One table, broken down ``by`` one category (industry, district, size_band) or total:
    every figure on enterprises counts at least five of them and is cell-key perturbed."""
    built = service.read_table(veil, caller, table, by[:40], settle=settle_pending)
    if fmt == "json":
        return JSONResponse(export.as_json(built))
    name = f"programme-{built.name.value}-{built.by}.{fmt}"
    body, media = (
        (export.to_csv(built), "text/csv; charset=utf-8")
        if fmt == "csv"
        else (export.to_xlsx(built), XLSX)
    )
    return Response(
        body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
    )
