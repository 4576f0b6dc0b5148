"""``veil tokens``: issue (operator); list, rotate and revoke (your own; the operator: anyone's).

Through the API, like every command that acts as a principal.  A new token is printed
once on standard output (alone, for scripts); everything else goes to standard error or,
with ``--json``, into one JSON document.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from i18n import Msg
from i18n.catalog import translate
from sandbox.cli.app import tokens_app
from sandbox.cli.output import Output, console, err_console
from sandbox.cli.remote import DEFAULT_URL, JsonOpt, Token, Url, connect

TtlDays = Annotated[
    int | None,
    typer.Option(
        "--ttl-days",
        min=1,
        help="Days the new token works (default: the server's VEIL_TOKEN_TTL_DAYS, 90).",
    ),
]
TOKEN_COLUMNS = ["id", "principal", "created", "expires", "last used", "state"]


@tokens_app.command("issue")
def tokens_issue(
    principal_id: str,
    token: Token,
    url: Url = DEFAULT_URL,
    ttl_days: TtlDays = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue an API token for a principal (operator); it is printed once."""
    with connect(url, token) as c:
        new = c.new_token(principal_id, ttl_days)
    _print_new(new, as_json)


@tokens_app.command("list")
def tokens_list(
    token: Token,
    url: Url = DEFAULT_URL,
    principal: Annotated[
        str | None, typer.Option(help="Only this principal's tokens (operator)")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Your tokens (the operator: everyone's), newest first: when each expires, when it was
    last used, whether it still works. Secrets are never shown."""
    with connect(url, token) as c:
        rows = c.list_tokens(principal)
    shown = [
        {
            "id": r["id"],
            "principal": f"{r['principal_name']} ({r['principal_role']}, {r['principal_id']})",
            "created": _minute(r["created_at"]),
            "expires": _minute(r["expires_at"]),
            "last used": _minute(r["last_used_at"]),
            "state": r["state"] + (" (this one)" if r["current"] else ""),
        }
        for r in rows
    ]
    Output(as_json).table("API tokens", shown, TOKEN_COLUMNS, raw=rows)


@tokens_app.command("revoke")
def tokens_revoke(
    token_id: str,
    token: Token,
    url: Url = DEFAULT_URL,
    reason: Annotated[str | None, typer.Option(help="Why (goes into the audit log)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Revoke a token: every API server refuses it from the next request on."""
    with connect(url, token) as c:
        revoked = c.revoke_token(token_id, reason)
    Output(as_json).record("token revoked", revoked)


@tokens_app.command("rotate")
def tokens_rotate(
    token_id: str,
    token: Token,
    url: Url = DEFAULT_URL,
    ttl_days: TtlDays = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace a token: the new one is printed once, and the old one is revoked at once."""
    with connect(url, token) as c:
        new = c.rotate_token(token_id, ttl_days)
    _print_new(new, as_json)


def _minute(value: str | None) -> str | None:
    """``2026-12-04 17:36 UTC`` from an ISO 8601 time."""
    if value is None:
        return None
    return datetime.fromisoformat(value).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _print_new(new: dict[str, Any], as_json: bool) -> None:
    """The secret alone on standard output; what it is on standard error."""
    if as_json:
        Output(True).data(new)
        return
    what = Msg(
        "token {id} for {principal}, expires {expires}",
        id=new["id"],
        principal=new["principal_id"],
        expires=new["expires_at"],
    )
    if new.get("replaces"):
        what = Msg(
            "{what}; token {old} is revoked (update VEIL_TOKEN where it was used)",
            what=what,
            old=new["replaces"],
        )
    shown = Msg("{what}. Shown once: store it now.", what=what)
    err_console.print(translate(shown), highlight=False)
    console.print(new["token"], highlight=False, soft_wrap=True)
