"""Providers' scorecards and exit (sandbox.scorecards; docs/programme.md, "Scorecards and
exit"), through the services on a real database and key server, no API server.

Pass and fail are steered by the bureau's assessments (weights: the bureau's alone).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from keys import CryptoProfile, InvalidSignature, LocalKeyServer, Signature, verify_signature
from policies.audit import AuditEvent
from policies.db import new_id
from policies.errors import Conflict, Forbidden, InvalidRequest, NotFound
from policies.grants import Grant, GrantTerms, create_grant
from policies.principals import Principal, Role, Status, create_principal
from sandbox.accounts.tenants import create_bureau, create_enterprise, create_provider
from sandbox.jobs.artifacts import store_artifact
from sandbox.oversight.audit_log import public_keys
from sandbox.programme.protection import Protector
from sandbox.runtime.veil import Veil
from sandbox.scorecards import exits, periods
from sandbox.scorecards.document import signed_message
from sandbox.service import open_veil
from sandbox.store.models import Job, JobStatus
from sandbox.store.scorecard_models import ExitProposal, ExitStatus
from tests.sandbox.conftest import key_server_for, settings_for

pytestmark = pytest.mark.integration

ONLY_BUREAU = {"kpi": 0, "ratings": 0, "bureau": 1, "assessors": 0}
FAIL, PASS = 20.0, 90.0


@dataclass
class Programme:
    veil: Veil
    operator: Principal
    bureau: Principal
    acme: Principal  # a real enterprise, with its keys
    providers: list[Principal]
    grants: dict[str, str]  # provider id -> its grant from acme


@pytest.fixture
def programme(
    tmp_path: Path, key_server: LocalKeyServer, bao_binary: Path, crypto_profile: CryptoProfile
) -> Iterator[Programme]:
    with (
        key_server_for(crypto_profile, key_server, tmp_path / "bao-gm", bao_binary) as server,
        open_veil(
            settings_for(tmp_path, server, crypto_profile=crypto_profile), worker=False
        ) as veil,
    ):
        with veil.db.transaction() as session:
            operator = create_principal(session, Role.OPERATOR, "operator")
        bureau = create_bureau(veil, operator, "Bureau")
        acme = create_enterprise(veil, operator, "Acme", f"acme-{uuid.uuid4().hex[:8]}")
        providers = [create_provider(veil, operator, f"Provider {i}") for i in range(3)]
        grants = {p.id: _grant(veil, acme, p) for p in providers}
        yield Programme(veil, operator, bureau, acme, providers, grants)


def _grant(veil: Veil, enterprise: Principal, provider: Principal) -> str:
    now = datetime.now(UTC)
    terms = GrantTerms(provider.id, ("ds_x",), ("machine",), (3,), ("process-optimization",),
                       now - timedelta(days=1), now + timedelta(days=30), 1.0)  # fmt: skip
    with veil.db.transaction() as session:
        return create_grant(session, enterprise.id, terms, min_group_floor=5).id


def _period(p: Programme, scores: dict[str, float]) -> list[dict[str, object]]:
    """Open a period, assess each provider named, close it; the scorecards' summaries."""
    period = periods.open_period(p.veil, p.bureau, f"P-{uuid.uuid4().hex[:6]}", ONLY_BUREAU)
    for provider_id, score in scores.items():
        periods.assess(p.veil, p.bureau, provider_id, score, "delivery against the plan")
    periods.close_period(p.veil, p.bureau, period.id)
    return periods.list_scorecards(p.veil, p.bureau, period.id)


def _proposals(p: Programme, provider_id: str) -> list[ExitProposal]:
    return [e for e in exits.list_exits(p.veil, p.bureau) if e.provider_id == provider_id]


def test_exactly_one_exit_proposal_after_two_fails_in_a_row(programme: Programme) -> None:
    twice, alternating, once = (pr.id for pr in programme.providers)
    _period(programme, {twice: FAIL, alternating: FAIL, once: FAIL})
    assert exits.list_exits(programme.veil, programme.bureau) == []  # one failure: none
    _period(programme, {twice: FAIL, alternating: PASS, once: PASS})
    assert [e.status for e in _proposals(programme, twice)] == [ExitStatus.PROPOSED]
    _period(programme, {twice: FAIL, alternating: FAIL, once: PASS})
    assert len(_proposals(programme, twice)) == 1  # a third failure: still the one
    assert _proposals(programme, alternating) == []  # fail, pass, fail: none
    assert _proposals(programme, once) == []
    # A period with nothing to score is neither a failure nor a pass: it breaks the run.
    cards = _period(programme, {alternating: FAIL})
    assert {c["provider_id"]: c["result"] for c in cards}[once] == "not_scored"
    assert len(_proposals(programme, alternating)) == 1  # fail, fail: its own proposal


