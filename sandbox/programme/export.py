"""The bureau's tables as JSON, CSV and XLSX: suppressed cells are shown as suppressed,
never as 0; headings and labels in the reader's language."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any, Final

from i18n import N_
from i18n.catalog import gettext
from sandbox.programme.protection import MIN_ENTERPRISES
from sandbox.programme.tables import Row, Table, TableName

#: Every column's heading.
HEADINGS: Final[Mapping[str, str]] = {
    "month": N_("Month"),
    "group": N_("Group"),
    "provider": N_("Provider"),
    "enterprises": N_("Enterprises enrolled"),
    "with_datasets": N_("With datasets"),
    "with_active_grants": N_("With active grants"),
    "with_active_node": N_("With an active node"),
    "enterprises_with_datasets": N_("Enterprises with datasets"),
    "datasets": N_("Datasets"),
    "declared_columns": N_("Declared columns"),
    "datasets_per_enterprise": N_("Datasets per enterprise"),
    "columns_per_dataset": N_("Columns per dataset"),
    "submitted": N_("Jobs submitted"),
    "released": N_("Reports released"),
    "failed": N_("Failed"),
    "denied": N_("Denied"),
    "pending": N_("Pending"),
    "enterprises_spending": N_("Enterprises spending ε"),
    "epsilon_spent": N_("ε spent"),
    "enterprises_with_verdicts": N_("Enterprises with KPI verdicts"),
    "verdicts": N_("KPI verdicts released"),
    "met": N_("Met"),
    "not_met": N_("Not met"),
    "inconclusive": N_("Inconclusive"),
    "enterprises_reporting": N_("Enterprises reporting equipment"),
    "devices_configured": N_("Devices configured"),
    "devices_online": N_("Devices online"),
    "online_rate": N_("Equipment online rate"),
}
TITLES: Final[Mapping[TableName, str]] = {
    TableName.PARTICIPATION: N_("Participation"),
    TableName.COVERAGE: N_("Data coverage"),
    TableName.JOBS: N_("Jobs and reports"),
    TableName.BUDGET: N_("Budget use"),
    TableName.VERDICTS: N_("Outcome verdicts"),
    TableName.PROVIDERS: N_("Jobs and reports per provider"),
    TableName.EQUIPMENT: N_("Equipment online rate"),
}
BREAKDOWN_LABELS: Final[Mapping[str, str]] = {
    "total": N_("Total"),
    "industry": N_("Industry"),
    "district": N_("District"),
    "size_band": N_("Size band"),
}
SUPPRESSED: Final = N_("suppressed")
NOT_SET: Final = N_("(not set)")
RULE: Final = N_(
    "Every figure counts at least {minimum} enterprises (else suppressed) and is perturbed "
    "by the cell-key method: the same cell always shows the same value."
)
EXACT: Final = N_("Each provider's own jobs, exactly; not broken down by enterprise.")


def group_label(table: Table, row: Row) -> str:
    """A row's group as shown: a provider's name, the total, a category, or not set."""
    if table.name is TableName.PROVIDERS:
        return row.label or row.group or ""
    if row.total:
        return gettext("Total")
    return row.group if row.group is not None else gettext(NOT_SET)


def as_json(table: Table) -> dict[str, Any]:
    """The table as the API returns it: suppressed cells are null and listed."""
    rows = []
    for row in table.rows:
        entry: dict[str, Any] = {"month": row.month}
        if table.name is TableName.PROVIDERS:
            entry |= {"provider_id": row.group, "provider": row.label}
        else:
            entry |= {"category": row.group, "total": row.total}
        entry["values"] = {k: cell.value for k, cell in row.values.items()}
        entry["suppressed"] = [k for k, cell in row.values.items() if cell.suppressed]
        rows.append(entry)
    return {
        "table": table.name.value,
        "by": table.by,
        "columns": list(table.columns),
        "rows": rows,
        "protection": protection(table),
    }


def protection(table: Table) -> dict[str, Any]:
    if not table.protected:
        return {"method": "none", "about": "providers"}
    return {
        "method": "cell-key",
        "min_enterprises": MIN_ENTERPRISES,
        "dominance": "the 2 largest enterprise contributions over 90% of a sum: suppressed",
        "count": "moves by at most 2, never below the minimum",
        "sum": "moves by less than twice its largest enterprise contribution",
        "consistent": "the same enterprises in the same figure always get the same value",
        **(
            {"online_rate": "devices online over devices configured, both as released"}
            if table.name is TableName.EQUIPMENT
            else {}
        ),
    }


def headings(table: Table) -> list[str]:
    first = "provider" if table.name is TableName.PROVIDERS else "group"
    lead = ["month", first] if table.name in _MONTHLY else [first]
    return [gettext(HEADINGS[k]) for k in (*lead, *table.columns)]


_MONTHLY: Final = frozenset(
    {TableName.JOBS, TableName.BUDGET, TableName.VERDICTS, TableName.PROVIDERS, TableName.EQUIPMENT}
)


def cells(table: Table) -> list[list[str | float]]:
    """The table's rows as shown: group, figures, suppressed cells as the word."""
    shown: list[list[str | float]] = []
    word = gettext(SUPPRESSED)
    for row in table.rows:
        lead: list[str | float] = [row.month or ""] if table.name in _MONTHLY else []
        lead.append(group_label(table, row))
        for column in table.columns:
            cell = row.values[column]
            lead.append(word if cell.value is None else _number(cell.value))
        shown.append(lead)
    return shown


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def to_csv(table: Table) -> bytes:
    """UTF-8 with a byte-order mark, so that spreadsheet programs read Chinese labels."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(headings(table))
    for row in cells(table):
        writer.writerow([_safe(v) for v in row])
    return ("\ufeff" + out.getvalue()).encode("utf-8")


def _safe(value: str | float) -> str | float:
    """A text cell a spreadsheet would read as a formula, quoted (categories are checked
    at entry; provider names are not)."""
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@")):
        return "'" + value
    return value


def to_xlsx(table: Table) -> bytes:
    # Imported here: the CLI imports this module for its titles, and openpyxl takes a
    # tenth of a second to import on every command.
    from openpyxl import Workbook  # type: ignore[import-untyped]

    book = Workbook()
    sheet = book.active
    sheet.title = gettext(TITLES[table.name])[:31]
    sheet.append(headings(table))
    for row in cells(table):
        sheet.append(row)
        for cell in sheet[sheet.max_row]:
            if isinstance(cell.value, str):
                cell.data_type = "s"  # never a formula
    about = book.create_sheet(gettext("About")[:31])
    about.append([gettext("Breakdown"), gettext(BREAKDOWN_LABELS[table.by])])
    rule = EXACT if not table.protected else RULE
    about.append([gettext("Protection"), gettext(rule).format(minimum=MIN_ENTERPRISES)])
    for line in about.iter_rows():
        for cell in line:
            cell.data_type = "s"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
