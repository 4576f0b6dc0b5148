"""Commands that talk to a running Veil server through the Python client."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from i18n import N_, Msg
from i18n.catalog import current, translate
from sandbox.cli.app import (
    audit_app,
    code_app,
    datasets_app,
    enterprises_app,
    grants_app,
    jobs_app,
    officers_app,
    providers_app,
)
from sandbox.cli.errors import CliError, read_json
from sandbox.cli.output import Output, console, silent_console
from sandbox.cli.plot import Plot, write_result_plot
from sandbox.client import VeilClient

Url = Annotated[str, typer.Option("--url", envvar="VEIL_URL", help="Veil server URL.")]
Token = Annotated[str, typer.Option("--token", envvar="VEIL_TOKEN", help="Your API token.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DEFAULT_URL = "http://127.0.0.1:8000"


def connect(url: str, token: str) -> VeilClient:
    """A client that asks for answers (error messages) in the CLI's language."""
    return VeilClient(url, token, language=current())


PRINCIPAL_COLUMNS = ["id", "name", "slug", "status", "created_at"]


# -- operator ------------------------------------------------------------------------------
@enterprises_app.command("create")
def enterprises_create(
    name: str,
    slug: Annotated[str, typer.Option(help="e.g. acme-metal")],
    token: Token,
    url: Url = DEFAULT_URL,
    industry: Annotated[
        str | None, typer.Option(help="Public category: the industry, e.g. machinery.")
    ] = None,
    district: Annotated[
        str | None, typer.Option(help="Public category: the district, e.g. Jiangbei.")
    ] = None,
    size_band: Annotated[
        str | None, typer.Option(help="Public category: micro, small, medium or large.")
    ] = None,
    on_node: Annotated[
        bool,
        typer.Option(
            "--on-node",
            help="Its data and keys live on its own node (`veil node init --enrol CODE` "
            "there); prints the one-time enrolment code.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create an enterprise; its key-server namespace and key are provisioned (here, or on
    its own node with --on-node)."""
    with connect(url, token) as c:
        if on_node:
            made = c.create_node_enterprise(name, slug)
            record = {**made["enterprise"], "node_id": made["node"]["id"],
                      "enrolment_code": made["enrolment_code"]}  # fmt: skip
            Output(as_json).record("enterprise created", record)
            return
        named = {"industry": industry, "district": district, "size_band": size_band}
        categories = {k: v for k, v in named.items() if v is not None}
        Output(as_json).record("enterprise created", c.create_enterprise(name, slug, **categories))


@enterprises_app.command("list")
def enterprises_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """List the enterprises (operator)."""
    with connect(url, token) as c:
        columns = [
            *PRINCIPAL_COLUMNS[:3],
            "industry",
            "district",
            "size_band",
            *PRINCIPAL_COLUMNS[3:],
        ]
        Output(as_json).table("enterprises", c.list_enterprises(), columns)


@providers_app.command("create")
def providers_create(
    name: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Create a provider (a digital-transformation service provider)."""
    with connect(url, token) as c:
        Output(as_json).record("provider created", c.create_provider(name))


@providers_app.command("list")
def providers_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """List the providers (operator)."""
    with connect(url, token) as c:
        Output(as_json).table("providers", c.list_providers(), PRINCIPAL_COLUMNS)


@officers_app.command("create")
def officers_create(
    name: str,
    token: Token,
    url: Url = DEFAULT_URL,
    scope: Annotated[list[str] | None, typer.Option(help="Enterprise id overseen (repeat)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a security officer overseeing some enterprises (default: all)."""
    with connect(url, token) as c:
        Output(as_json).record(
            "security officer created", c.create_security_officer(name, scope or None)
        )


# -- datasets --------------------------------------------------------------------------------
@datasets_app.command("create")
def datasets_create(
    declaration: Annotated[Path, typer.Argument(help="JSON: name, columns, privacy_unit")],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Declare a dataset from a JSON file (see docs/datasets.md)."""
    spec = read_json(declaration)
    if not isinstance(spec, dict) or not {"name", "columns"} <= spec.keys():
        raise CliError(
            Msg(
                'the declaration {path} needs a JSON object with "name" and "columns" '
                "(see docs/datasets.md)",
                path=str(declaration),
            ),
            code="invalid_declaration",
        )
    with connect(url, token) as c:
        ds = c.create_dataset(spec["name"], spec["columns"], spec.get("privacy_unit"))
    out = Output(as_json)
    if as_json:
        out.data(ds)
    else:
        out.record(
            "dataset declared",
            {"id": ds["id"], "name": ds["name"], "columns": [col["name"] for col in ds["columns"]]},
        )


@datasets_app.command("upload")
def datasets_upload(
    dataset_id: str,
    file: Path,
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
    encoding: Annotated[
        str | None,
        typer.Option(
            help="The CSV's text encoding: utf-8, gb18030, gbk, utf-16, ... "
            "(default: detected; see docs/datasets.md)."
        ),
    ] = None,
) -> None:
    """Upload a CSV or Parquet file as the dataset's next version (shows progress)."""
    size = file.stat().st_size  # a missing file is told before the progress bar starts
    with (
        connect(url, token) as c,
        Progress(
            TextColumn("uploading"),
            BarColumn(),
            DownloadColumn(),
            disable=as_json,
            console=silent_console if as_json else console,
        ) as bar,
    ):
        task = bar.add_task("upload", total=size)
        version = c.upload_file(
            dataset_id,
            file,
            progress=lambda done, total: bar.update(task, completed=done),
            encoding=encoding,
        )
    title = Msg("stored encrypted as version {version}", version=version["version"])
    Output(as_json).record(title, version)


@datasets_app.command("catalog")
def datasets_catalog(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Tier 0 (provider): granted datasets, their schema and a rounded row count."""
    with connect(url, token) as c:
        entries = c.catalog()
    rows = [
        {
            "dataset": e["dataset_id"],
            "name": e["name"],
            "rows (rounded)": e["row_count_rounded"],
            "tiers": e["tiers"],
            "purposes": e["purposes"],
            "granted columns": e["granted_columns"],
        }
        for e in entries
    ]
    Output(as_json).table(
        "catalog",
        rows,
        ["dataset", "name", "rows (rounded)", "tiers", "purposes", "granted columns"],
        raw=entries,
    )


@datasets_app.command("mock")
def datasets_mock(
    dataset_id: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write the rows to")],
    token: Token,
    rows: Annotated[int, typer.Option(help="How many mock rows")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same rows")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet")] = "csv",
    url: Url = DEFAULT_URL,
) -> None:
    """Tier 1: download mock rows generated from the declaration only (free)."""
    with connect(url, token) as c:
        output.write_bytes(c.mock(dataset_id, rows=rows, seed=seed, fmt=fmt))
    written = Msg(
        "{rows} mock rows (seed {seed}) written to {path}", rows=rows, seed=seed, path=str(output)
    )
    console.print(translate(written))


@datasets_app.command("list")
def datasets_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Your datasets (enterprise), or those granted to you (provider), with their version."""
    with connect(url, token) as c:
        rows = c.list_datasets()
    flat = [
        {
            "id": d["id"],
            "name": d["name"],
            "columns": len(d["columns"]),
            "version": (d.get("latest_version") or {}).get("version"),
        }
        for d in rows
    ]
    Output(as_json).table("datasets", flat, ["id", "name", "columns", "version"], raw=rows)


@datasets_app.command("show")
def datasets_show(
    dataset_id: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """A dataset's declaration: its columns, types, classes and bounds."""
    with connect(url, token) as c:
        ds = c.get_dataset(dataset_id)
    out = Output(as_json)
    if as_json:
        out.data(ds)
        return
    out.say(f"[bold]{ds['name']}[/bold] ({ds['id']})")
    out.table("columns", ds["columns"], ["name", "type", "class", "lower", "upper", "categories"])


# -- grants -------------------------------------------------------------------------------------
GRANT_COLUMNS = [
    "id",
    "provider_id",
    "dataset_ids",
    "tiers",
    "purposes",
    "valid_until",
    "revoked_at",
    "epsilon_remaining",
]


def _grant_row(g: dict[str, Any]) -> dict[str, Any]:
    return g | {"epsilon_remaining": g["budget"]["epsilon_remaining"]}


@grants_app.command("create")
def grants_create(
    provider: Annotated[str, typer.Option(help="Provider id")],
    dataset: Annotated[list[str], typer.Option(help="Dataset id (repeat)")],
    column: Annotated[list[str], typer.Option(help="Column (repeat)")],
    purpose: Annotated[list[str], typer.Option(help="Purpose (repeat)")],
    epsilon: Annotated[float, typer.Option(help="Privacy budget epsilon")],
    token: Token,
    tier: Annotated[list[int], typer.Option(help="Tier 0-5 (repeat)")] = [3],  # noqa: B006
    days: Annotated[int, typer.Option(help="Valid for this many days from now")] = 30,
    delta: Annotated[float, typer.Option(help="Privacy budget delta")] = 0.0,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Grant a provider datasets, columns, tiers, purposes and a privacy budget."""
    until = datetime.now(UTC) + timedelta(days=days)
    with connect(url, token) as c:
        grant = c.create_grant(provider, dataset, column, tier, purpose, until, epsilon, delta)
    Output(as_json).record("grant created", _grant_row(grant) if not as_json else grant)


@grants_app.command("list")
def grants_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Your grants (enterprise: given; provider: received), with their remaining budget."""
    with connect(url, token) as c:
        rows = c.list_grants()
    Output(as_json).table("grants", [_grant_row(g) for g in rows], GRANT_COLUMNS, raw=rows)


@grants_app.command("show")
def grants_show(
    grant_id: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """A grant: datasets, columns, tiers, purposes, validity and budget."""
    with connect(url, token) as c:
        grant = c.get_grant(grant_id)
    Output(as_json).record(f"grant {grant_id}", grant)


@grants_app.command("revoke")
def grants_revoke(
    grant_id: str,
    token: Token,
    reason: Annotated[str | None, typer.Option(help="Why (goes into the audit log)")] = None,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a grant at once; its queued jobs are cancelled."""
    with connect(url, token) as c:
        Output(as_json).record("grant revoked", c.revoke_grant(grant_id, reason))


@grants_app.command("change")
def grants_change(
    grant_id: str,
    token: Token,
    reason: Annotated[str, typer.Option(help="Why (goes into the audit log)")],
    column: Annotated[list[str] | None, typer.Option(help="Keep only these columns")] = None,
    tier: Annotated[list[int] | None, typer.Option(help="Keep only these tiers")] = None,
    purpose: Annotated[list[str] | None, typer.Option(help="Keep only these purposes")] = None,
    epsilon: Annotated[float | None, typer.Option(help="Lower the epsilon budget")] = None,
    extend_days: Annotated[int | None, typer.Option(help="Valid until N days from now")] = None,
    min_group_size: Annotated[int | None, typer.Option(help="Raise the tier-2 cell floor")] = None,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Narrow a grant (columns, tiers, purposes, budget, cell floor) or extend its validity."""
    changes: dict[str, Any] = {
        "columns": column,
        "tiers": tier,
        "purposes": purpose,
        "epsilon": epsilon,
        "min_group_size": min_group_size,
    }
    if extend_days is not None:
        changes["valid_until"] = datetime.now(UTC) + timedelta(days=extend_days)
    with connect(url, token) as c:
        grant = c.change_grant(
            grant_id, reason, **{k: v for k, v in changes.items() if v is not None}
        )
    Output(as_json).record("grant changed", _grant_row(grant) if not as_json else grant)


# -- jobs ------------------------------------------------------------------------------------------
def _query(
    count: bool,
    total: list[str] | None,
    mean: list[str] | None,
    median: list[str] | None,
    group_by: list[str] | None,
    query_file: Path | None,
) -> dict[str, Any]:
    if query_file is not None:
        document: dict[str, Any] = read_json(query_file)
        return document
    aggregates: list[dict[str, Any]] = [{"kind": "count"}] if count else []
    aggregates += [{"kind": "sum", "column": c} for c in total or []]
    aggregates += [{"kind": "mean", "column": c} for c in mean or []]
    aggregates += [{"kind": "median", "column": c} for c in median or []]
    if not aggregates:
        raise typer.BadParameter(
            translate(
                Msg(
                    "ask for at least one of --count, --sum COL, --mean COL, --median COL, "
                    "or give --query FILE (see docs/query-examples.md)"
                )
            )
        )
    return {"aggregates": aggregates, "group_by": group_by or []}


QueryFile = Annotated[Path | None, typer.Option("--query", help="Query document (JSON file)")]
Count = Annotated[bool, typer.Option("--count", help="Count rows")]
Sums = Annotated[list[str] | None, typer.Option("--sum", help="Sum a column (repeat)")]
Means = Annotated[list[str] | None, typer.Option("--mean", help="Mean of a column (repeat)")]
Medians = Annotated[list[str] | None, typer.Option("--median", help="Median of a column (repeat)")]
GroupBy = Annotated[list[str] | None, typer.Option("--group-by", help="Group key column (repeat)")]
Sql = Annotated[
    str | None,
    typer.Option("--sql", help="Tier 3: the query as SQL (docs/sql.md); FROM names the dataset"),
]
Dataset = Annotated[str | None, typer.Option(help="Dataset id (with --sql: FROM names it)")]


def _no_sql_with(sql: str | None, dataset: str | None, document_given: bool) -> None:
    if sql is not None and document_given:
        raise typer.BadParameter(
            translate(Msg("give --sql or the query options (--count, --query, ...), not both"))
        )
    if sql is None and dataset is None:
        raise typer.BadParameter(translate(Msg("--dataset is required without --sql")))


@jobs_app.command("submit")
def jobs_submit(
    purpose: Annotated[str, typer.Option(help="Purpose (must be granted)")],
    token: Token,
    dataset: Dataset = None,
    epsilon: Annotated[float, typer.Option(help="Privacy loss to spend (tier 3)")] = 0.0,
    delta: Annotated[float, typer.Option(help="Delta to spend (tier 3, key selection)")] = 0.0,
    tier: Annotated[int, typer.Option(help="2: SDC-checked table; 3: DP query")] = 3,
    count: Count = False,
    total: Sums = None,
    mean: Means = None,
    median: Medians = None,
    group_by: GroupBy = None,
    query_file: QueryFile = None,
    sql: Sql = None,
    wait: Annotated[bool, typer.Option(help="Wait for the result and print it")] = True,
    plot: Plot = None,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Submit a job (tier 3 DP query, or tier 2 table) and, by default, wait for its result."""
    _no_sql_with(sql, dataset, bool(count or total or mean or median or group_by or query_file))
    with connect(url, token) as c:
        if sql is not None:
            job = c.submit_sql(sql, purpose, epsilon=epsilon, delta=delta, dataset_id=dataset)
        else:
            assert dataset is not None
            document = _query(count, total, mean, median, group_by, query_file)
            job = c.submit_query(
                dataset, purpose, document, tier=tier, epsilon=epsilon, delta=delta
            )
        if not wait:
            Output(as_json).record("job queued", job)
            return
        with console.status(_job_status(job), spinner="dots") as status:
            final = c.wait_for_job(job["id"], on_status=lambda j: status.update(_job_status(j)))
        if final["status"] != "released":
            Output(as_json).record(f"job {final['status']}", final)
            raise typer.Exit(1)
        result = c.get_result(job["id"])
        print_result(result, Output(as_json))
        write_result_plot(result, plot, Output(as_json))


@jobs_app.command("explain")
def jobs_explain(
    sql: Annotated[str, typer.Option("--sql", help="The query as SQL (docs/sql.md)")],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Show the dataset and the JSON query document an SQL query translates to; submits
    nothing and spends nothing."""
    with connect(url, token) as c:
        answer = c.translate_sql(sql)
    out = Output(as_json)
    if as_json:
        out.data(answer)
        return
    out.say(Msg("dataset: {dataset_id}", dataset_id=answer["dataset_id"]))
    console.print_json(data=answer["query"])


@jobs_app.command("preview")
def jobs_preview(
    purpose: Annotated[str, typer.Option(help="Purpose (must be granted)")],
    token: Token,
    dataset: Dataset = None,
    epsilon: Annotated[float, typer.Option(help="Privacy loss it would spend (tier 3)")] = 0.0,
    delta: Annotated[float, typer.Option(help="Delta it would spend")] = 0.0,
    tier: Annotated[int, typer.Option(help="2: perturbed SDC table; 3: DP query")] = 3,
    count: Count = False,
    total: Sums = None,
    mean: Means = None,
    median: Medians = None,
    group_by: GroupBy = None,
    query_file: QueryFile = None,
    sql: Sql = None,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Show what a tier-3 query (or a tier-2 table) would cost and its expected error;
    spends nothing."""
    _no_sql_with(sql, dataset, bool(count or total or mean or median or group_by or query_file))
    with connect(url, token) as c:
        if sql is not None:
            answer = c.preview_sql(sql, purpose, epsilon=epsilon, delta=delta)
        else:
            assert dataset is not None
            document = _query(count, total, mean, median, group_by, query_file)
            answer = c.preview(dataset, purpose, document, epsilon=epsilon, delta=delta, tier=tier)
    out = Output(as_json)
    if as_json:
        out.data(answer)
        return
    if not answer["allowed"]:
        out.say(
            Msg(
                "[red]this query would be denied:[/red] {reasons}",
                reasons="; ".join(answer["reasons"]),
            )
        )
        raise typer.Exit(1)
    if answer.get("table") is not None:
        _print_table_preview(answer["table"], out)
        return
    out.table(
        Msg(
            "preview: epsilon {epsilon}, delta {delta} (nothing spent)",
            epsilon=f"{answer['epsilon']:g}",
            delta=f"{answer['delta']:g}",
        ),
        answer["aggregates"],
        ["aggregate", "noise_scale", "ci95_half_width", "note"],
    )
    for note in answer.get("notes") or []:
        out.say(Msg("note: {note}", note=note))


def print_result(result: dict[str, Any], out: Output) -> None:
    if out.as_json:
        out.data(result)
        return
    if result.get("cells") is not None:
        _print_table_result(result, out)
        return
    if result.get("tier") == 5:
        out.record(
            f"output of {result['job_id']} (checks: {result['checks']['status']}, epsilon "
            f"{result['epsilon']:g})",
            {"output": json.dumps(result["output"]), "code_sha256": result["code_sha256"],
             **({"released_by_hand": result["checks"]["released_by_hand"]}
                if "released_by_hand" in result["checks"] else {})},
        )  # fmt: skip
        return
    if result.get("card") is not None:
        card = result["card"]
        out.record(
            f"model of {result['job_id']} (epsilon {result['epsilon']:g}, delta "
            f"{result['delta']:g})",
            {
                k: card.get(k)
                for k in (
                    "family",
                    "hidden_sizes",
                    "features",
                    "target",
                    "epochs",
                    "noise_multiplier",
                    "metrics",
                )
            },
        )
        out.say(f"download it with `veil jobs model {result['job_id']} -o DIR`")
        return
    rows = []
    for row in result["rows"]:
        for v in row["values"]:
            lo, hi = v["ci95"]
            rows.append(
                {
                    "group": _group(row["group"]),
                    "statistic": v["aggregate"],
                    "value": v["value"],
                    "95% interval": f"{lo:,.4g} .. {hi:,.4g}",
                    "noise scale": v["noise_scale"],
                }
            )
    out.table(
        Msg(
            "result of {job} (epsilon {epsilon}, {mechanism})",
            job=result["job_id"],
            epsilon=f"{result['epsilon']:g}",
            mechanism=result["mechanism"],
        ),
        rows,
        ["group", "statistic", "value", "95% interval", "noise scale"],
    )
    budget = result["remaining_budget"]
    out.say(
        Msg(
            "remaining budget: epsilon {left} of {total}",
            left=f"{budget['epsilon_remaining']:g}",
            total=f"{budget['epsilon']:g}",
        )
    )


def _group(group: dict[str, str] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in group.items()) if group else "all"


def _print_table_preview(table: dict[str, Any], out: Output) -> None:
    rules = table["rules"]
    out.table(
        f"tier-2 preview: cells under {rules['min_count']} units or dominated suppressed; "
        "the others perturbed by the cell-key method (nothing spent)",
        table["aggregates"],
        ["aggregate", "max_error", "mean_abs_error", "note"],
    )
    for note in [table["review"], *table["notes"]]:
        out.say(f"note: {note}")


def _print_table_result(result: dict[str, Any], out: Output) -> None:
    labels = sorted({label for cell in result["cells"] for label in cell["values"]})
    rows = [
        {
            "group": _group(cell["key"]),
            **cell["values"],
            "status": cell["status"],
            "why": "; ".join(cell["reasons"]),
        }
        for cell in result["cells"]
    ]
    rules = result["rules"]
    out.table(
        f"result of {result['job_id']} (tier 2: cells under {rules['min_count']} units or "
        "dominated suppressed, the others perturbed by the cell-key method)",
        rows,
        ["group", *labels, "status", "why"],
    )


@jobs_app.command("list")
def jobs_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Your jobs (provider), or the jobs on your data (enterprise)."""
    with connect(url, token) as c:
        Output(as_json).table(
            "jobs",
            c.list_jobs(),
            ["id", "dataset_id", "purpose", "epsilon", "status", "created_at"],
        )


@jobs_app.command("show")
def jobs_show(job_id: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """A job's status, tier, purpose and cost."""
    with connect(url, token) as c:
        Output(as_json).record(f"job {job_id}", c.get_job(job_id))


@jobs_app.command("result")
def jobs_result(
    job_id: str, token: Token, plot: Plot = None, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Print a released result with its accuracy and the grant's remaining budget."""
    with connect(url, token) as c:
        result = c.get_result(job_id)
    print_result(result, Output(as_json))
    write_result_plot(result, plot, Output(as_json))


# -- audit (through the API) -----------------------------------------------------------------------
def parse_time(text: str | None, option: str) -> datetime | None:
    """An ISO 8601 time from the command line; without a zone it is UTC."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            translate(
                Msg(
                    "'{text}' is not an ISO 8601 time; write e.g. 2026-11-01 or "
                    "2026-11-01T08:00:00Z",
                    text=text,
                )
            ),
            param_hint=option,
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


Since = Annotated[str | None, typer.Option(help="From this time (ISO 8601; UTC if no zone)")]
Until = Annotated[str | None, typer.Option(help="Before this time (ISO 8601; UTC if no zone)")]


@audit_app.command("events")
def audit_events(
    token: Token,
    url: Url = DEFAULT_URL,
    since: Since = None,
    until: Until = None,
    tenant: Annotated[str | None, typer.Option(help="Enterprise id")] = None,
    actor: Annotated[str | None, typer.Option(help="Principal id of who acted")] = None,
    role: Annotated[str | None, typer.Option(help="Role of who acted")] = None,
    action: Annotated[str | None, typer.Option(help="e.g. job.released, or job.* ")] = None,
    outcome: Annotated[str | None, typer.Option(help="ok, denied or failed")] = None,
    resource: Annotated[str | None, typer.Option(help="e.g. job:job_12ab, or dataset:*")] = None,
    limit: Annotated[int, typer.Option(help="At most this many events")] = 50,
    before_seq: Annotated[int | None, typer.Option(help="Page on: events before this")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Search the audit log, newest first (operators and security officers)."""
    with connect(url, token) as c:
        events = c.audit_events(
            before_seq,
            limit,
            since=parse_time(since, "--since"),
            until=parse_time(until, "--until"),
            tenant_id=tenant,
            actor_id=actor,
            role=role,
            action=action,
            outcome=outcome,
            resource=resource,
        )
    out = Output(as_json)
    out.table(
        "audit events",
        events,
        ["seq", "at", "actor_role", "actor_id", "tenant_id", "action", "outcome", "resource"],
    )
    if len(events) == limit:
        out.say(Msg("more: --before-seq {seq}", seq=events[-1]["seq"]))


@audit_app.command("export")
def audit_export(
    output: Annotated[Path, typer.Option(help="JSON Lines file to write")],
    token: Token,
    url: Url = DEFAULT_URL,
    from_seq: Annotated[int | None, typer.Option(help="First event (default: the first)")] = None,
    to_seq: Annotated[int | None, typer.Option(help="Last event (default: the newest)")] = None,
    since: Since = None,
    until: Until = None,
) -> None:
    """Export a range with its signed manifest and checkpoints, to verify offline."""
    partial = output.with_name(output.name + ".partial")
    try:
        with connect(url, token) as c, open(partial, "wb") as out:
            size = c.audit_export(
                out,
                from_seq=from_seq,
                to_seq=to_seq,
                since=parse_time(since, "--since"),
                until=parse_time(until, "--until"),
            )
    except BaseException:
        partial.unlink(missing_ok=True)  # never leave half an export under any name
        raise
    partial.replace(output)
    manifest = json.loads(output.open("rb").readline())
    console.print(
        f"exported events {manifest['from_seq']}-{manifest['to_seq']} "
        f"({manifest['events']} shown, {manifest['elided']} elided, "
        f"{len(manifest['checkpoints'])} checkpoints; {size:,} bytes) to {output}; "
        f"verify with: veil audit verify --offline {output} --public-key KEY",
        highlight=False,
    )


@audit_app.command("public-key")
def audit_public_key(
    output: Annotated[Path, typer.Option(help="PEM file to write")],
    token: Token,
    url: Url = DEFAULT_URL,
) -> None:
    """Write every version of the audit signing key's public half, to verify offline."""
    with connect(url, token) as c:
        output.write_text(c.audit_public_key())
    console.print(translate(Msg("public key written to {path}", path=str(output))), highlight=False)


@audit_app.command("checkpoint")
def audit_checkpoint(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Sign the audit chain's head now."""
    with connect(url, token) as c:
        cp = c.checkpoint()
    empty = {"note": translate(N_("the audit log is empty"))}
    Output(as_json).record("checkpoint signed", cp or empty)


@jobs_app.command("train")
def jobs_train(
    dataset: Annotated[str, typer.Option(help="Dataset id")],
    purpose: Annotated[str, typer.Option(help="Purpose (must be granted)")],
    spec: Annotated[Path, typer.Option(help="Training document (JSON; see docs/training.md)")],
    epsilon: Annotated[float, typer.Option(help="Target epsilon (debited before training)")],
    delta: Annotated[float, typer.Option(help="Target delta (below 1/rows)")],
    token: Token,
    preview: Annotated[bool, typer.Option(help="Only show cost and noise; spend nothing")] = False,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Train a model with DP-SGD (tier 4), showing progress; or --preview its cost first."""
    document = read_json(spec)
    out = Output(as_json)
    with connect(url, token) as c:
        if preview:
            answer = c.preview_training(dataset, purpose, document, epsilon=epsilon, delta=delta)
            if not answer["allowed"]:
                out.say("[red]this job would be denied:[/red] " + "; ".join(answer["reasons"]))
                raise typer.Exit(1)
            out.record("training preview (nothing spent)", answer["training"])
            return
        job = c.submit_training(dataset, purpose, document, epsilon=epsilon, delta=delta)
        with console.status(f"job {job['id']}: queued", spinner="dots") as status:
            final = c.wait_for_job(
                job["id"],
                timeout=3600,
                wait=2.0,  # the epochs shown as they come: a wait answers at least every 2 s
                on_status=lambda j: status.update(_training_status(j)),
            )
        if final["status"] != "released":
            out.record(f"job {final['status']}", final)
            raise typer.Exit(1)
        print_result(c.get_result(job["id"]), out)


def _job_status(job: dict[str, Any]) -> str:
    """``job job_…: running``, for the spinner."""
    return translate(Msg("job {id}: {status}", id=job["id"], status=job["status"]))


def _training_status(job: dict[str, Any]) -> str:
    progress = job.get("progress") or {}
    if job["status"] == "running" and progress:
        loss = f", loss {progress['loss']:.4f}" if "loss" in progress else ""
        return f"job {job['id']}: epoch {progress['epoch']} of {progress['epochs']}{loss}"
    return f"job {job['id']}: {job['status']}"


@jobs_app.command("cancel")
def jobs_cancel(
    job_id: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Cancel a queued job, or ask a running one to stop (the budget stays spent)."""
    with connect(url, token) as c:
        Output(as_json).record(f"job {job_id}", c.cancel_job(job_id))


@jobs_app.command("model")
def jobs_model(
    job_id: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write to")],
    token: Token,
    url: Url = DEFAULT_URL,
) -> None:
    """Download a trained model: model.safetensors and model-card.json."""
    with connect(url, token) as c:
        weights, card = c.download_model(job_id)
    output.mkdir(parents=True, exist_ok=True)
    (output / "model.safetensors").write_bytes(weights)
    (output / "model-card.json").write_text(json.dumps(card, indent=2) + "\n")
    console.print(
        translate(
            Msg(
                "model and card written to {path} ({size} bytes of weights)",
                path=str(output),
                size=f"{len(weights):,}",
            )
        )
    )


# -- tier 5: reviewed code -------------------------------------------------------------------
CODE_COLUMNS = ["id", "function_name", "dataset_id", "purpose", "status", "columns", "created_at"]
Reason = Annotated[str, typer.Option(help="Why (goes into the audit log)")]


@code_app.command("try")
def code_try(
    source: Annotated[Path, typer.Argument(help="The syft function's .py file")],
    dataset: Annotated[str, typer.Option(help="Dataset id (its mock is downloaded)")],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Run a syft function here, through PySyft, on the dataset's mock (spends nothing)."""
    with connect(url, token) as c:
        value = c.try_code_on_mock(dataset, source.read_text(encoding="utf-8"))
    if as_json:
        Output(True).data(value)
    else:
        Output(False).say(f"output on the mock:\n{value}")


@code_app.command("submit")
def code_submit(
    source: Annotated[Path, typer.Argument(help="The syft function's .py file")],
    dataset: Annotated[str, typer.Option(help="Dataset id")],
    purpose: Annotated[str, typer.Option(help="A purpose of your tier-5 grant")],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Submit a syft function for the enterprise's review (it is run on the mock first)."""
    with connect(url, token) as c:
        code = c.submit_code(dataset, purpose, source.read_text(encoding="utf-8"))
    view = code if as_json else {"id": code["id"], **_code_view(code)}
    Output(as_json).record(f"code request {code['id']} ({code['status']})", view)


def _code_view(code: dict[str, Any]) -> dict[str, Any]:
    view = {k: code[k] for k in ("function_name", "sha256", "columns", "status")}
    view["mock_output"] = json.dumps(code["mock_output"]["value"])
    view["mock_checks"] = code["mock_output"]["checks"]["status"]
    if code.get("review_reason"):
        view["review_reason"] = code["review_reason"]
    return view


@code_app.command("list")
def code_list(
    token: Token,
    status: Annotated[str | None, typer.Option(help="pending, approved or denied")] = None,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Your code requests (provider), or those on your data (enterprise)."""
    with connect(url, token) as c:
        Output(as_json).table("code requests", c.list_code(status), CODE_COLUMNS)


@code_app.command("show")
def code_show(code_id: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """The source, the columns it reads, its output on the mock, and the review."""
    with connect(url, token) as c:
        code = c.get_code(code_id)
    out = Output(as_json)
    if as_json:
        out.data(code)
        return
    out.record(f"code request {code_id}", _code_view(code))
    out.say(code["source"])


@code_app.command("approve")
def code_approve(
    code_id: str, reason: Reason, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Approve this exact source (its SHA-256 is pinned)."""
    with connect(url, token) as c:
        Output(as_json).record("approved", _code_view(c.approve_code(code_id, reason)))


@code_app.command("deny")
def code_deny(
    code_id: str, reason: Reason, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Deny it: it never runs on the data."""
    with connect(url, token) as c:
        Output(as_json).record("denied", _code_view(c.deny_code(code_id, reason)))


@code_app.command("run")
def code_run(
    code_id: str,
    dataset: Annotated[str, typer.Option(help="Dataset id")],
    purpose: Annotated[str, typer.Option(help="The purpose it was approved for")],
    token: Token,
    epsilon: Annotated[float, typer.Option(help="Budget for its veil_dp calls")] = 0.0,
    wait: Annotated[bool, typer.Option(help="Wait for the result")] = True,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Run an approved code request on the data (tier 5); print its checked output."""
    out = Output(as_json)
    with connect(url, token) as c:
        job = c.submit_code_job(dataset, purpose, code_id, epsilon)
        if wait:
            job = c.wait_for_job(job["id"], timeout=3600)
        if job["status"] == "released":
            print_result(c.get_result(job["id"]), out)
            return
    out.record(f"job {job['id']} ({job['status']})", job)
    if job["status"] == "held":
        out.say("the output checks held the output: its enterprise may release or reject it")
    if job["status"] in ("failed", "denied"):
        raise typer.Exit(1)


@code_app.command("held")
def code_held(job_id: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """A held tier-5 output and why it was held (enterprise)."""
    with connect(url, token) as c:
        held = c.held_output(job_id)
    Output(as_json).record(f"held output of {job_id}", {
        "output": json.dumps(held["output"]), "reasons": held["checks"]["reasons"],
    })  # fmt: skip


@code_app.command("release")
def code_release(
    job_id: str, reason: Reason, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Release a held output by hand (enterprise)."""
    with connect(url, token) as c:
        Output(as_json).record(f"job {job_id}", c.release_held(job_id, reason))


@code_app.command("reject")
def code_reject(
    job_id: str, reason: Reason, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Reject a held output (enterprise): it is never released."""
    with connect(url, token) as c:
        Output(as_json).record(f"job {job_id}", c.reject_held(job_id, reason))
