"""``veil scorecards`` and ``veil exits``: providers' evaluation periods, scorecards and
exit, through the API (docs/programme.md, "Scorecards and exit")."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from i18n import Msg
from i18n.catalog import translate
from keys import InvalidSignature
from sandbox.cli.app import app
from sandbox.cli.errors import CliError
from sandbox.cli.output import Output, err_console
from sandbox.cli.remote import DEFAULT_URL, JsonOpt, Token, Url, connect
from sandbox.oversight.receipt_format import load_public_keys
from sandbox.scorecards.document import InvalidScorecard, verify_scorecard

scorecards_app = typer.Typer(
    help="Providers' scorecards: evaluation periods, ratings, assessments, signed results.",
    no_args_is_help=True,
)
exits_app = typer.Typer(
    help="Providers' exit: proposals after two failed scorecards, the bureau's decision.",
    no_args_is_help=True,
)
app.add_typer(scorecards_app, name="scorecards")
app.add_typer(exits_app, name="exits")

ProviderId = Annotated[str, typer.Argument(help="The provider's id (prv_…)")]
ExitId = Annotated[str, typer.Argument(help="The exit proposal's id (exi_…)")]
Reason = Annotated[str, typer.Option("--reason", help="Why (it goes into the audit log)")]

_PERIOD_COLUMNS = ["id", "name", "status", "pass_mark", "opened_at", "closed_at"]
_CARD_COLUMNS = ["id", "period", "provider_id", "result", "score", "raters"]
_EXIT_COLUMNS = ["id", "provider_id", "status", "created_at", "reason"]
_STANDING_COLUMNS = ["provider_id", "name", "status", "reason", "at"]


def _card_row(card: dict[str, Any]) -> dict[str, Any]:
    document = card.get("document") or {}
    ratings = document.get("components", {}).get("ratings", {})
    return {**card, "period": document.get("period", {}).get("name"),
            "raters": ratings.get("raters")}  # fmt: skip


@scorecards_app.command("open")
def scorecards_open(
    name: Annotated[str, typer.Argument(help="The period's name, e.g. 2026-Q4")],
    token: Token,
    weights: Annotated[
        str | None,
        typer.Option(
            "--weights",
            help='JSON: {"kpi": .4, "ratings": .2, "bureau": .2, "assessors": .2} (the default)',
        ),
    ] = None,
    pass_mark: Annotated[
        float | None, typer.Option("--pass-mark", help="0-100 (default 60)")
    ] = None,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Open an evaluation period (the bureau); one is open at a time."""
    try:
        parsed = json.loads(weights) if weights else None
    except ValueError:
        raise CliError(
            translate(Msg("--weights must be a JSON object, e.g. '{\"kpi\": 1, ...}'")),
            code="bad_weights",
        ) from None
    with connect(url, token) as c:
        made = c.open_period(name, parsed, pass_mark)
    Output(as_json).record("Evaluation period opened", made)


