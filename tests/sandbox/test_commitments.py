"""The city's purpose vocabulary and commitment letters (docs/commitments.md).

One Veil for the module, with letters required (``VEIL_COMMITMENT_LETTERS``); each test
makes its own enterprises and providers (``make_world``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from typer.testing import CliRunner

import sandbox.cli  # noqa: F401 - registers every command on the app
from keys import CryptoProfile, InvalidSignature, LocalKeyServer, SigningPublicKey
from policies.audit import AuditEvent
from policies.decisions import LETTER_UNSIGNED, JobRequest, decide
from policies.errors import VeilError
from policies.grants import Grant, GrantTerms, create_grant
from policies.letter_format import InvalidLetter, dumps, sign_as_provider, verify_letter
from sandbox.cli.app import app as cli_app
from sandbox.client import ApiError
from sandbox.config.settings import Settings
from sandbox.console.session import csrf_token
from sandbox.grants.letter_page import load_letter, render_html
from sandbox.jobs.artifacts import store_artifact
from sandbox.jobs.retention import shred_expired
from sandbox.jobs.workers import Upkeep
from sandbox.oversight import evidence_format
from sandbox.oversight.evidence_format import verify_pack
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import bootstrap_operator, open_veil
from sandbox.store.models import Job
from tests.conftest import require
from tests.sandbox import conftest
from tests.sandbox.conftest import (
    GRANTED,
    PURPOSE,
    World,
    key_server_for,
    make_world,
    settings_for,
)

pytestmark = pytest.mark.integration

COUNT = [{"kind": "count"}]
INSURANCE = "PICC-2026-DS-0042"


@pytest.fixture(scope="module")
def crypto_profile() -> CryptoProfile:
    """The module Veil's profile; gm tests parametrize it (``scope="module"``)."""
    return CryptoProfile.STANDARD


@pytest.fixture(scope="module")
def veil(
    tmp_path_factory: pytest.TempPathFactory,
    key_server: LocalKeyServer,
    bao_binary: Path,
    crypto_profile: CryptoProfile,
) -> Iterator[Veil]:
    home = tmp_path_factory.mktemp("letters")
    with (
        key_server_for(crypto_profile, key_server, home / "bao-gm", bao_binary) as server,
        open_veil(
            settings_for(home, server, commitment_letters=True, crypto_profile=crypto_profile)
        ) as running,
    ):
        yield running


@pytest.fixture(scope="module")
def api(veil: Veil) -> Iterator[str]:
    with ApiThread(veil.settings, veil) as url:
        yield url


@pytest.fixture(scope="module")
def operator_token(veil: Veil) -> str:
    token = bootstrap_operator(veil)
    assert token is not None
    return token


@pytest.fixture
def world(veil: Veil, api: str, operator_token: str, monkeypatch: pytest.MonkeyPatch) -> World:
    """A fresh world (enterprises, providers, a grant) in the module's Veil."""
    monkeypatch.setattr(conftest, "bootstrap_operator", lambda _veil: operator_token)
    return make_world(veil, api)


def key_pair() -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, pem.decode()


def platform_keys(veil: Veil) -> dict[int, SigningPublicKey]:
    return {k.key_version: k for k in veil.keys.signing_public_keys()}


def events(veil: Veil, action: str) -> list[AuditEvent]:
    with veil.db.read() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def issued(world: World) -> tuple[Ed25519PrivateKey, dict[str, Any]]:
    """The provider registers a key; the enterprise issues the grant's letter."""
    key, pem = key_pair()
    world.provider.register_letter_key(pem)
    view = world.acme.issue_letter(world.grant_id, 365, INSURANCE)
    return key, view["letter"]


def submit(world: World) -> dict[str, Any]:
    return world.provider.submit_job(world.dataset_id, PURPOSE, 0.1, COUNT)


# ---------------------------------------------------------------- the purpose vocabulary


