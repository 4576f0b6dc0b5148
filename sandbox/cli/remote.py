"""Commands that talk to a running Veil server through the Python client."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

from sandbox.cli.app import (
    audit_app,
    datasets_app,
    enterprises_app,
    grants_app,
    jobs_app,
    officers_app,
    providers_app,
    tokens_app,
)
from sandbox.cli.output import Output, console
from sandbox.client import VeilClient

Url = Annotated[str, typer.Option("--url", envvar="VEIL_URL", help="Veil server URL.")]
Token = Annotated[str, typer.Option("--token", envvar="VEIL_TOKEN", help="Your API token.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DEFAULT_URL = "http://127.0.0.1:8000"


def connect(url: str, token: str) -> VeilClient:
    return VeilClient(url, token)


PRINCIPAL_COLUMNS = ["id", "name", "slug", "status", "created_at"]


# -- operator ------------------------------------------------------------------------------
@enterprises_app.command("create")
def enterprises_create(
    name: str,
    slug: Annotated[str, typer.Option(help="e.g. acme-metal")],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Create an enterprise; its key-server namespace and key are provisioned."""
    with connect(url, token) as c:
        Output(as_json).record("enterprise created", c.create_enterprise(name, slug))


@enterprises_app.command("list")
def enterprises_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    with connect(url, token) as c:
        Output(as_json).table("enterprises", c.list_enterprises(), PRINCIPAL_COLUMNS)


