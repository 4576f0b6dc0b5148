"""Usage receipts: built from the database, checked against the audit log, verified offline."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

import sandbox.cli  # noqa: F401 - registers every command on the app
from keys import CryptoProfile, InvalidSignature, SigningPublicKey
from sandbox.cli.app import app as cli_app
from sandbox.client import ApiError, VeilClient
from sandbox.oversight import receipts
from sandbox.oversight.audit_log import verify_chain
from sandbox.runtime.veil import Veil
from tests.sandbox.conftest import GRANTED, PURPOSE, World

# make test-slow: a module of ~20 s or more (test durations)
pytestmark = [pytest.mark.integration, pytest.mark.slow]

COUNT = [{"kind": "count"}]


def released(world: World, epsilon: float) -> str:
    job = world.provider.submit_job(world.dataset_id, PURPOSE, epsilon, COUNT)
    final = world.provider.wait_for_job(job["id"], timeout=60)
    assert final["status"] == "released", final
    return str(job["id"])


def denied(client: VeilClient, dataset_id: str, purpose: str, epsilon: float) -> str:
    with pytest.raises(ApiError) as refused:
        client.submit_job(dataset_id, purpose, epsilon, COUNT)
    assert refused.value.status == 403 and refused.value.job_id
    return refused.value.job_id


def token_of(world: World, principal_id: str) -> str:
    return world.operator.issue_token(principal_id)


def public_keys(veil: Veil) -> dict[int, SigningPublicKey]:
    return {k.key_version: k for k in veil.keys.signing_public_keys()}


@pytest.fixture
def used(world: World) -> dict[str, Any]:
    """Two released jobs, one denied for its purpose, one over budget; noise around them."""
    other_id = world.other_provider.me()["id"]
    until = datetime.now(UTC) + timedelta(days=1)
    world.acme.create_grant(other_id, [world.dataset_id], GRANTED, [3], [PURPOSE], until, 1.0)
    world.acme.change_grant(world.grant_id, "lower the budget", epsilon=0.9)
    jobs = {
        "first": released(world, 0.25),
        "second": released(world, 0.5),
        "purpose": denied(world.provider, world.dataset_id, "marketing", 0.1),
        "budget": denied(world.provider, world.dataset_id, PURPOSE, 0.5),
    }
    # Not about acme and this provider: must stay out of the receipt.
    jobs["other_tenant"] = denied(world.provider, world.globex_dataset_id, PURPOSE, 0.1)
    other_job = world.other_provider.submit_job(world.dataset_id, PURPOSE, 0.1, COUNT)
    world.other_provider.wait_for_job(other_job["id"], timeout=60)
    jobs["other_provider"] = other_job["id"]
    return jobs


def test_receipt_matches_the_audit_log(world: World, veil: Veil, used: dict[str, Any]) -> None:
    receipt = world.acme.usage_receipt(world.provider_id)
    events = world.operator.audit_events(limit=1000)
    by_seq = {e["seq"]: e for e in events}
    mine = [used["first"], used["second"], used["purpose"], used["budget"]]
    assert [j["job_id"] for j in receipt["jobs"]] == mine
    assert receipt["enterprise"]["name"] == "Acme Metal"
    assert receipt["provider"] == {"id": world.provider_id, "name": "Predicta"}

    for job in receipt["jobs"]:
        submitted = by_seq[job["submitted_seq"]]
        assert submitted["resource"] == f"job:{job['job_id']}"
        assert submitted["action"] == (
            "job.denied" if job["status"] == "denied" else "job.submitted"
        )
        assert submitted["details"]["purpose"] == job["purpose"]
        assert submitted["details"]["dataset_id"] == job["dataset_id"] == world.dataset_id
    statuses = {j["job_id"]: j["status"] for j in receipt["jobs"]}
    assert statuses == {j: s for j, s in zip(mine, ["released"] * 2 + ["denied"] * 2, strict=True)}

    # Released hashes: the job's own result, and the release event's record of it.
    assert [r["job_id"] for r in receipt["results_released"]] == mine[:2]
    for item in receipt["results_released"]:
        event = by_seq[item["released_seq"]]
        assert event["action"] == "job.released" and event["resource"] == f"job:{item['job_id']}"
        assert item["result_sha256"] == event["details"]["result_sha256"]
        assert item["result_sha256"] == world.provider.get_result(item["job_id"])["result_sha256"]

    # The ε charged is what the ledger's debit events say; denied jobs cost nothing.
    debits = {
        e["details"]["job_id"]: e
        for e in events
        if e["action"] == "budget.debited" and e["details"]["job_id"] in statuses
    }
    assert set(debits) == set(mine[:2])
    assert receipt["totals"]["epsilon_charged"] == pytest.approx(
        sum(e["details"]["epsilon"] for e in debits.values())
    )
    assert receipt["totals"]["epsilon_charged"] == 0.75
    for job in receipt["jobs"]:
        if job["status"] == "denied":
            assert job["epsilon_charged"] == 0 and job["debited_seq"] is None and job["reasons"]
        else:
            assert by_seq[job["debited_seq"]] == debits[job["job_id"]]
            assert job["epsilon_charged"] == debits[job["job_id"]]["details"]["epsilon"]
    assert receipt["totals"]["by_status"] == {"denied": 2, "released": 2}
    assert receipt["purposes"] == [
        {"purpose": "marketing", "jobs": 1, "released": 0, "epsilon_charged": 0.0},
        {"purpose": PURPOSE, "jobs": 3, "released": 2, "epsilon_charged": 0.75},
    ]

    [grant] = receipt["grants"]
    assert grant["grant_id"] == world.grant_id and grant["jobs_in_period"] == 4
    assert (grant["epsilon_budget"], grant["epsilon_spent_in_period"]) == (0.9, 0.75)
    assert grant["epsilon_spent_total"] == 0.75
    [dataset] = receipt["datasets"]
    assert dataset["epsilon_spent_by_provider_in_period"] == 0.75
    assert dataset["epsilon_spent_all_providers"] == pytest.approx(0.85)  # other provider too

    # Approvals: the grant and its change, each exactly as its audit event.
    assert [(a["action"], a["resource"]) for a in receipt["approvals"]] == [
        ("grant.created", f"grant:{world.grant_id}"),
        ("grant.changed", f"grant:{world.grant_id}"),
    ]
    for approval in receipt["approvals"]:
        event = by_seq[approval["seq"]]
        assert event["hash"] == approval["event_hash"] and event["details"] == approval["details"]

    # The anchor is the chain head at issue; the next event records the receipt itself.
    anchor = receipt["audit_anchor"]
    assert by_seq[anchor["seq"]]["hash"] == anchor["hash"]
    issued = by_seq[anchor["receipt_event_seq"]]
    assert issued["action"] == "receipt.issued" and issued["resource"] == f"receipt:{receipt['id']}"
    assert issued["details"]["receipt_sha256"] == receipts.receipt_sha256(receipt)
    assert verify_chain(veil).ok


@pytest.mark.parametrize("crypto_profile", list(CryptoProfile))
def test_signature_verifies_offline_and_catches_tampering(
    world: World, veil: Veil, used: dict[str, Any]
) -> None:
    receipt = world.acme.usage_receipt(world.provider_id)
    assert receipt["signature"].startswith(
        f"veil-{'sm2' if veil.keys.profile == 'gm' else 'ed25519'}:"
    )
    keys = public_keys(veil)
    receipts.verify_receipt(receipt, keys)
    receipts.verify_receipt(receipts.load_receipt(receipts.dumps(receipt)), keys.values())
    for path, value in [
        (("jobs", 0, "epsilon_charged"), 0.0),
        (("results_released", 0, "result_sha256"), "0" * 64),
        (("totals", "epsilon_charged"), 0.5),
        (("period", "since"), "2000-01-01T00:00:00.000000+00:00"),
        (("key_version",), receipt["key_version"] + 1),
    ]:
        altered = copy.deepcopy(receipt)
        target: Any = altered
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
        with pytest.raises(InvalidSignature):
            receipts.verify_receipt(altered, keys)
    unsigned = {k: v for k, v in receipt.items() if k != "signature"}
    with pytest.raises(receipts.InvalidReceipt):
        receipts.verify_receipt(unsigned, keys)
    with pytest.raises(receipts.InvalidReceipt, match="no public key of version"):
        receipts.verify_receipt(receipt, {})


def test_html_page_shows_the_receipt(world: World, veil: Veil, used: dict[str, Any]) -> None:
    page = world.acme.usage_receipt_html(world.provider_id).decode()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page
    assert "http://" not in page and "https://" not in page  # self-contained
    embedded = receipts.load_receipt(page)
    receipts.verify_receipt(embedded, public_keys(veil))
    for job in embedded["jobs"]:
        assert job["job_id"] in page
    for item in embedded["results_released"]:
        assert item["result_sha256"] in page
    assert ">0.75<" in page and "0.75 / 0.9" in page  # ε charged; spent / budget
    assert embedded["signature"] in page and "veil receipts verify receipt.json" in page
    assert "Acme Metal" in page and "Predicta" in page and "grant.changed" in page


def test_names_are_escaped_in_the_page(world: World) -> None:
    evil = world.operator.create_provider("<script>alert(1)</script> & co")
    page = world.acme.usage_receipt_html(evil["id"]).decode()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page


def test_who_may_ask(world: World) -> None:
    acme_id = world.acme.me()["id"]
    globex_id = world.globex.me()["id"]
    with pytest.raises(ApiError) as provider:
        world.provider.usage_receipt(world.provider_id)
    assert provider.value.status == 403
    with pytest.raises(ApiError) as other:
        world.globex.usage_receipt(world.provider_id, enterprise_id=acme_id)
    assert other.value.status == 403
    own = world.globex.usage_receipt(world.provider_id)
    assert own["enterprise"]["id"] == globex_id and own["jobs"] == [] and own["grants"] == []

    outside = world.client(
        token_of(world, world.operator.create_security_officer("Globex SO", [globex_id])["id"])
    )
    with pytest.raises(ApiError) as scoped:
        outside.usage_receipt(world.provider_id, enterprise_id=acme_id)
    assert scoped.value.status == 404
    with pytest.raises(ApiError) as unnamed:
        outside.usage_receipt(world.provider_id)
    assert unnamed.value.status == 422 and "enterprise_id" in unnamed.value.detail

    inside = world.client(
        token_of(world, world.operator.create_security_officer("Acme SO", [acme_id])["id"])
    )
    receipt = inside.usage_receipt(world.provider_id, enterprise_id=acme_id)
    assert receipt["issued_to"]["role"] == "security_officer"
    assert receipt["grants"][0]["grant_id"] == world.grant_id
    by_operator = world.operator.usage_receipt(world.provider_id, enterprise_id=acme_id)
    assert by_operator["enterprise"]["id"] == acme_id
    with pytest.raises(ApiError) as unknown:
        world.acme.usage_receipt("prv_nobody")
    assert unknown.value.status == 404 and unknown.value.detail == "provider 'prv_nobody' not found"


def test_period_is_checked(world: World) -> None:
    now = datetime.now(UTC)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"since": now - timedelta(days=1), "until": now - timedelta(days=2)}, "since must be"),
        ({"until": now + timedelta(days=1)}, "future"),
        ({"since": now - timedelta(days=400), "until": now}, "at most 366 days"),
        ({"since": datetime(2026, 1, 1)}, "time zone"),  # naive on purpose
    ]
    for period, message in cases:
        with pytest.raises(ApiError) as bad:
            world.acme.usage_receipt(world.provider_id, **period)
        assert bad.value.status == 422 and message in bad.value.detail, bad.value.detail
    before = world.acme.usage_receipt(
        world.provider_id, since=now - timedelta(days=3), until=now - timedelta(days=2)
    )
    assert before["jobs"] == [] and before["grants"] == [] and before["approvals"] == []
    assert before["period"]["until"].startswith((now - timedelta(days=2)).date().isoformat())


def test_cli_creates_and_verifies_offline(
    world: World, veil: Veil, used: dict[str, Any], tmp_path: Path
) -> None:
    # A key file may hold several versions: here a (foreign) version 9 besides the real ones.
    foreign = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    key_file = tmp_path / "audit-key.pem"
    key_file.write_text(
        SigningPublicKey(9, foreign).to_pem()
        + "".join(k.to_pem() for k in veil.keys.signing_public_keys())
    )
    out, page = tmp_path / "receipt.json", tmp_path / "receipt.html"
    runner = CliRunner()
    token = token_of(world, world.acme.me()["id"])
    create = runner.invoke(
        cli_app,
        [
            "receipts", "create", "--provider", world.provider_id, "--output", str(out),
            "--html", str(page), "--token", token, "--url", world.url,
        ],
    )  # fmt: skip
    assert create.exit_code == 0, create.output
    assert "usage receipt" in create.output and "Predicta" in create.output
    receipt = json.loads(out.read_text())
    assert receipt["id"] in page.read_text()  # the page of this very receipt
    assert [j["job_id"] for j in receipt["jobs"]][:2] == [used["first"], used["second"]]

    for file in (out, page):
        ok = runner.invoke(
            cli_app, ["receipts", "verify", str(file), "--public-key", str(key_file)]
        )
        assert ok.exit_code == 0, ok.output
        assert "receipt verified" in ok.output

    receipt["jobs"][0]["status"] = "failed"
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(receipt))
    bad = runner.invoke(cli_app, ["receipts", "verify", str(edited), "--public-key", str(key_file)])
    assert bad.exit_code == 1
    assert "altered" in bad.output or "altered" in (bad.stderr or "")
    as_json = runner.invoke(
        cli_app, ["receipts", "verify", str(edited), "--public-key", str(key_file), "--json"]
    )
    assert as_json.exit_code == 1 and '"ok": false' in as_json.output


def test_revocation_is_an_approval_and_the_grant_stays_listed(world: World) -> None:
    world.acme.revoke_grant(world.grant_id, reason="contract ended")
    receipt = world.acme.usage_receipt(world.provider_id)
    last = receipt["approvals"][-1]
    assert last["action"] == "grant.revoked" and last["details"]["reason"] == "contract ended"
    [grant] = receipt["grants"]
    assert grant["grant_id"] == world.grant_id and grant["revoked_at"] is not None
