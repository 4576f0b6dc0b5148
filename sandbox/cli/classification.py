"""``veil datasets classify`` / ``classification`` / ``important-data``: the national
classification of columns (MIIT domain, GB/T 43697-2024 level) and the catalogue of
important data (重要数据目录), see docs/classification.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from i18n import Msg
from sandbox.cli.app import datasets_app
from sandbox.cli.output import Output
from sandbox.cli.remote import DEFAULT_URL, JsonOpt, Token, Url, connect


def _setting(text: str) -> tuple[str, dict[str, str]]:
    """``COLUMN=DOMAIN``, ``COLUMN=DOMAIN:LEVEL`` or ``COLUMN=:LEVEL``."""
    column, sep, value = text.partition("=")
    domain, _, level = value.partition(":")
    if not sep or not column.strip() or not (domain.strip() or level.strip()):
        raise typer.BadParameter(
            Msg("expected COLUMN=DOMAIN, COLUMN=DOMAIN:LEVEL or COLUMN=:LEVEL"),
            param_hint="--set",
        )
    entry = {"domain": domain.strip(), "level": level.strip()}
    return column.strip(), {k: v for k, v in entry.items() if v}


@datasets_app.command("classify")
def datasets_classify(
    dataset_id: str,
    token: Token,
    settings: Annotated[
        list[str],
        typer.Option(
            "--set",
            help="COLUMN=DOMAIN[:LEVEL], repeatable. Domains: research, production, "
            "operations, management, external. Levels: general-1 to general-4, important, "
            "core (default: from the column's class).",
        ),
    ],
    replace: Annotated[
        bool, typer.Option(help="Reset the columns not named to their defaults.")
    ] = False,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Set columns' data domain (MIIT) and level (GB/T 43697-2024) (enterprise)."""
    columns = dict(_setting(s) for s in settings)
    with connect(url, token) as c:
        result = c.classify(dataset_id, columns, replace=replace)
    _print(result, as_json)


@datasets_app.command("classification")
def datasets_classification(
    dataset_id: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Each column's class, data domain (MIIT) and level (GB/T 43697-2024)."""
    with connect(url, token) as c:
        _print(c.classification(dataset_id), as_json)


def _print(result: dict[str, Any], as_json: bool) -> None:
    columns = ["name", "class", "domain", "level", "level_source"]
    title = Msg("classification of {dataset}", dataset=result.get("dataset_id"))
    Output(as_json).table(title, result.get("columns", []), columns, raw=result)


@datasets_app.command("important-data")
def datasets_important_data(
    token: Token,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the catalogue here (default: print JSON)."),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="json or xlsx.")] = "json",
    enterprise: Annotated[
        str | None,
        typer.Option("--enterprise", help="The enterprise's id (operators and security officers)."),
    ] = None,
    url: Url = DEFAULT_URL,
) -> None:
    """Export the catalogue of important data (重要数据目录): no data values, only names,
    classes, domains, levels and rounded row counts."""
    if fmt not in ("json", "xlsx"):
        raise typer.BadParameter(Msg("expected json or xlsx"), param_hint="--format")
    if fmt == "xlsx" and output is None:
        raise typer.BadParameter(Msg("an XLSX file needs --output FILE"), param_hint="--output")
    with connect(url, token) as c:
        data = c.important_data(enterprise, fmt)
    if output is None:
        typer.echo(json.dumps(json.loads(data), ensure_ascii=False, indent=2))
        return
    output.write_bytes(data)
    typer.echo(Msg("wrote {path}", path=str(output)))
