"""``veil audit keys``: the key server's audit log per tenant, next to Veil's events.

Through the API by default (``--token``, ``--url``), or with ``--local`` straight from
this machine's data directory (like ``veil audit verify``).  Exits 1 when an operation on
keys, policies or authentication is unexplained.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from sandbox.cli.app import audit_app
from sandbox.cli.output import Output, console
from sandbox.cli.remote import DEFAULT_URL, JsonOpt, Url, connect, parse_time

OptionalToken = Annotated[
    str | None,
    typer.Option("--token", envvar="VEIL_TOKEN", help="Your API token (not with --local)."),
]
Local = Annotated[
    bool,
    typer.Option("--local", help="Read this machine's Veil directly: no server, no token."),
]
Tenant = Annotated[str | None, typer.Option("--tenant", help="Only this enterprise (its id).")]
Since = Annotated[
    str | None, typer.Option("--since", help="From this time (ISO 8601; UTC if no zone).")
]


@audit_app.command("keys")
def audit_keys(
    token: OptionalToken = None,
    url: Url = DEFAULT_URL,
    tenant: Tenant = None,
    since: Since = None,
    local: Local = False,
    as_json: JsonOpt = False,
) -> None:
    """Key-server operations on keys, policies and logins per tenant (and the platform's)
    with the Veil record behind each; exit 1 if any is unexplained (operators and security
    officers)."""
    start = parse_time(since, "--since")
    if local:
        report = _local_report(tenant, start)
    elif token:
        with connect(url, token) as c:
            report = c.key_audit(tenant_id=tenant, since=start)
    else:
        raise typer.BadParameter("give --token (or VEIL_TOKEN), or --local", param_hint="--token")
    out = Output(as_json)
    if as_json:
        out.data(report)
    else:
        _print(report, out)
    if report["unexplained"]:
        raise typer.Exit(1)


def _local_report(tenant: str | None, since: datetime | None) -> dict[str, Any]:
    """The same document the API returns, computed from this machine's Veil.

    Not ``open_veil``: that would also end jobs it takes for interrupted, and a
    server may be running them right now.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from policies.errors import Conflict
    from sandbox.api.routes_keyaudit import KeyAuditOut
    from sandbox.config.settings import Settings
    from sandbox.oversight.keyaudit import key_audit
    from sandbox.runtime.keyserver import key_service
    from sandbox.runtime.veil import Veil
    from sandbox.store.database import Database, is_initialised

    settings = Settings()
    db = Database(settings.db_url)
    try:
        try:
            ready = is_initialised(db.engine)
        except SQLAlchemyError:
            ready = False
        if not ready:
            raise Conflict("this machine has no Veil database yet: run `veil init` first")
        with key_service(settings) as keys:
            report = key_audit(Veil(settings, db, keys), None, tenant_id=tenant, since=since)
            document = KeyAuditOut.model_validate(report, from_attributes=True)
    finally:
        db.dispose()
    return document.model_dump(mode="json")


def _print(report: dict[str, Any], out: Output) -> None:
    for note in report["notes"]:
        console.print(f"[yellow]warning:[/yellow] {note}", highlight=False)
    for tenant in report["tenants"]:
        title = (
            f"{tenant['name']} ({tenant['slug']}, {tenant['tenant_id']}): key operations "
            f"{_counts(tenant['counts'])}; {tenant['explained']} explained, "
            f"{tenant['unexplained']} unexplained"
        )
        if tenant["truncated"]:
            title += " (newest 1000 listed; narrow with --since)"
        out.table(title, _timeline(tenant), ["time", "source", "what", "object", "because"])
    platform = report.get("platform")
    if platform is not None:
        title = (
            f"platform (Veil's base namespace and above): {_counts(platform['counts'])}; "
            f"{platform['explained']} explained, {platform['unexplained']} unexplained"
        )
        out.table(title, _timeline(platform), ["time", "source", "what", "object", "because"])
    if report["unexplained"]:
        rows = [
            op | {"time": _time(op["at"]), "tenant_id": op["tenant_id"] or "platform"}
            for op in report["unexplained"]
        ]
        out.table(
            "[red]unexplained[/red]",
            rows,
            ["tenant_id", "time", "operation", "object", "path", "remote_address", "actor"],
        )
        console.print(
            f"[red]{len(report['unexplained'])} operation(s) on keys, policies or logins "
            "with no Veil record to explain them[/red]",
            highlight=False,
        )
    else:
        out.say("[green]every operation on keys, policies and logins is explained[/green]")
    if report.get("unattributed"):
        out.say(f"{report['unattributed']} data-key operation(s) belong to no known enterprise")


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items())) or "none"


def _timeline(tenant: dict[str, Any]) -> list[dict[str, Any]]:
    """Key operations and Veil's events of one tenant (or the platform), in time order."""
    rows = [
        {
            "at": datetime.fromisoformat(op["at"]),
            "source": "key server",
            "what": op["operation"] + ("" if op["ok"] else " (refused)"),
            "object": op["object"] or op.get("path"),
            "because": _because(op),
        }
        for op in tenant["operations"]
    ]
    rows += [
        {
            "at": datetime.fromisoformat(e["at"]),
            "source": "veil",
            "what": e["action"] + ("" if e["outcome"] == "ok" else f" ({e['outcome']})"),
            "object": e["resource"],
            "because": f"event {e['seq']}",
        }
        for e in tenant.get("events", [])
    ]
    rows.sort(key=lambda row: row["at"])
    for row in rows:
        row["time"] = _time(row.pop("at"))
    return rows


def _time(value: datetime | str) -> str:
    """Milliseconds, UTC, the same for the key server's times and Veil's."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _because(op: dict[str, Any]) -> str:
    why = op["explained_by"]
    if why is not None:
        seq = f" (event {why['seq']})" if why["seq"] is not None else ""
        return f"{why['kind']} {why['id']}{seq}"
    return "[red]UNEXPLAINED[/red]" if op["alarming"] else "-"