@providers_app.command("create")
def providers_create(
    name: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    with connect(url, token) as c:
        Output(as_json).record("provider created", c.create_provider(name))


@providers_app.command("list")
def providers_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
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


@tokens_app.command("issue")
def tokens_issue(
    principal_id: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Issue an API token for a principal; it is printed once."""
    with connect(url, token) as c:
        new = c.issue_token(principal_id)
    if as_json:
        Output(True).data({"principal_id": principal_id, "token": new})
    else:
        console.print(new, highlight=False)


# -- datasets --------------------------------------------------------------------------------
@datasets_app.command("create")
def datasets_create(
    declaration: Annotated[Path, typer.Argument(help="JSON: name, columns, privacy_unit")],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Declare a dataset from a JSON file (see docs/datasets.md)."""
    spec = json.loads(declaration.read_text())
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
    dataset_id: str, file: Path, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Upload a CSV or Parquet file as the dataset's next version (shows progress)."""
    with (
        connect(url, token) as c,
        Progress(
            TextColumn("uploading"),
            BarColumn(),
            DownloadColumn(),
            disable=as_json,
            console=console,
        ) as bar,
    ):
        task = bar.add_task("upload", total=file.stat().st_size)
        version = c.upload_file(
            dataset_id, file, progress=lambda done, total: bar.update(task, completed=done)
        )
    Output(as_json).record(f"stored encrypted as version {version['version']}", version)


@datasets_app.command("list")
def datasets_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
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
    with connect(url, token) as c:
        rows = c.list_grants()
    Output(as_json).table("grants", [_grant_row(g) for g in rows], GRANT_COLUMNS, raw=rows)


@grants_app.command("show")
def grants_show(
    grant_id: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    with connect(url, token) as c:
        grant = c.get_grant(grant_id)
    Output(as_json).record(f"grant {grant_id}", grant)


@grants_app.command("revoke")
def grants_revoke(
    grant_id: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Revoke a grant at once (queued jobs under it will not release)."""
    with connect(url, token) as c:
        Output(as_json).record("grant revoked", c.revoke_grant(grant_id))


# -- jobs ------------------------------------------------------------------------------------------
def _aggregates(count: bool, total: list[str], mean: list[str]) -> list[dict[str, Any]]:
    aggregates: list[dict[str, Any]] = [{"kind": "count"}] if count else []
    aggregates += [{"kind": "sum", "column": c} for c in total]
    aggregates += [{"kind": "mean", "column": c} for c in mean]
    if not aggregates:
        raise typer.BadParameter("ask for at least one of --count, --sum COL, --mean COL")
    return aggregates


@jobs_app.command("submit")
def jobs_submit(
    dataset: Annotated[str, typer.Option(help="Dataset id")],
    purpose: Annotated[str, typer.Option(help="Purpose (must be granted)")],
    epsilon: Annotated[float, typer.Option(help="Privacy loss to spend")],
    token: Token,
    count: Annotated[bool, typer.Option("--count", help="Count rows")] = False,
    total: Annotated[list[str], typer.Option("--sum", help="Sum a column (repeat)")] = [],  # noqa: B006
    mean: Annotated[list[str], typer.Option("--mean", help="Mean of a column (repeat)")] = [],  # noqa: B006
    group_by: Annotated[str | None, typer.Option(help="Public column to group by")] = None,
    wait: Annotated[bool, typer.Option(help="Wait for the result and print it")] = True,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Submit a differentially private query (tier 3) and, by default, wait for its result."""
    with connect(url, token) as c:
        job = c.submit_job(dataset, purpose, epsilon, _aggregates(count, total, mean), group_by)
        if not wait:
            Output(as_json).record("job queued", job)
            return
        with console.status(f"job {job['id']}: queued", spinner="dots") as status:
            final = c.wait_for_job(
                job["id"], on_status=lambda j: status.update(f"job {j['id']}: {j['status']}")
            )
        if final["status"] != "released":
            Output(as_json).record(f"job {final['status']}", final)
            raise typer.Exit(1)
        print_result(c.get_result(job["id"]), Output(as_json))


def print_result(result: dict[str, Any], out: Output) -> None:
    if out.as_json:
        out.data(result)
        return
    rows = []
    for row in result["rows"]:
        for v in row["values"]:
            lo, hi = v["ci95"]
            rows.append(
                {
                    "group": row["group"],
                    "statistic": v["aggregate"],
                    "value": v["value"],
                    "95% interval": f"{lo:,.4g} .. {hi:,.4g}",
                    "noise scale": v["noise_scale"],
                }
            )
    out.table(
        f"result of {result['job_id']} (epsilon {result['epsilon']:g}, {result['mechanism']})",
        rows,
        ["group", "statistic", "value", "95% interval", "noise scale"],
    )
    budget = result["remaining_budget"]
    out.say(f"remaining budget: epsilon {budget['epsilon_remaining']:g} of {budget['epsilon']:g}")


@jobs_app.command("list")
def jobs_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    with connect(url, token) as c:
        Output(as_json).table(
            "jobs",
            c.list_jobs(),
            ["id", "dataset_id", "purpose", "epsilon", "status", "created_at"],
        )


@jobs_app.command("show")
def jobs_show(job_id: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    with connect(url, token) as c:
        Output(as_json).record(f"job {job_id}", c.get_job(job_id))


@jobs_app.command("result")
def jobs_result(
    job_id: str, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Print a released result with its accuracy and the grant's remaining budget."""
    with connect(url, token) as c:
        print_result(c.get_result(job_id), Output(as_json))


# -- audit (through the API) -----------------------------------------------------------------------
@audit_app.command("events")
def audit_events(
    token: Token,
    url: Url = DEFAULT_URL,
    limit: int = 50,
    before_seq: int | None = None,
    as_json: JsonOpt = False,
) -> None:
    """Audit events, newest first (operators and security officers)."""
    with connect(url, token) as c:
        Output(as_json).table(
            "audit events",
            c.audit_events(before_seq, limit),
            ["seq", "at", "actor_role", "action", "outcome", "resource"],
        )


@audit_app.command("checkpoint")
def audit_checkpoint(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Sign the audit chain's head now."""
    with connect(url, token) as c:
        cp = c.checkpoint()
    Output(as_json).record("checkpoint signed", cp or {"note": "the audit log is empty"})