@scorecards_app.command("periods")
def scorecards_periods(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Every evaluation period (the bureau)."""
    with connect(url, token) as c:
        rows = c.list_periods()
    Output(as_json).table("Evaluation periods", rows, _PERIOD_COLUMNS)


@scorecards_app.command("close")
def scorecards_close(
    period_id: Annotated[str, typer.Argument(help="The period's id (per_…)")],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Close the open period: every provider's signed scorecard, and exit proposals."""
    with connect(url, token) as c:
        closed = c.close_period(period_id)
    rows = [_card_row(card) for card in closed["scorecards"]]
    Output(as_json).table("Scorecards", rows, _CARD_COLUMNS, raw=closed)


@scorecards_app.command("assess")
def scorecards_assess(
    provider_id: ProviderId,
    score: Annotated[float, typer.Option("--score", help="0-100")],
    reason: Reason,
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Record the bureau's own assessment of a provider in the open period."""
    with connect(url, token) as c:
        made = c.assess_provider(provider_id, score, reason)
    Output(as_json).record("Assessment recorded", made)


@scorecards_app.command("rate")
def scorecards_rate(
    provider_id: ProviderId,
    rating: Annotated[int, typer.Option("--rating", help="1-5")],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Rate a provider you granted, in the open period (an enterprise); again: replaces it."""
    with connect(url, token) as c:
        made = c.rate_provider(provider_id, rating)
    Output(as_json).record("Rating recorded", made)


@scorecards_app.command("list")
def scorecards_list(
    token: Token,
    period_id: Annotated[
        str | None, typer.Option("--period", help="Only this period's (per_…)")
    ] = None,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Your scorecards (a provider), or every provider's (the bureau)."""
    with connect(url, token) as c:
        rows = c.list_scorecards(period_id)
    Output(as_json).table("Scorecards", [_card_row(r) for r in rows], _CARD_COLUMNS, raw=rows)


@scorecards_app.command("show")
def scorecards_show(
    scorecard_id: Annotated[str, typer.Argument(help="The scorecard's id (scd_…)")],
    token: Token,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the signed scorecard to this JSON file")
    ] = None,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """One scorecard: its components, reasons and signature."""
    with connect(url, token) as c:
        card = c.get_scorecard(scorecard_id)
    if out_file is not None:
        text = json.dumps(card["document"], indent=2, sort_keys=True, ensure_ascii=True)
        out_file.write_text(text + "\n", encoding="utf-8")
    Output(as_json).data(card["document"])


@scorecards_app.command("verify")
def scorecards_verify(
    file: Annotated[Path, typer.Argument(help="The signed scorecard's JSON file")],
    public_key: Annotated[
        Path, typer.Option("--public-key", help="PEM file(s) from 'veil keys public-key'.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Check a scorecard's signature offline; exit 1 if it was altered or cannot be checked."""
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        message = Msg("cannot read {path} as JSON: {reason}", path=str(file),
                      reason=type(exc).__name__)  # fmt: skip
        raise CliError(translate(message), code="bad_file") from None
    out = Output(as_json)
    try:
        verify_scorecard(document, load_public_keys(public_key.read_text()))
    except (InvalidSignature, InvalidScorecard) as exc:
        problem = (
            translate(Msg("the signature does not match: the scorecard was altered after it "
                          "was signed, or signed by another key"))
            if isinstance(exc, InvalidSignature)
            else str(exc)
        )  # fmt: skip
        if as_json:
            out.data({"ok": False, "problem": problem})
        said = translate(Msg("[red]scorecard NOT valid:[/red] {problem}", problem=problem))
        err_console.print(said, highlight=False)
        raise typer.Exit(1) from None
    summary = {k: document.get(k) for k in ("id", "provider_id", "result", "score")}
    if as_json:
        out.data({"ok": True, **summary})
        return
    out.record("scorecard verified: signature valid, content unaltered", summary)


@exits_app.command("list")
def exits_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Exit proposals: every one (the bureau), or your own (a provider)."""
    with connect(url, token) as c:
        rows = c.list_exits()
    Output(as_json).table("Exit proposals", rows, _EXIT_COLUMNS)


@exits_app.command("providers")
def exits_providers(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """Suspended and exited providers, and why (the bureau)."""
    with connect(url, token) as c:
        rows = c.exited_providers()
    Output(as_json).table("Suspended and exited providers", rows, _STANDING_COLUMNS)


@exits_app.command("confirm")
def exits_confirm(
    exit_id: ExitId, reason: Reason, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Confirm an exit: grants revoked, jobs cancelled, outputs shredded, provider suspended."""
    with connect(url, token) as c:
        decided = c.decide_exit(exit_id, True, reason)
    Output(as_json).record("Exit confirmed", decided)


@exits_app.command("reject")
def exits_reject(
    exit_id: ExitId, reason: Reason, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Reject an exit proposal: nothing changes."""
    with connect(url, token) as c:
        decided = c.decide_exit(exit_id, False, reason)
    Output(as_json).record("Exit rejected", decided)
