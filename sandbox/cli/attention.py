"""``veil audit attention`` and ``veil providers suspend|reinstate`` (through the API)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sandbox.cli.app import audit_app, providers_app
from sandbox.cli.output import Output
from sandbox.cli.remote import DEFAULT_URL, JsonOpt, Token, Url, connect, parse_time

Reason = Annotated[str, typer.Option("--reason", help="Why (goes into the audit log)")]
SinceOpt = Annotated[
    str | None, typer.Option("--since", help="From this time (ISO 8601; default: 7 days ago)")
]


@audit_app.command("attention")
def audit_attention(
    token: Token, url: Url = DEFAULT_URL, since: SinceOpt = None, as_json: JsonOpt = False
) -> None:
    """What needs attention: denials per provider, budget burn, held outputs, failed logins."""
    with connect(url, token) as c:
        view = c.audit_attention(parse_time(since, "--since"))
    out = Output(as_json)
    if as_json:
        out.data(view)
        return
    out.say(f"since {view['since']} (until {view['until']})")
    out.table(
        "denied attempts per provider",
        [_denials_row(d) for d in view["denied_by_provider"]],
        ["provider_id", "provider_name", "count", "last_at", "reasons"],
    )
    out.table(
        "budget burn per grant (most used first)",
        [_burn_row(b) for b in view["budget_burn"]],
        ["grant_id", "provider", "enterprise", "epsilon", "used", "in_period", "jobs", "active"],
    )
    out.table(
        "outputs held by output checks",
        view["held_outputs"],
        ["job_id", "provider_id", "enterprise_id", "held_since", "reasons"],
    )
    if view["failed_logins_included"]:
        out.table(
            "failed logins per client address",
            view["failed_logins"],
            ["client", "count", "last_at", "paths"],
        )
    else:
        out.say("failed logins belong to no tenant: an officer with a scope does not see them")


def _denials_row(d: dict[str, Any]) -> dict[str, Any]:
    reasons = [f"{r['reason']} (x{r['count']})" for r in d["reasons"]]
    return {**d, "reasons": "; ".join(reasons)}


def _burn_row(b: dict[str, Any]) -> dict[str, Any]:
    return {
        "grant_id": b["grant_id"],
        "provider": f"{b['provider_name']} ({b['provider_id']})",
        "enterprise": f"{b['enterprise_name']} ({b['enterprise_id']})",
        "epsilon": f"{b['epsilon_spent']:g} of {b['epsilon_budget']:g}",
        "used": f"{b['fraction_used']:.0%}",
        "in_period": f"{b['epsilon_spent_in_period']:g}",
        "jobs": b["jobs_in_period"],
        "active": "yes" if b["active"] else "no",
    }


@providers_app.command("suspend")
def providers_suspend(
    provider_id: str, reason: Reason, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Suspend a provider: its tokens stop working, its queued jobs are cancelled at once."""
    with connect(url, token) as c:
        result = c.suspend_provider(provider_id, reason)
    Output(as_json).record(f"provider {provider_id} suspended", result)


@providers_app.command("reinstate")
def providers_reinstate(
    provider_id: str, reason: Reason, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Reinstate a suspended provider (jobs cancelled by the suspension stay cancelled)."""
    with connect(url, token) as c:
        result = c.reinstate_provider(provider_id, reason)
    Output(as_json).record(f"provider {provider_id} reinstated", result)
