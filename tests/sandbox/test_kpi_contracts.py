"""KPI contracts through the API and the console: consent of both parties, an evaluation as
a job that debits its ε before reading data, the signed verdict both parties read, and
refusals."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from keys import CryptoProfile, InvalidSignature
from keys.signing import public_keys_from_pem
from policies.audit import AuditEvent
from sandbox.cli import app
from sandbox.client import ApiError, VeilClient
from sandbox.console.session import csrf_token
from sandbox.kpi.verdict_format import verify_verdict
from sandbox.kpi.verdicts import settle_pending
from sandbox.runtime.veil import Veil
from sandbox.service import bootstrap_operator

PURPOSE = "process-optimization"
COLUMNS = [
    {"name": "day", "type": "integer", "class": "internal", "lower": 0, "upper": 400},
    {"name": "scrap", "type": "float", "class": "confidential", "lower": 0, "upper": 20},
    {"name": "produced", "type": "integer", "class": "internal", "lower": 0, "upper": 200},
    {"name": "line", "type": "string", "class": "public", "categories": ["a", "b"]},
    {"name": "recipe", "type": "float", "class": "secret", "lower": 0, "upper": 1},
]
KPI = {
    "kpi": "scrap_rate",
    "columns": {"scrap": "scrap", "produced": "produced"},
    "time_column": "day",
    "baseline": {"from": 0, "to": 100},
    "evaluation": {"from": 100, "to": 200},
}


def _csv(rows: int) -> bytes:
    """``rows`` per period; the scrap rate halves in the evaluation period (10% -> 5%)."""
    out = io.StringIO()
    out.write("day,scrap,produced,line,recipe\n")
    for i in range(2 * rows):
        day = i % 200
        out.write(f"{day},{10.0 if day < 100 else 5.0},100,a,0.5\n")
    return out.getvalue().encode()


class Parties:
    def __init__(self, veil: Veil, url: str, epsilon: float) -> None:
        token = bootstrap_operator(veil)
        assert token is not None
        self.operator = VeilClient(url, token)
        acme = self.operator.create_enterprise("Acme", "acme-kpi")
        provider = self.operator.create_provider("Predicta")
        stranger = self.operator.create_provider("Other")
        self.acme = VeilClient(url, self.operator.issue_token(acme["id"]))
        self.provider = VeilClient(url, self.operator.issue_token(provider["id"]))
        self.stranger = VeilClient(url, self.operator.issue_token(stranger["id"]))
        self.provider_id = provider["id"]
        dataset = self.acme.create_dataset("line-log", COLUMNS)
        self.acme.upload(dataset["id"], _csv(1_000))
        self.dataset_id = dataset["id"]
        grant = self.acme.create_grant(
            provider["id"], [dataset["id"]], ["day", "scrap", "produced", "line"], [3],
            [PURPOSE], datetime.now(UTC) + timedelta(days=1), epsilon,
        )  # fmt: skip
        self.grant_id = grant["id"]

    def contract(self, **overrides: Any) -> dict[str, Any]:
        body = {"dataset_id": self.dataset_id, "purpose": PURPOSE, "kpi": KPI, "target": 0.05,
                "confidence": 0.95, "epsilon": 2.0} | overrides  # fmt: skip
        return body


@pytest.fixture
def parties(veil: Veil, api: str) -> Parties:
    return Parties(veil, api, epsilon=3.0)


def _actions(veil: Veil) -> list[str]:
    with veil.db.read() as session:
        return [e.action for e in session.scalars(select(AuditEvent).order_by(AuditEvent.seq))]


@pytest.mark.parametrize("crypto_profile", list(CryptoProfile))
def test_a_contract_both_agreed_gives_a_signed_verdict_both_read(
    parties: Parties, veil: Veil, tmp_path: Path
) -> None:
    proposed = parties.provider.propose_kpi_contract(parties.contract())
    assert proposed["status"] == "proposed"
    cid, sha = proposed["id"], proposed["terms_sha256"]
    # Not yet accepted: no evaluation, nothing spent.
    with pytest.raises(ApiError) as refused:
        parties.provider.evaluate_kpi_contract(cid)
    assert refused.value.status == 409 and refused.value.code == "contract_not_active"
    # The proposer cannot accept its own proposal; the other party names the terms' hash.
    with pytest.raises(ApiError) as own:
        parties.provider.accept_kpi_contract(cid, sha)
    assert own.value.status == 409
    with pytest.raises(ApiError) as stale:
        parties.acme.accept_kpi_contract(cid, "0" * 64)
    assert stale.value.code == "terms_changed"
    accepted = parties.acme.accept_kpi_contract(cid, sha)
    assert accepted["status"] == "active" and accepted["decided_by"] != proposed["proposed_by"]

    pending = parties.acme.evaluate_kpi_contract(cid)  # either party may ask
    assert pending["status"] == "pending"
    # Debited when queued, before any data was read.
    assert parties.acme.get_grant(parties.grant_id)["budget"]["epsilon_spent"] == 2.0
    # Settled without being read (as the programme's aggregates do), once its job ended.
    parties.provider.wait_for_job(pending["job_id"])
    assert settle_pending(veil) == 1 and settle_pending(veil) == 0
    done = parties.provider.wait_for_kpi_verdict(cid, pending["id"])
    assert done["status"] == "released", done
    document = done["document"]
    assert document["verdict"] == "met"  # the scrap rate halved: +50% against +5%
    low, high = document["interval"]
    assert 0.05 < low <= 0.5 <= high
    assert document["confidence"] == 0.95 and document["epsilon"] == 2.0
    assert document["contract_sha256"] == sha
    assert parties.acme.get_kpi_verdict(cid, pending["id"])["document"] == document
    with pytest.raises(ApiError) as other:
        parties.stranger.get_kpi_verdict(cid, pending["id"])
    assert other.value.status == 404

    keys = public_keys_from_pem(parties.operator.audit_public_key())
    verify_verdict(document, keys)
    with pytest.raises(InvalidSignature):
        verify_verdict({**document, "verdict": "not_met"}, keys)
    # The CLI, through the API: the contract, its verdicts, the signed verdict to a file.
    cli = ["--url", str(parties.acme._http.base_url), "--token",
           str(parties.acme._http.headers["authorization"]).removeprefix("Bearer ")]  # fmt: skip
    listed = CliRunner().invoke(app, ["kpi", "list", "--json", *cli])
    assert listed.exit_code == 0 and cid in listed.output, listed.output
    out = tmp_path / "fetched.json"
    fetched = CliRunner().invoke(app, ["kpi", "verdict", cid, pending["id"], "--out", str(out),
                                       "--json", *cli])  # fmt: skip
    assert fetched.exit_code == 0, fetched.output
    assert json.loads(out.read_text()) == document
    # Offline, with the CLI.
    path, pem = tmp_path / "verdict.json", tmp_path / "keys.pem"
    path.write_text(json.dumps(document))
    pem.write_text(parties.operator.audit_public_key())
    ok = CliRunner().invoke(app, ["kpi", "verify", str(path), "--public-key", str(pem)])
    assert ok.exit_code == 0, ok.output
    path.write_text(json.dumps({**document, "interval": [0.9, 1.0]}))
    bad = CliRunner().invoke(app, ["kpi", "verify", str(path), "--public-key", str(pem)])
    assert bad.exit_code == 1

    actions = _actions(veil)
    for action in ("kpi_contract.proposed", "kpi_contract.accepted", "budget.debited",
                   "kpi.evaluation_requested", "job.released", "kpi.verdict_released"):  # fmt: skip
        assert action in actions
    assert actions.index("budget.debited") < actions.index("job.released")


def test_refusals_say_why(parties: Parties, veil: Veil) -> None:
    # A secret column, a column of the wrong type: refused when proposed, naming the role.
    secret = {**KPI, "columns": {"scrap": "recipe", "produced": "produced"}}
    with pytest.raises(ApiError) as caught:
        parties.provider.propose_kpi_contract(parties.contract(kpi=secret))
    assert caught.value.status == 422 and "'recipe' (scrap) is secret" in caught.value.message
    typed = {**KPI, "columns": {"scrap": "line", "produced": "produced"}}
    with pytest.raises(ApiError) as caught:
        parties.acme.propose_kpi_contract(
            parties.contract(kpi=typed, provider_id=parties.provider_id)
        )
    assert caught.value.status == 422 and "must be numeric" in caught.value.message
    # A provider without a grant on the dataset: as if it did not exist.
    with pytest.raises(ApiError) as caught:
        parties.stranger.propose_kpi_contract(parties.contract())
    assert caught.value.status == 404

    # Budget exhausted: the grant holds 3.0, each evaluation costs 2.0.
    made = parties.acme.propose_kpi_contract(parties.contract(provider_id=parties.provider_id))
    parties.provider.accept_kpi_contract(made["id"], made["terms_sha256"])
    # A suspended provider's contract: not evaluated (its job would fail unrun, ε spent).
    parties.operator.suspend_provider(parties.provider_id, "under review")
    with pytest.raises(ApiError) as caught:
        parties.acme.evaluate_kpi_contract(made["id"])
    assert caught.value.status == 409 and caught.value.code == "provider_suspended"
    assert parties.acme.get_grant(parties.grant_id)["budget"]["epsilon_spent"] == 0.0
    parties.operator.reinstate_provider(parties.provider_id, "cleared")
    first = parties.provider.evaluate_kpi_contract(made["id"])
    with pytest.raises(ApiError) as caught:
        parties.provider.evaluate_kpi_contract(made["id"])
    assert caught.value.status == 403 and caught.value.job_id
    assert any("budget" in r for r in caught.value.reasons)
    listed = parties.acme.list_kpi_verdicts(made["id"])
    assert [v["status"] for v in listed][1] == "failed"
    assert listed[0]["id"] == first["id"]
    assert "kpi.evaluation_denied" in _actions(veil)
    assert parties.acme.get_grant(parties.grant_id)["budget"]["epsilon_spent"] == 2.0

    # Declined: never evaluated.
    other = parties.provider.propose_kpi_contract(parties.contract())
    parties.acme.decline_kpi_contract(other["id"])
    with pytest.raises(ApiError) as caught:
        parties.provider.evaluate_kpi_contract(other["id"])
    assert caught.value.status == 409


# -- the console page, for both parties -------------------------------------------------


def _console(parties: Parties, client_token: str) -> httpx.Client:
    url = str(parties.acme._http.base_url)
    return httpx.Client(base_url=url, cookies={"veil_console": client_token}, timeout=60)


def _token(client: object) -> str:
    return str(client._http.headers["authorization"]).removeprefix("Bearer ")  # type: ignore[attr-defined]


def test_both_parties_agree_and_read_the_verdict_in_the_console(parties: Parties) -> None:
    made = parties.provider.propose_kpi_contract(parties.contract())
    acme, provider = _token(parties.acme), _token(parties.provider)
    with _console(parties, acme) as console:
        shown = console.get("/console/kpi")
        assert shown.status_code == 200
        assert made["id"] in shown.text and made["terms_sha256"] in shown.text
        assert "Accept these terms" in shown.text
        form = {"csrf": csrf_token(acme), "terms_sha256": made["terms_sha256"]}
        accepted = console.post(f"/console/kpi/{made['id']}/accept", data=form)
        assert accepted.status_code == 303
        evaluated = console.post(f"/console/kpi/{made['id']}/evaluate",
                                 data={"csrf": csrf_token(acme)})  # fmt: skip
        assert evaluated.status_code == 303
    [pending] = parties.acme.list_kpi_verdicts(made["id"])
    parties.acme.wait_for_kpi_verdict(made["id"], pending["id"])
    with _console(parties, provider) as console:
        page = console.get("/console/kpi").text
        assert 'data-value="active"' in page and ">met<" in page
        assert "Accept these terms" not in page  # the proposer never accepts
    with _console(parties, _token(parties.stranger)) as console:
        assert made["id"] not in console.get("/console/kpi").text


@pytest.mark.parametrize("sha", ["0" * 64, ""])
def test_accepting_other_terms_than_shown_is_refused(parties: Parties, sha: str) -> None:
    made = parties.provider.propose_kpi_contract(parties.contract())
    acme = _token(parties.acme)
    with _console(parties, acme) as console:
        form = {"csrf": csrf_token(acme), "terms_sha256": sha}
        refused = console.post(f"/console/kpi/{made['id']}/accept", data=form)
    assert refused.status_code == 409
    assert parties.acme.get_kpi_contract(made["id"])["status"] == "proposed"
