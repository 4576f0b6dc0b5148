"""``veil bureau`` (operator: create the programme's bureau) and ``veil programme`` (the
bureau: read and export its tables; docs/programme.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from i18n import N_, Msg
from i18n.catalog import gettext
from sandbox.cli.app import app, enterprises_app
from sandbox.cli.output import Output
from sandbox.cli.remote import DEFAULT_URL, JsonOpt, Token, Url, connect
from sandbox.programme.export import TITLES
from sandbox.programme.tables import TableName

#: Column names of the tables printed here (``Output.table`` translates them, "_" as " ").
HEADINGS = (
    N_("industry"), N_("district"), N_("size band"), N_("month"),
    N_("with datasets"), N_("with active grants"), N_("with active node"),
    N_("enterprises with datasets"), N_("declared columns"), N_("datasets per enterprise"),
    N_("columns per dataset"), N_("submitted"), N_("enterprises spending"),
    N_("epsilon spent"), N_("enterprises with verdicts"), N_("verdicts"), N_("not met"),
    N_("enterprises reporting"), N_("devices configured"), N_("devices online"),
    N_("online rate"),
)  # fmt: skip

bureau_app = typer.Typer(
    help="The programme's bureau, the city's 工信局 (operator).", no_args_is_help=True
)
programme_app = typer.Typer(
    help="The programme's tables across enterprises (bureau): show, export.",
    no_args_is_help=True,
)
app.add_typer(bureau_app, name="bureau")
app.add_typer(programme_app, name="programme")

Industry = Annotated[
    str | None, typer.Option(help="Public category: the industry, e.g. machinery.")
]
District = Annotated[str | None, typer.Option(help="Public category: the district, e.g. Jiangbei.")]
SizeBand = Annotated[
    str | None, typer.Option(help="Public category: micro, small, medium or large.")
]
By = Annotated[
    str,
    typer.Option(help="Break the table down by industry, district or size_band, or total."),
]
TableArg = Annotated[
    str,
    typer.Argument(help="participation, coverage, jobs, budget, verdicts, providers or equipment."),
]


def _given(industry: str | None, district: str | None, size_band: str | None) -> dict[str, Any]:
    named = {"industry": industry, "district": district, "size_band": size_band}
    return {k: v for k, v in named.items() if v is not None}


@enterprises_app.command("categorise")
def enterprises_categorise(
    enterprise_id: Annotated[str, typer.Argument(help="The enterprise's id.")],
    token: Token,
    url: Url = DEFAULT_URL,
    industry: Industry = None,
    district: District = None,
    size_band: SizeBand = None,
    as_json: JsonOpt = False,
) -> None:
    """Set an enterprise's public categories (operator); "" unsets one."""
    with connect(url, token) as c:
        made = c.set_categories(enterprise_id, **_given(industry, district, size_band))
        Output(as_json).record("enterprise categorised", made)


@bureau_app.command("create")
def bureau_create(
    name: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Create the programme's bureau (operator); then `veil tokens issue` its token."""
    with connect(url, token) as c:
        Output(as_json).record("bureau created", c.create_bureau(name))


@programme_app.command("show")
def programme_show(
    table: TableArg,
    token: Token,
    url: Url = DEFAULT_URL,
    by: By = "total",
    as_json: JsonOpt = False,
) -> None:
    """Show a table (bureau): suppressed cells count fewer than five enterprises."""
    with connect(url, token) as c:
        shown = c.programme_table(table, by)
    columns = list(shown["columns"])
    rows = []
    for row in shown["rows"]:
        group = row.get("provider") or (
            gettext("Total") if row.get("total") else row.get("category") or gettext("(not set)")
        )
        values = {
            k: gettext("suppressed") if k in row["suppressed"] else v
            for k, v in row["values"].items()
        }
        rows.append({"month": row.get("month") or "", "group": group, **values})
    lead = ["month", "group"] if any(r["month"] for r in rows) else ["group"]
    title = gettext(TITLES[TableName(shown["table"])])
    Output(as_json).table(title, rows, lead + columns, raw=shown)


@programme_app.command("export")
def programme_export(
    table: TableArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Write the file here.")],
    token: Token,
    url: Url = DEFAULT_URL,
    by: By = "total",
    fmt: Annotated[str, typer.Option("--format", help="csv or xlsx.")] = "csv",
    as_json: JsonOpt = False,
) -> None:
    """Export a table as CSV or XLSX (bureau)."""
    with connect(url, token) as c:
        body = c.programme_export(table, by, fmt)
    output.write_bytes(body)
    Output(as_json).record(
        Msg("programme table exported"),
        {"table": table, "by": by, "format": fmt, "path": str(output), "bytes": len(body)},
    )