def _jobs(p: Programme, provider: Principal) -> dict[str, str]:
    """A queued job, a released one with a result, a released model (encrypted) and a held
    output (its encrypted object stands in)."""
    ids = {}
    with p.veil.db.transaction() as session:
        for kind, status in (("queued", JobStatus.QUEUED), ("result", JobStatus.RELEASED),
                             ("model", JobStatus.RELEASED), ("held", JobStatus.HELD)):  # fmt: skip
            job = Job(id=new_id("job"), provider_id=provider.id, enterprise_id=p.acme.id,
                      dataset_id="ds_x", grant_id=p.grants[provider.id], purpose="x", tier=3,
                      query={}, epsilon=1, delta=0, status=status,
                      result={"rows": [1]} if status == JobStatus.RELEASED else None,
                      result_sha256="0" * 64)  # fmt: skip
            session.add(job)
            ids[kind] = job.id
    assert p.acme.slug is not None
    for kind in ("model", "held"):
        stored = store_artifact(p.veil, p.acme.slug, p.acme.id, ids[kind], b"weights")
        with p.veil.db.transaction() as session:
            job = session.get(Job, ids[kind])
            assert job is not None
            job.artifact_path, job.artifact_wrapped_key = stored.path, stored.wrapped_key
            job.artifact_sha256 = stored.sha256
    return ids


def _two_fails(p: Programme, provider: Principal) -> ExitProposal:
    _period(p, {provider.id: FAIL})
    _period(p, {provider.id: FAIL})
    (proposal,) = _proposals(p, provider.id)
    return proposal


def test_rejected_proposal_changes_nothing(programme: Programme) -> None:
    provider = programme.providers[0]
    ids = _jobs(programme, provider)
    proposal = _two_fails(programme, provider)
    exits.decide(programme.veil, programme.bureau, proposal.id, False, "a new plan was agreed")
    with programme.veil.db.read() as session:
        assert session.get(Grant, programme.grants[provider.id]).revoked_at is None  # type: ignore[union-attr]
        jobs = {k: session.get(Job, v) for k, v in ids.items()}
        assert jobs["queued"].status == JobStatus.QUEUED  # type: ignore[union-attr]
        assert jobs["result"].result == {"rows": [1]}  # type: ignore[union-attr]
        assert jobs["model"].artifact_wrapped_key is not None  # type: ignore[union-attr]
        assert session.get(Principal, provider.id).status == Status.ACTIVE  # type: ignore[union-attr]
    with pytest.raises(Conflict):
        exits.decide(programme.veil, programme.bureau, proposal.id, True, "changed our mind")


def test_confirmed_exit_leaves_nothing_of_the_provider(programme: Programme) -> None:
    provider, other = programme.providers[0], programme.providers[1]
    ids, kept = _jobs(programme, provider), _jobs(programme, other)
    proposal = _two_fails(programme, provider)
    with programme.veil.db.read() as session:
        path = session.get(Job, ids["model"]).artifact_path  # type: ignore[union-attr]
    assert path is not None and (programme.veil.settings.objects_dir / path).exists()
    exits.decide(programme.veil, programme.bureau, proposal.id, True, "failed two quarters")
    with programme.veil.db.read() as session:
        grants = session.scalars(select(Grant).where(Grant.provider_id == provider.id))
        assert all(g.revoked_at is not None for g in grants)
        jobs = list(session.scalars(select(Job).where(Job.provider_id == provider.id)))
        assert not [j for j in jobs if j.status in (JobStatus.QUEUED, JobStatus.HELD)]
        assert all(j.result is None and j.artifact_path is None for j in jobs)
        assert all(j.artifact_wrapped_key is None and j.node_release is None for j in jobs)
        assert session.get(Principal, provider.id).status == Status.SUSPENDED  # type: ignore[union-attr]
        untouched = session.get(Job, kept["result"])
        assert untouched is not None and untouched.result == {"rows": [1]}
        actions = set(session.scalars(select(AuditEvent.action)))
    assert not (programme.veil.settings.objects_dir / path).exists()
    assert {"scorecards.exit_confirmed", "grant.revoked", "job.cancelled",
            "provider.suspended", "job.outputs_shredded"} <= actions  # fmt: skip
    (gone,) = exits.standing(programme.veil, programme.bureau)
    assert (gone["provider_id"], gone["status"]) == (provider.id, "exited")
    assert gone["reason"] == "failed two quarters"
    # Exited: not scored again.
    cards = _period(programme, {})
    assert provider.id not in {c["provider_id"] for c in cards}


