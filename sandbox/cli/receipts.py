"""``veil receipts``: fetch a signed usage receipt (JSON and HTML), verify one offline."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from i18n import Msg
from i18n.catalog import translate
from keys import InvalidSignature
from sandbox.cli.app import receipts_app
from sandbox.cli.output import Output, err_console
from sandbox.cli.remote import DEFAULT_URL, JsonOpt, Token, Url, connect
from sandbox.oversight import receipts

Moment = Annotated[
    str | None,
    typer.Option(
        help="ISO 8601 date or time, e.g. 2026-11-01 or 2026-11-01T08:00:00+01:00 "
        "(UTC when no zone is given)."
    ),
]


def _moment(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter("expected an ISO 8601 date or time", param_hint=name) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _summary(receipt: dict[str, Any]) -> dict[str, Any]:
    totals = receipt.get("totals", {})
    period = receipt.get("period", {})
    return {
        "receipt": receipt.get("id"),
        "enterprise": receipt.get("enterprise", {}).get("name"),
        "provider": receipt.get("provider", {}).get("name"),
        "period": f"{period.get('since')} to {period.get('until')}",
        "jobs": totals.get("jobs"),
        "by_status": totals.get("by_status"),
        "epsilon_charged": totals.get("epsilon_charged"),
        "results_released": totals.get("results_released"),
        "approvals": totals.get("approvals"),
        "audit_anchor": f"event {receipt.get('audit_anchor', {}).get('seq')}",
        "key_version": receipt.get("key_version"),
    }


@receipts_app.command("create")
def receipts_create(
    provider: Annotated[str, typer.Option("--provider", help="The provider's id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Write the signed JSON here.")],
    token: Token,
    url: Url = DEFAULT_URL,
    since: Moment = None,
    until: Moment = None,
    enterprise: Annotated[
        str | None, typer.Option("--enterprise", help="Enterprise id (officers, operators).")
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the readable page here.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Ask the server for a signed usage receipt (default period: the last 30 days)."""
    with connect(url, token) as c:
        receipt = c.usage_receipt(
            provider,
            since=_moment(since, "--since"),
            until=_moment(until, "--until"),
            enterprise_id=enterprise,
        )
    output.write_text(receipts.dumps(receipt))
    if html is not None:  # the page of this very receipt (same id and signature)
        html.write_text(receipts.render_html(receipt))
    out = Output(as_json)
    out.record("usage receipt", _summary(receipt) | {"written_to": str(output)})


@receipts_app.command("verify")
def receipts_verify(
    file: Annotated[Path, typer.Argument(help="The receipt's JSON (or its HTML page).")],
    public_key: Annotated[
        Path,
        typer.Option("--public-key", help="PEM file(s) from 'veil keys public-key'."),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Check a receipt's signature offline; exit 1 if it was altered or cannot be checked."""
    receipt = receipts.load_receipt(file.read_text())
    keys = receipts.load_public_keys(public_key.read_text())
    out = Output(as_json)
    try:
        receipts.verify_receipt(receipt, keys)
    except (InvalidSignature, receipts.InvalidReceipt) as exc:
        problem = (
            "the signature does not match: the receipt was altered after it was signed, "
            "or signed by another key"
            if isinstance(exc, InvalidSignature)
            else str(exc)
        )
        if as_json:
            out.data({"ok": False, "problem": problem})
        said = translate(Msg("[red]receipt NOT valid:[/red] {problem}", problem=problem))
        err_console.print(said, highlight=False)
        raise typer.Exit(1) from None
    if as_json:
        out.data({"ok": True, **_summary(receipt)})
        return
    out.record("receipt verified: signature valid, content unaltered", _summary(receipt))
