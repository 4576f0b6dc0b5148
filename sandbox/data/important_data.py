"""An enterprise's catalogue of important data (重要数据目录), as JSON and XLSX.

Lists every column whose GB/T 43697-2024 level is 重要数据 or 核心数据
(``sandbox.data.classification``), with its dataset, Veil class, MIIT domain and the dataset's
row count rounded as the provider catalog rounds it.  It never holds a data value: only
names, classes, domains, levels, rounded counts and dates.  Read by the enterprise about
itself, and by the operator and security officers within their scope.
"""

from __future__ import annotations

import io
from datetime import datetime
from typing import Any, Final

from openpyxl import Workbook  # type: ignore[import-untyped]
from sqlalchemy import select

from i18n import N_, Msg
from i18n.catalog import gettext
from policies import audit
from policies.capabilities import Capability, may, require
from policies.errors import Forbidden, InvalidRequest, NotFound
from policies.principals import Principal, Role
from sandbox.data.classification import DOMAIN_LABELS, LEVEL_LABELS, LISTED, columns_of
from sandbox.data.datasets import latest_version, rounded_count
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset

FORMAT_VERSION: Final = "veil-important-data/1"
#: The XLSX columns: the JSON entry's key and the heading shown (translated).
_COLUMNS: Final = (
    ("dataset_id", N_("Dataset id")),
    ("dataset", N_("Dataset")),
    ("column", N_("Column")),
    ("class", N_("Veil class")),
    ("domain", N_("Data domain (MIIT)")),
    ("level", N_("Level (GB/T 43697-2024)")),
    ("rows_rounded", N_("Rows (rounded)")),
    ("declared_at", N_("Declared")),
    ("classified_at", N_("Classified")),
)


def _enterprise(veil: Veil, caller: Principal, enterprise_id: str | None) -> Principal:
    require(caller, Capability.READ_IMPORTANT_DATA)
    if may(caller, Capability.OWN_DATA):  # the data holder asks about itself
        if enterprise_id not in (None, caller.id):
            raise Forbidden(
                Msg("an enterprise exports its own catalogue only; leave enterprise_id out")
            )
        return caller
    if enterprise_id is None:
        raise InvalidRequest(Msg("operators and security officers must name the enterprise_id"))
    in_scope = may(caller, Capability.READ_IMPORTANT_DATA, enterprise_id)
    with veil.db.read() as session:
        enterprise = session.get(Principal, enterprise_id)
        if not in_scope or enterprise is None or enterprise.role != Role.ENTERPRISE:
            raise NotFound("enterprise", enterprise_id)  # out of scope answers like missing
        session.expunge(enterprise)
    return enterprise


def build(veil: Veil, caller: Principal, enterprise_id: str | None = None) -> dict[str, Any]:
    """The catalogue of ``enterprise_id`` (the caller's own, for an enterprise), audited."""
    enterprise = _enterprise(veil, caller, enterprise_id)
    entries: list[dict[str, Any]] = []
    with veil.db.transaction() as session:
        owned = session.scalars(
            select(Dataset)
            .where(Dataset.enterprise_id == enterprise.id)
            .order_by(Dataset.created_at, Dataset.id)
        ).all()
        for dataset in owned:
            version = latest_version(session, dataset.id)
            classified = (dataset.classification or {}).get("updated_at")
            for column in columns_of(dataset):
                if column.level not in LISTED:
                    continue
                entries.append(
                    {
                        "dataset_id": dataset.id,
                        "dataset": dataset.name,
                        "column": column.name,
                        "class": str(column.column_class),
                        "domain": str(column.domain) if column.domain else None,
                        "level": str(column.level),
                        "level_source": "enterprise" if column.level_set else "default",
                        "rows_rounded": rounded_count(version.row_count) if version else None,
                        "declared_at": dataset.created_at.isoformat(),
                        "classified_at": classified,
                    }
                )
        now = veil.clock()
        audit.record(
            session,
            "important_data.exported",
            actor=caller,
            tenant_id=enterprise.id,
            resource=f"enterprise:{enterprise.id}",
            details={"entries": len(entries)},
        )
    return {
        "format": FORMAT_VERSION,
        "standard": "GB/T 43697-2024; MIIT 工业数据分类分级指南（试行）",  # noqa: RUF001
        "enterprise": {"id": enterprise.id, "name": enterprise.name},
        "generated_at": now.isoformat(),
        "entries": entries,
    }


def to_xlsx(catalogue: dict[str, Any]) -> bytes:
    """The catalogue as an XLSX workbook, headings and labels in the current language."""
    book = Workbook()
    sheet = book.active
    sheet.title = gettext("Important data")[:31]
    sheet.append([gettext(heading) for _, heading in _COLUMNS])
    for entry in catalogue["entries"]:
        row = [_cell(key, entry.get(key)) for key, _ in _COLUMNS]
        sheet.append(row)
        for cell in sheet[sheet.max_row]:
            # A name starting with "=" would be read as a formula: store every cell as text.
            if isinstance(cell.value, str):
                cell.data_type = "s"
    meta = book.create_sheet(gettext("About")[:31])
    meta.append([gettext("Enterprise"), catalogue["enterprise"]["name"]])
    meta.append([gettext("Generated"), catalogue["generated_at"]])
    meta.append([gettext("Standards"), catalogue["standard"]])
    for row in meta.iter_rows():
        for cell in row:
            cell.data_type = "s"
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _cell(key: str, value: Any) -> Any:
    if value is None:
        return ""
    if key == "domain":
        return gettext(DOMAIN_LABELS[value])
    if key == "level":
        return gettext(LEVEL_LABELS[value])
    if key in ("declared_at", "classified_at"):
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M UTC")
    return value
