"""``veil kpi``: KPI contracts and their signed verdicts (pay for results), through the API;
``veil kpi verify`` checks a verdict offline."""

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
from sandbox.kpi.verdict_format import InvalidVerdict, verify_verdict
from sandbox.oversight.receipt_format import load_public_keys

kpi_app = typer.Typer(
    help="KPI contracts (pay for results): propose, accept, evaluate, read signed verdicts.",
    no_args_is_help=True,
)
app.add_typer(kpi_app, name="kpi")

ContractId = Annotated[str, typer.Argument(help="The contract's id (kpi_…)")]
VerdictId = Annotated[str, typer.Argument(help="The evaluation's id (vrd_…)")]

_CONTRACT_COLUMNS = ["id", "status", "kpi", "dataset_id", "target", "epsilon", "terms_sha256"]
_VERDICT_COLUMNS = ["id", "status", "verdict", "change", "low", "high", "confidence", "error"]


def _load(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        message = Msg("cannot read {path} as JSON: {reason}", path=str(path),
                      reason=type(exc).__name__)  # fmt: skip
        raise CliError(translate(message), code="bad_file") from None
    if not isinstance(data, dict):
        raise CliError(translate(Msg("{path} must hold a JSON object", path=str(path))),
                       code="bad_file")  # fmt: skip
    return data


def _contract_row(contract: dict[str, Any]) -> dict[str, Any]:
    terms = contract.get("terms", {})
    return {**contract, "kpi": terms.get("kpi", {}).get("kpi"), "dataset_id":
            terms.get("dataset_id"), "target": terms.get("target"),
            "epsilon": terms.get("epsilon")}  # fmt: skip


def _verdict_row(verdict: dict[str, Any]) -> dict[str, Any]:
    document = verdict.get("document") or {}
    low, high = document.get("interval") or [None, None]
    return {**verdict, "change": document.get("change"), "low": low, "high": high,
            "confidence": document.get("confidence")}  # fmt: skip


@kpi_app.command("propose")
def kpi_propose(
    contract: Annotated[
        Path,
        typer.Argument(
            help="A JSON file: dataset_id, purpose, kpi, target, confidence, epsilon "
            "(and provider_id when an enterprise proposes)"
        ),
    ],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Propose a KPI contract; the other party accepts its terms (their SHA-256)."""
    with connect(url, token) as c:
        made = c.propose_kpi_contract(_load(contract))
    Output(as_json).record("KPI contract proposed", _contract_row(made))


@kpi_app.command("list")
def kpi_list(token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False) -> None:
    """The KPI contracts you are a party to."""
    with connect(url, token) as c:
        rows = [_contract_row(r) for r in c.list_kpi_contracts()]
    Output(as_json).table("KPI contracts", rows, _CONTRACT_COLUMNS)


@kpi_app.command("show")
def kpi_show(
    contract_id: ContractId, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """A contract's full terms and their SHA-256 (what accepting names)."""
    with connect(url, token) as c:
        Output(as_json).data(c.get_kpi_contract(contract_id))


@kpi_app.command("accept")
def kpi_accept(
    contract_id: ContractId,
    sha256: Annotated[
        str, typer.Option("--sha256", help="The terms' SHA-256, as 'veil kpi show' printed it")
    ],
    token: Token,
    url: Url = DEFAULT_URL,
    as_json: JsonOpt = False,
) -> None:
    """Accept the terms you read (the party that did not propose)."""
    with connect(url, token) as c:
        accepted = c.accept_kpi_contract(contract_id, sha256)
    Output(as_json).record("KPI contract accepted", _contract_row(accepted))


@kpi_app.command("decline")
def kpi_decline(
    contract_id: ContractId, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Decline a proposed contract (or withdraw your own proposal)."""
    with connect(url, token) as c:
        Output(as_json).record("KPI contract declined",
                               _contract_row(c.decline_kpi_contract(contract_id)))  # fmt: skip


@kpi_app.command("evaluate")
def kpi_evaluate(
    contract_id: ContractId,
    token: Token,
    url: Url = DEFAULT_URL,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the verdict")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate an active contract (it costs the contract's ε) and, by default, show the verdict."""
    with connect(url, token) as c:
        verdict = c.evaluate_kpi_contract(contract_id)
        if wait:
            verdict = c.wait_for_kpi_verdict(contract_id, verdict["id"])
    out = Output(as_json)
    if as_json:
        out.data(verdict)
        return
    out.table("KPI verdicts", [_verdict_row(verdict)], _VERDICT_COLUMNS)


@kpi_app.command("verdicts")
def kpi_verdicts(
    contract_id: ContractId, token: Token, url: Url = DEFAULT_URL, as_json: JsonOpt = False
) -> None:
    """Every evaluation of a contract, with its verdict and interval."""
    with connect(url, token) as c:
        rows = c.list_kpi_verdicts(contract_id)
    out = Output(as_json)
    if as_json:
        out.data(rows)
        return
    out.table("KPI verdicts", [_verdict_row(r) for r in rows], _VERDICT_COLUMNS)


@kpi_app.command("verdict")
def kpi_verdict(
    contract_id: ContractId,
    verdict_id: VerdictId,
    token: Token,
    url: Url = DEFAULT_URL,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write the signed verdict to this JSON file")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """One evaluation; with --out, its signed verdict as a file 'veil kpi verify' checks."""
    with connect(url, token) as c:
        verdict = c.get_kpi_verdict(contract_id, verdict_id)
    if out_file is not None and verdict.get("document"):
        text = json.dumps(verdict["document"], indent=2, sort_keys=True, ensure_ascii=True)
        out_file.write_text(text + "\n", encoding="utf-8")
    out = Output(as_json)
    if as_json:
        out.data(verdict)
        return
    out.table("KPI verdicts", [_verdict_row(verdict)], _VERDICT_COLUMNS)


@kpi_app.command("verify")
def kpi_verify(
    file: Annotated[Path, typer.Argument(help="The signed verdict's JSON file")],
    public_key: Annotated[
        Path, typer.Option("--public-key", help="PEM file(s) from 'veil keys public-key'.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Check a verdict's signature offline; exit 1 if it was altered or cannot be checked."""
    verdict = _load(file)
    keys = load_public_keys(public_key.read_text())
    out = Output(as_json)
    try:
        verify_verdict(verdict, keys)
    except (InvalidSignature, InvalidVerdict) as exc:
        problem = (
            translate(Msg("the signature does not match: the verdict was altered after it "
                          "was signed, or signed by another key"))
            if isinstance(exc, InvalidSignature)
            else str(exc)
        )  # fmt: skip
        if as_json:
            out.data({"ok": False, "problem": problem})
        said = translate(Msg("[red]verdict NOT valid:[/red] {problem}", problem=problem))
        err_console.print(said, highlight=False)
        raise typer.Exit(1) from None
    summary = {k: verdict.get(k) for k in ("contract_id", "verdict", "change", "interval",
                                           "confidence", "target")}  # fmt: skip
    if as_json:
        out.data({"ok": True, **summary})
        return
    out.record("verdict verified: signature valid, content unaltered", summary)
