"""The bureau's pages: the programme's tables, one category at a time, and their exports.

Each page reads the table through ``sandbox.programme.service`` with the logged-in
principal, as the API does (``sandbox/api/routes_programme.py``): the capability table
refuses every other role, and every figure on enterprises passes the same protection.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from policies.errors import NotFound
from sandbox.api.deps import VeilDep
from sandbox.console.render import page
from sandbox.console.session import PrincipalDep
from sandbox.kpi.verdicts import settle_pending
from sandbox.programme import export, service
from sandbox.programme.protection import MIN_ENTERPRISES
from sandbox.programme.tables import BREAKDOWNS, Table, TableName

router = APIRouter()

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
DOWNLOAD = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@router.get("/programme")
def programme_page(
    request: Request,
    veil: VeilDep,
    principal: PrincipalDep,
    table: str = TableName.PARTICIPATION.value,
    by: str = "total",
) -> Response:
    """A table of the programme, broken down by one category (or total)."""
    built = service.read_table(veil, principal, table, by[:40], settle=settle_pending)
    return page(
        request,
        "bureau_programme.html",
        principal,
        table=built,
        headings=export.headings(built),
        rows=_rows(built),
        tables=[(t.value, export.TITLES[t]) for t in TableName],
        breakdowns=[(b, export.BREAKDOWN_LABELS[b]) for b in BREAKDOWNS],
        title=export.TITLES[built.name],
        minimum=MIN_ENTERPRISES,
    )


def _rows(table: Table) -> list[dict[str, Any]]:
    """Each row as shown: its leading cells (month, group), and its figures with whether
    each was suppressed."""
    shown = export.cells(table)
    lead = len(shown[0]) - len(table.columns) if shown else 0
    return [
        {
            "lead": cells[:lead],
            "figures": [
                (value, row.values[column].suppressed)
                for value, column in zip(cells[lead:], table.columns, strict=True)
            ],
        }
        for cells, row in zip(shown, table.rows, strict=True)
    ]


@router.get("/programme/{table}.{fmt}")
def programme_download(
    table: str, fmt: str, veil: VeilDep, principal: PrincipalDep, by: str = "total"
) -> Response:
    """A table as CSV or XLSX, as the API exports it."""
    if fmt not in ("csv", "xlsx"):
        raise NotFound("page", f"programme/{table[:40]}.{fmt[:8]}")
    built = service.read_table(veil, principal, table, by[:40], settle=settle_pending)
    name = f"programme-{built.name.value}-{built.by}.{fmt}"
    headers = {"Content-Disposition": f'attachment; filename="{name}"', **DOWNLOAD}
    if fmt == "xlsx":
        return Response(export.to_xlsx(built), media_type=XLSX, headers=headers)
    return Response(export.to_csv(built), media_type="text/csv; charset=utf-8", headers=headers)