@pytest.mark.parametrize("crypto_profile", list(CryptoProfile))
def test_provider_reads_only_its_own_scorecards(programme: Programme) -> None:
    mine, theirs = programme.providers[0], programme.providers[1]
    cards = _period(programme, {mine.id: PASS, theirs.id: FAIL})
    by_provider = {c["provider_id"]: c for c in cards}
    own = periods.list_scorecards(programme.veil, mine)
    assert [c["provider_id"] for c in own] == [mine.id]
    assert periods.get_scorecard(programme.veil, mine, str(by_provider[mine.id]["id"]))
    with pytest.raises(NotFound):
        periods.get_scorecard(programme.veil, mine, str(by_provider[theirs.id]["id"]))
    with pytest.raises(Forbidden):
        periods.list_scorecards(programme.veil, programme.acme)
    with pytest.raises(Forbidden):
        periods.open_period(programme.veil, mine, "mine")
    assert exits.list_exits(programme.veil, mine) == []
    # Signed with the platform's key: verifiable, and any change breaks it.
    document = dict(by_provider[mine.id]["document"])  # type: ignore[call-overload]
    assert document["result"] == "passed" and document["score"] == PASS
    signature = Signature.from_text(document["signature"])
    key = public_keys(programme.veil)[signature.key_version]
    verify_signature(key, signed_message(document), signature)
    assert signature.algorithm == ("sm2" if programme.veil.keys.profile == "gm" else "ed25519")
    with pytest.raises(InvalidSignature):
        verify_signature(key, signed_message({**document, "result": "failed"}), signature)


def _raters(p: Programme, count: int) -> list[Principal]:
    """``count`` enterprises (rows only) that granted the first provider something."""
    made = []
    for i in range(count):
        with p.veil.db.transaction() as session:
            made.append(
                create_principal(
                    session, Role.ENTERPRISE, f"E{i}", slug=f"e{i}-{uuid.uuid4().hex[:6]}"
                )
            )
        now = datetime.now(UTC)
        terms = GrantTerms(p.providers[0].id, ("ds_x",), ("machine",), (3,), ("x",),
                           now - timedelta(days=2), now - timedelta(days=1), 1.0)  # fmt: skip
        with p.veil.db.transaction() as session:
            create_grant(session, made[-1].id, terms, min_group_floor=5)  # a past grant
    return made


@pytest.mark.parametrize("count", [3, 6])
def test_fewer_than_five_raters_are_never_shown(programme: Programme, count: int) -> None:
    provider = programme.providers[0]
    period = periods.open_period(programme.veil, programme.bureau, "Q1")
    for i, enterprise in enumerate(_raters(programme, count)):
        periods.rate(programme.veil, enterprise, provider.id, 1 + i % 5)
    periods.close_period(programme.veil, programme.bureau, period.id)
    (card,) = [c for c in periods.list_scorecards(programme.veil, provider)]
    ratings = card["document"]["components"]["ratings"]  # type: ignore[index]
    if count < 5:
        assert ratings == {"score": None, "raters": 3, "shown": False, "mean": None,
                           "note": "too few to show"}  # fmt: skip
    else:
        assert ratings["shown"] and 1 <= ratings["mean"] <= 5


def test_released_ratings_cannot_isolate_one_enterprise() -> None:
    protect = Protector(secrets.token_bytes(32))
    four = {f"e{i}": 5 for i in range(4)}
    assert periods.released_ratings(protect, "l", four)["mean"] is None
    # Five raters: the mean of the protection's perturbed sum and count, on the scale; the
    # same raters in the same figure get the same release (asking again gains nothing).
    five = {**four, "e4": 1}
    shown = periods.released_ratings(protect, "l", five)
    assert shown["shown"] and 1 <= shown["mean"] <= 5
    assert periods.released_ratings(protect, "l", dict(reversed(five.items()))) == shown


def test_rating_rules(programme: Programme) -> None:
    provider = programme.providers[0]
    with pytest.raises(Conflict):  # no period open
        periods.rate(programme.veil, programme.acme, provider.id, 4)
    periods.open_period(programme.veil, programme.bureau, "Q1")
    with pytest.raises(Conflict):
        periods.open_period(programme.veil, programme.bureau, "Q2")
    with pytest.raises(InvalidRequest):
        periods.rate(programme.veil, programme.acme, provider.id, 6)
    (stranger,) = _raters(programme, 1)
    with pytest.raises(NotFound):  # a provider it never granted
        periods.rate(programme.veil, stranger, programme.providers[1].id, 4)
    first = periods.rate(programme.veil, programme.acme, provider.id, 2)
    again = periods.rate(programme.veil, programme.acme, provider.id, 4)
    assert (again.id, again.rating) == (first.id, 4)
    with pytest.raises(Forbidden):
        periods.rate(programme.veil, provider, provider.id, 4)
