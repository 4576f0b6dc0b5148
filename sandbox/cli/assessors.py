"""``veil assessors`` (the bureau: register, list, suspend, reinstate third-party assessors)
and ``veil assessments`` (an assessor: its own assessments of providers), through the API
(docs/programme.md, "Assessors")."""

from __future__ import annotations

from typing import Annotated

import typer

from sandbox.cli.app import app
from sandbox.cli.output import Output
from sandbox.cli.remote import DEFAULT_URL, JsonOpt, Token, Url, connect

assessors_app = typer.Typer(
    help="Third-party assessors the bureau registers (bureau): register, list, suspend.",
    no_args_is_help=True,
)
assessments_app = typer.Typer(
    help="Your assessments of providers in the open period (an assessor): record, list.",
    no_args_is_help=True,
)
app.add_typer(assessors_app, name="assessors")
app.add_typer(assessments_app, name="assessments")

AssessorId = Annotated[str, typer.Argument(help="The assessor's id (asr_…)")]
Reason = Annotated[str, typer.Option("--reason", help="Why (it goes into the audit log)")]

_ASSESSOR_COLUMNS = ["id", "name", "status", "created_at"]
_OWN_COLUMNS = ["provider_id", "provider", "score", "reason", "recorded_at"]


@assessors_app.command("register")
def assessors_register(
    name: Annotated[str, typer.Argument(help="The assessor's name, e.g. Quality Institute")],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Register an assessor (the bureau); the operator then issues its token."""
    with connect(url, token) as c:
        Output(as_json).record("Assessor registered", c.register_assessor(name))


@assessors_app.command("list")
def assessors_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Every registered assessor, active or suspended (the bureau)."""
    with connect(url, token) as c:
        rows = c.list_assessors()
    Output(as_json).table("Registered assessors", rows, _ASSESSOR_COLUMNS)


@assessors_app.command("suspend")
def assessors_suspend(
    assessor_id: AssessorId, reason: Reason, token: Token, url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Suspend an assessor: its tokens and later assessments are refused."""
    with connect(url, token) as c:
        Output(as_json).record("Assessor suspended", c.suspend_assessor(assessor_id, reason))


@assessors_app.command("reinstate")
def assessors_reinstate(
    assessor_id: AssessorId, reason: Reason, token: Token, url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:  # fmt: skip
    """Reinstate a suspended assessor."""
    with connect(url, token) as c:
        Output(as_json).record("Assessor reinstated", c.reinstate_assessor(assessor_id, reason))


@assessments_app.command("record")
def assessments_record(
    provider_id: Annotated[str, typer.Argument(help="The provider's id (prv_…)")],
    score: Annotated[float, typer.Option("--score", help="0-100")],
    reason: Annotated[str, typer.Option("--reason", help="Why this score (1-500 characters)")],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Record your assessment of a provider in the open period; again: replaces it."""
    with connect(url, token) as c:
        Output(as_json).record(
            "Assessment recorded", c.record_assessment(provider_id, score, reason)
        )


@assessments_app.command("list")
def assessments_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """The providers being scored in the open period, with your assessment of each."""
    with connect(url, token) as c:
        view = c.own_assessments()
    rows = [
        {"provider_id": p["id"], "provider": p["name"], **(p["assessment"] or {})}
        for p in view["providers"]
    ]
    period = view["period"]
    Output(as_json).table(period["name"] if period else "No evaluation period is open", rows,
                          _OWN_COLUMNS, raw=view)  # fmt: skip