def test_letters_are_required_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installation that says nothing requires letters (the tests' conftest turns them
    off for tests about other things; here the variable is removed)."""
    monkeypatch.delenv("VEIL_COMMITMENT_LETTERS", raising=False)
    assert Settings().commitment_letters is True
    monkeypatch.setenv("VEIL_COMMITMENT_LETTERS", "false")
    assert Settings().commitment_letters is False


def test_vocabulary_is_seeded_read_by_everyone_and_kept_by_the_operator(
    world: World, veil: Veil
) -> None:
    codes = {p["code"]: p for p in world.provider.list_purposes()}
    assert codes["energy-management"]["name_zh"] == "能源管理"
    assert {"process-optimization", "predictive-maintenance", "quality-analysis"} <= set(codes)
    assert world.acme.list_purposes() == world.operator.list_purposes()

    for client in (world.acme, world.provider):
        with pytest.raises(ApiError) as refused:
            client.set_purpose("carbon-accounting", "碳核算", "Carbon accounting")
        assert refused.value.status == 403
    added = world.operator.set_purpose("carbon-accounting", "碳核算", "Carbon accounting")
    assert added["retired"] is False
    [event] = [e for e in events(veil, "purpose.set") if e.resource == "purpose:carbon-accounting"]
    assert event.details["changes"]["name_zh"] == {"before": None, "after": "碳核算"}

    with pytest.raises(ApiError) as bad:
        world.operator.set_purpose("Carbon Accounting", "碳核算", "Carbon accounting")
    assert bad.value.status == 422 and "lower-case" in bad.value.message


def test_new_grants_name_only_current_purposes(world: World) -> None:
    provider_id, until = world.provider_id, datetime.now(UTC) + timedelta(days=1)

    def grant(purpose: str) -> dict[str, Any]:
        return world.acme.create_grant(
            provider_id, [world.dataset_id], GRANTED, [3], [purpose], until, 1.0
        )

    with pytest.raises(ApiError) as unknown:
        grant("marketing")
    assert unknown.value.status == 422
    assert "'marketing'" in unknown.value.message and "vocabulary" in unknown.value.message
    assert grant("quality-analysis")["purposes"] == ["quality-analysis"]

    world.operator.set_purpose("scrap-tracking", "废品追踪", "Scrap tracking")
    kept = grant("scrap-tracking")
    world.operator.set_purpose("scrap-tracking", "废品追踪", "Scrap tracking", retired=True)
    with pytest.raises(ApiError) as retired:
        grant("scrap-tracking")
    assert retired.value.status == 422
    # A grant made before the retirement keeps its purpose.
    assert world.acme.get_grant(kept["id"])["purposes"] == ["scrap-tracking"]


# ---------------------------------------------------------------- letters and the grant


def test_a_job_on_a_grant_without_a_signed_letter_is_refused(world: World, veil: Veil) -> None:
    grant = world.acme.get_grant(world.grant_id)
    assert grant["letter_required"] is True and grant["letter_signed_at"] is None
    with pytest.raises(ApiError) as refused:
        submit(world)
    assert refused.value.status == 403
    assert refused.value.reasons == [str(LETTER_UNSIGNED)]
    denial = [e for e in events(veil, "job.denied") if e.resource == f"job:{refused.value.job_id}"]
    assert denial and str(LETTER_UNSIGNED) in denial[0].details["reasons"]

    issued(world)
    with pytest.raises(ApiError) as still:  # issued, not yet signed by the provider
        submit(world)
    assert still.value.reasons == [str(LETTER_UNSIGNED)]


def test_the_provider_signs_and_the_grant_comes_into_force(world: World, veil: Veil) -> None:
    with pytest.raises(ApiError) as no_key:
        world.acme.issue_letter(world.grant_id, 365, INSURANCE)
    assert no_key.value.status == 409 and "register-key" in no_key.value.message
    key, letter = issued(world)
    assert letter["purposes"][0] == {
        "code": PURPOSE,
        "name_zh": "工艺优化",
        "name_en": "Process optimisation",
    }
    assert letter["obligations"]["no_third_party_sharing"] is True
    assert letter["insurance_reference"] == INSURANCE
    verify_letter(letter, platform_keys(veil), require_provider=False)  # Veil signed it

    signed = world.provider.sign_letter(world.grant_id, sign_as_provider(letter, key))
    assert signed["status"] == "signed"
    verify_letter(signed["letter"], platform_keys(veil))
    assert world.acme.get_grant(world.grant_id)["letter_signed_at"] is not None
    job = submit(world)
    assert world.provider.wait_for_job(job["id"], timeout=60)["status"] == "released"
    assert [e.resource for e in events(veil, "letter.signed")].count(f"grant:{world.grant_id}") == 1
    with pytest.raises(ApiError) as again:
        world.provider.sign_letter(world.grant_id, sign_as_provider(letter, key))
    assert again.value.status == 409


def test_a_forged_or_altered_provider_signature_is_refused(world: World, veil: Veil) -> None:
    key, letter = issued(world)
    forger, _ = key_pair()
    altered = {**letter, "insurance_reference": "NONE"}
    good = sign_as_provider(letter, key)
    flipped = good[:-4] + ("A" if good[-4] != "A" else "B") + good[-3:]
    for signature in (
        sign_as_provider(letter, forger),  # another key than the one registered
        sign_as_provider(altered, key),  # the right key, over a letter that says less
        flipped,
        "ed25519:not-base64",
    ):
        with pytest.raises(ApiError) as refused:
            world.provider.sign_letter(world.grant_id, signature)
        assert refused.value.status == 422 and refused.value.code == "invalid_signature"
    assert world.acme.get_grant(world.grant_id)["letter_signed_at"] is None
    with pytest.raises(ApiError):
        submit(world)
    refusals = [
        e
        for e in events(veil, "letter.signature_refused")
        if e.resource == f"grant:{world.grant_id}"
    ]
    assert len(refusals) == 4 and all(e.outcome == "denied" for e in refusals)


def test_who_sees_and_signs_a_letter(world: World) -> None:
    key, letter = issued(world)
    assert world.provider.get_letter(world.grant_id)["letter"] == letter
    assert world.acme.get_letter(world.grant_id)["letter"] == letter
    for stranger in (world.other_provider, world.globex):
        with pytest.raises(ApiError) as hidden:
            stranger.get_letter(world.grant_id)
        assert hidden.value.status == 404
    with pytest.raises(ApiError) as other:
        world.other_provider.sign_letter(world.grant_id, sign_as_provider(letter, key))
    assert other.value.status == 404
    with pytest.raises(ApiError) as enterprise:
        world.acme.sign_letter(world.grant_id, sign_as_provider(letter, key))
    assert enterprise.value.status == 403
    with pytest.raises(ApiError) as twice:
        world.acme.issue_letter(world.grant_id, 30, INSURANCE)
    assert twice.value.status == 409


# ---------------------------------------------------------------- offline verification


@pytest.mark.parametrize("crypto_profile", list(CryptoProfile), scope="module")
def test_offline_verification_fails_on_any_altered_byte(world: World, veil: Veil) -> None:
    key, letter = issued(world)
    letter = world.provider.sign_letter(world.grant_id, sign_as_provider(letter, key))["letter"]
    keys = platform_keys(veil)
    original = dumps(letter).encode()
    verify_letter(load_letter(original.decode()), keys)
    passed = []
    for index in range(len(original)):
        mutated = bytearray(original)
        mutated[index] ^= 0x01
        try:
            verify_letter(load_letter(bytes(mutated).decode()), keys)
        except (InvalidSignature, InvalidLetter, UnicodeDecodeError, ValueError):
            continue
        passed.append(index)
    assert passed == [], [original[i - 10 : i + 10] for i in passed]
    # Base64 leaves low bits of a signature's last character unused: another character
    # there would decode to the same signature, so each spelling but one must be refused.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    for field in ("enterprise_signature", "provider_signature"):
        text = letter[field]
        last = len(text.rstrip("=")) - 1
        for other in alphabet.replace(text[last], ""):
            respelt = {**letter, field: text[:last] + other + text[last + 1 :]}
            with pytest.raises((InvalidSignature, InvalidLetter)):
                verify_letter(respelt, keys)
            # The letter as issued, before the provider's signature covers Veil's.
            unsigned = {k: v for k, v in respelt.items() if k != "provider_signature"}
            if field == "enterprise_signature":
                with pytest.raises(InvalidSignature):
                    verify_letter(unsigned, keys, require_provider=False)


def test_cli_keygen_register_issue_sign_show_and_verify(
    world: World, veil: Veil, tmp_path: Path
) -> None:
    runner = CliRunner()
    private, public = tmp_path / "provider.key", tmp_path / "provider.pub"
    provider_token = world.operator.issue_token(world.provider_id)
    acme_token = world.operator.issue_token(world.acme.me()["id"])
    remote = ["--url", world.url]

    def veil_cli(*args: str, ok: bool = True) -> str:
        done = runner.invoke(cli_app, list(args))
        assert (done.exit_code == 0) == ok, done.output
        return done.output

    veil_cli("letters", "keygen", "--private-key", str(private), "--public-key", str(public))
    assert private.stat().st_mode & 0o077 == 0
    veil_cli(
        "letters", "register-key", "--public-key", str(public), "--token", provider_token, *remote
    )
    veil_cli(
        "letters", "issue", world.grant_id, "--retention-days", "180",
        "--insurance", INSURANCE, "--token", acme_token, *remote,
    )  # fmt: skip
    veil_cli("letters", "sign", world.grant_id, "--private-key", str(private),
             "--token", provider_token, *remote)  # fmt: skip
    letter_file, page = tmp_path / "letter.json", tmp_path / "letter.html"
    veil_cli("letters", "show", world.grant_id, "--output", str(letter_file), "--html", str(page),
             "--token", acme_token, *remote)  # fmt: skip
    require(shutil.which("chromium") is not None, "Chromium (package chromium), for --pdf")
    pdf = tmp_path / "letter.pdf"
    veil_cli("letters", "show", world.grant_id, "--pdf", str(pdf), "--token", acme_token, *remote)
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 5000
    key_file = tmp_path / "platform.pem"
    key_file.write_text("".join(k.to_pem() for k in veil.keys.signing_public_keys()))
    for file in (letter_file, page):
        said = veil_cli("letters", "verify", str(file), "--public-key", str(key_file),
                        "--provider-key", str(public))  # fmt: skip
        assert "both signatures valid" in said
    assert "能源管理" not in page.read_text() and "工艺优化" in page.read_text()

    letter = json.loads(letter_file.read_text())
    letter["obligations"]["retention_days"] = 3650
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(letter))
    veil_cli("letters", "verify", str(edited), "--public-key", str(key_file), ok=False)
    _, stranger = key_pair()
    other = tmp_path / "other.pub"
    other.write_text(stranger)
    veil_cli("letters", "verify", str(letter_file), "--public-key", str(key_file),
             "--provider-key", str(other), ok=False)  # fmt: skip
    assert world.provider.wait_for_job(submit(world)["id"], timeout=60)["status"] == "released"


def test_console_shows_issues_and_prints_the_letter(world: World) -> None:
    acme_token = world.operator.issue_token(world.acme.me()["id"])
    provider_token = world.operator.issue_token(world.provider_id)
    world.provider.register_letter_key(key_pair()[1])

    def console(token: str) -> httpx.Client:
        return httpx.Client(base_url=world.url, cookies={"veil_console": token})

    with console(acme_token) as acme, console(provider_token) as provider:
        grants = acme.get("/console/grants").text
        assert "in force only once the provider signs" in grants
        assert "energy-management" in grants  # the vocabulary, next to the form
        waiting = provider.get("/console/catalog").text
        assert world.grant_id in waiting and "has not issued the letter yet" in waiting
        form = {"csrf": csrf_token(acme_token), "retention_days": "90",
                "insurance_reference": INSURANCE}  # fmt: skip
        issued = acme.post(f"/console/grants/{world.grant_id}/letter", data=form)
        assert issued.status_code == 303
        assert "awaiting the provider" in acme.get("/console/grants").text
        for client in (acme, provider):
            page = client.get(f"/console/letters/{world.grant_id}")
            assert page.status_code == 200 and INSURANCE in page.text
            assert "default-src 'none'" in page.headers["content-security-policy"]
            assert load_letter(page.text) == world.acme.get_letter(world.grant_id)["letter"]
        assert "Read the letter" in provider.get("/console/catalog").text
    with console(world.operator.issue_token(world.globex.me()["id"])) as globex:
        assert globex.get(f"/console/letters/{world.grant_id}").status_code == 404


# ---------------------------------------------------------------- retention


def test_results_and_models_are_shredded_when_the_retention_period_ends(
    world: World, veil: Veil, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, letter = issued(world)
    world.provider.sign_letter(world.grant_id, sign_as_provider(letter, key))
    job_id = submit(world)["id"]
    assert world.provider.wait_for_job(job_id, timeout=60)["status"] == "released"
    assert world.provider.get_result(job_id)["result_sha256"]
    # A model of that job, stored as the runner stores tier-4 weights.
    acme_slug = world.acme.me()["slug"]
    stored = store_artifact(veil, acme_slug, world.acme.me()["id"], job_id, b"weights")
    with veil.db.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.artifact_path, job.artifact_wrapped_key = stored.path, stored.wrapped_key
        job.artifact_sha256 = stored.sha256
    model_file = veil.settings.objects_dir / stored.path
    model = f"/v1/jobs/{job_id}/model"
    assert world.provider._download(model) == b"weights"

    retain_until = datetime.fromisoformat(letter["obligations"]["retain_until"])
    Upkeep(veil)()  # before the end: nothing happens
    assert world.provider.get_result(job_id)["result_sha256"]
    monkeypatch.setattr(veil, "clock", lambda: retain_until + timedelta(seconds=1))
    Upkeep(veil)()  # the workers' upkeep, as it runs every heartbeat
    monkeypatch.undo()

    for read in (
        lambda: world.provider.get_result(job_id),
        lambda: world.provider._download(model),
    ):
        with pytest.raises(ApiError) as gone:
            read()
        assert gone.value.status == 409 and gone.value.code == "shredded"
        assert "retention period" in gone.value.message
    assert not model_file.exists()
    with veil.db.read() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.result is None and job.artifact_wrapped_key is None
        assert job.result_sha256  # what was released is still named (receipts, audit)
    [event] = [
        e
        for e in events(veil, "letter.retention_shredded")
        if e.resource == f"grant:{world.grant_id}"
    ]
    assert event.details["jobs"] == [job_id] and event.details["files"] == 1
    assert world.provider.get_letter(world.grant_id)["status"] == "shredded"
    assert world.provider.get_job(job_id)["shredded_at"] is not None
    assert shred_expired(veil, retain_until + timedelta(days=1)) == 0  # done once


# ---------------------------------------------------------------- evidence packs


# gm: the pack's audit export spans the chain's switch to SM3 (at the deployment's start)
@pytest.mark.parametrize("crypto_profile", list(CryptoProfile), scope="module")
def test_evidence_pack_verifies_offline_and_catches_any_change(
    world: World, veil: Veil, tmp_path: Path
) -> None:
    key, letter = issued(world)
    with pytest.raises(ApiError) as unsigned:
        world.acme.evidence_pack(world.grant_id)
    assert unsigned.value.status == 409
    world.provider.sign_letter(world.grant_id, sign_as_provider(letter, key))
    job_id = submit(world)["id"]
    assert world.provider.wait_for_job(job_id, timeout=60)["status"] == "released"

    pack = world.acme.evidence_pack(world.grant_id)
    keys = platform_keys(veil)
    summary = verify_pack(pack, keys)
    assert summary["grant"] == world.grant_id and summary["receipt_jobs"] == 1
    assert [j["job_id"] for j in pack["receipt"]["jobs"]] == [job_id]
    actions = [json.loads(line).get("action") for line in pack["audit_export"][1:]]
    assert {"grant.created", "letter.issued", "letter.signed", "receipt.issued"} <= set(actions)
    assert [e.details["pack_id"] for e in events(veil, "evidence.issued")].count(pack["id"]) == 1

    refused = (InvalidSignature, VeilError, ValueError, UnicodeDecodeError)
    original = evidence_format.dumps(pack).encode()
    stride = max(1, len(original) // 1500)
    for index in range(0, len(original), stride):
        mutated = bytearray(original)
        mutated[index] ^= 0x01
        with pytest.raises(refused):
            verify_pack(evidence_format.load_pack(bytes(mutated).decode()), keys)
    outer = json.loads(json.dumps(pack))
    outer["issued_to"]["name"] = "Someone else"  # outside every part: the pack's signature
    with pytest.raises(InvalidSignature):
        verify_pack(outer, keys)

    def resigned(**parts: Any) -> dict[str, Any]:
        """The pack with ``parts`` replaced and signed again by the platform key."""
        body = {k: v for k, v in pack.items() if k not in ("signature", "key_version")}
        return evidence_format.sign_pack(body | parts, veil.keys.sign)

    # Each part is checked on its own even under a valid pack signature...
    letter = {**pack["letter"], "insurance_reference": "NONE"}
    with pytest.raises(InvalidSignature):
        verify_pack(resigned(letter=letter), keys)
    lines = list(pack["audit_export"])
    at = next(i for i, line in enumerate(lines) if '"action":"letter.issued"' in line)
    lines[at] = lines[at].replace('"outcome":"ok"', '"outcome":"denied"')
    assert lines[at] != pack["audit_export"][at]
    with pytest.raises(evidence_format.InvalidPack):
        verify_pack(resigned(audit_export=lines), keys)
    # ...and parts that each verify alone must belong together: another receipt.
    with pytest.raises(evidence_format.InvalidPack):
        verify_pack(resigned(receipt=world.acme.usage_receipt(world.provider_id)), keys)

    runner = CliRunner()
    file, key_file = tmp_path / "pack.json", tmp_path / "platform.pem"
    key_file.write_text("".join(k.to_pem() for k in veil.keys.signing_public_keys()))
    token = world.operator.issue_token(world.acme.me()["id"])
    made = runner.invoke(cli_app, ["evidence", "create", world.grant_id, "--output", str(file),
                                   "--token", token, "--url", world.url])  # fmt: skip
    assert made.exit_code == 0, made.output
    ok = runner.invoke(cli_app, ["evidence", "verify", str(file), "--public-key", str(key_file)])
    assert ok.exit_code == 0 and "every part valid" in ok.output, ok.output
    edited = json.loads(file.read_text())
    edited["letter"]["insurance_reference"] = "NONE"
    file.write_text(json.dumps(edited))
    bad = runner.invoke(cli_app, ["evidence", "verify", str(file), "--public-key", str(key_file)])
    assert bad.exit_code == 1

    for stranger in (world.globex, world.provider):
        with pytest.raises(ApiError) as hidden:
            stranger.evidence_pack(world.grant_id)
        assert hidden.value.status in (403, 404)


def test_names_are_escaped_in_the_letter_page(world: World) -> None:
    _, letter = issued(world)
    hostile = {**letter, "enterprise": {"id": "ent_x", "name": "<script>alert(1)</script>"}}
    page = render_html(hostile)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert load_letter(page) == hostile  # the embedded JSON reads back exactly


def test_a_grant_made_before_the_vocabulary_keeps_its_purpose_and_needs_no_letter(
    world: World, veil: Veil
) -> None:
    """A grant stored before migration 0019 (as an old installation has it): a purpose the
    vocabulary never held, no letter required.  Its jobs run as before."""
    until = datetime.now(UTC) + timedelta(days=1)
    terms = GrantTerms(world.provider_id, (world.dataset_id,), tuple(GRANTED), (3,),
                       ("legacy-benchmarking",), datetime.now(UTC), until, 1.0)  # fmt: skip
    with veil.db.transaction() as session:
        old = create_grant(session, world.acme.me()["id"], terms, min_group_floor=10)
        old_id = old.id
    world.acme.revoke_grant(world.grant_id)  # only the old grant gives the dataset now
    job = world.provider.submit_job(world.dataset_id, "legacy-benchmarking", 0.1, COUNT)
    assert job["grant_id"] == old_id
    assert world.provider.wait_for_job(job["id"], timeout=60)["status"] == "released"
    with pytest.raises(ApiError) as new_grant:
        world.acme.create_grant(world.provider_id, [world.dataset_id], GRANTED, [3],
                                ["legacy-benchmarking"], until, 1.0)  # fmt: skip
    assert new_grant.value.status == 422


def test_the_decision_rule_on_letters() -> None:
    now = datetime.now(UTC)
    request = JobRequest("prv_1", "ds_1", PURPOSE, 3, frozenset({"machine"}), 1000, 0)

    def grant(**letter: Any) -> Grant:
        return Grant(id="gr_1", enterprise_id="ent_1", provider_id="prv_1", dataset_ids=["ds_1"],
                     columns=["machine"], tiers=[3], purposes=[PURPOSE],
                     valid_from=now - timedelta(days=1), valid_until=now + timedelta(days=1),
                     epsilon_budget=10**6, delta_budget=0, epsilon_spent=0, delta_spent=0,
                     revoked_at=None, **letter)  # fmt: skip

    classes = {"machine": "public"}
    assert decide(request, classes, [grant(letter_required=False)], now).allowed
    unsigned = decide(request, classes, [grant(letter_required=True)], now)
    assert not unsigned.allowed and unsigned.reasons == (LETTER_UNSIGNED,)
    signed = grant(letter_required=True, letter_signed_at=now)
    assert decide(request, classes, [signed], now).allowed
    assert not grant(letter_required=True).active_at(now) and signed.active_at(now)
