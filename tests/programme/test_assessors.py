"""Registered third-party assessors (sandbox.scorecards.assessors; docs/programme.md,
"Assessors"), through the services on a real database and key server, no API server.

The bureau registers and suspends assessors; each assessor records its own assessment of
a provider in the open period; the scorecard's ``assessors`` component is the mean of the
registered assessors' scores, each named.  The API's side (every route against every
caller) is tests/security/authz_table.py's.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from policies.audit import AuditEvent
from policies.capabilities import Capability, may
from policies.db import new_id
from policies.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthenticated
from policies.principals import Principal, Role, Status, authenticate, issue_token
from sandbox.accounts.tenants import list_principals
from sandbox.programme import service
from sandbox.scorecards import assessors, periods
from sandbox.store.scorecard_models import Assessment
from tests.programme.test_scorecards import Programme

pytestmark = pytest.mark.integration

ONLY_ASSESSORS = {"kpi": 0, "ratings": 0, "bureau": 0, "assessors": 1}


def _open(p: Programme) -> str:
    return periods.open_period(p.veil, p.bureau, f"P-{uuid.uuid4().hex[:6]}", ONLY_ASSESSORS).id


def _card(p: Programme, period_id: str, provider: Principal) -> dict[str, object]:
    periods.close_period(p.veil, p.bureau, period_id)
    (card,) = [c for c in periods.list_scorecards(p.veil, p.bureau, period_id)
               if c["provider_id"] == provider.id]  # fmt: skip
    return dict(card["document"])  # type: ignore[call-overload]


def test_the_assessors_component_is_the_registered_assessors_mean(programme: Programme) -> None:
    p, provider = programme, programme.providers[0]
    first = assessors.register(p.veil, p.bureau, "Quality Institute")
    second = assessors.register(p.veil, p.bureau, "Standards Office")
    period_id = _open(p)
    made = assessors.assess(p.veil, first, provider.id, 10, "first look")
    again = assessors.assess(p.veil, first, provider.id, 60, "on second reading")
    assert again.id == made.id  # recording again replaces it: one per assessor and period
    assessors.assess(p.veil, second, provider.id, 80, "on plan")
    periods.assess(p.veil, p.bureau, provider.id, 5, "the bureau's own")  # not an assessor's
    with p.veil.db.transaction() as session:  # typed in by the bureau before migration 0022
        session.add(Assessment(id=new_id("asm"), period_id=period_id, provider_id=provider.id,
                               assessor="Old Institute", score=0.0, reason="unregistered",
                               recorded_by=p.bureau.id, recorded_at=p.veil.clock()))  # fmt: skip
    for who, score in ((first, 60), (second, 80)):  # each sees its own score, not another's
        view = assessors.own_view(p.veil, who)
        assert view["period"]["id"] == period_id
        mine = {row["id"]: row["assessment"] for row in view["providers"]}
        assert mine[provider.id]["score"] == score and mine[p.providers[1].id] is None
    document = _card(p, period_id, provider)
    part = document["components"]["assessors"]  # type: ignore[index]
    assert part["score"] == 70.0 and document["score"] == 70.0  # (60 + 80) / 2
    named = {(a["assessor_id"], a["assessor"], a["score"], a["reason"], a["assessor_status"])
             for a in part["assessments"]}  # fmt: skip
    assert named == {(first.id, "Quality Institute", 60.0, "on second reading", "active"),
                     (second.id, "Standards Office", 80.0, "on plan", "active")}  # fmt: skip
    assert document["components"]["bureau"]["score"] == 5.0  # type: ignore[index]
    with p.veil.db.read() as session:
        actors = set(
            session.scalars(
                select(AuditEvent.actor_id).where(
                    AuditEvent.action == "scorecards.provider_assessed",
                    AuditEvent.resource == f"principal:{provider.id}",
                )
            )
        )
    assert actors == {first.id, second.id, p.bureau.id}  # each assessor is its own actor


def test_assessing_needs_an_open_period(programme: Programme) -> None:
    p, provider = programme, programme.providers[0]
    assessor = assessors.register(p.veil, p.bureau, "Quality Institute")
    with pytest.raises(Conflict):  # none opened yet
        assessors.assess(p.veil, assessor, provider.id, 50, "too early")
    assert assessors.own_view(p.veil, assessor)["period"] is None
    period_id = _open(p)
    with pytest.raises(InvalidRequest):
        assessors.assess(p.veil, assessor, provider.id, 101, "over the scale")
    with pytest.raises(InvalidRequest):
        assessors.assess(p.veil, assessor, provider.id, 50, "  ")
    with pytest.raises(NotFound):  # not a provider
        assessors.assess(p.veil, assessor, p.acme.id, 50, "an enterprise")
    assessors.assess(p.veil, assessor, provider.id, 50, "in time")
    periods.close_period(p.veil, p.bureau, period_id)
    with pytest.raises(Conflict):  # closed: its scorecards are final
        assessors.assess(p.veil, assessor, provider.id, 90, "too late")


def test_a_suspended_assessor_is_refused_and_its_recorded_score_stays(
    programme: Programme,
) -> None:
    p, provider = programme, programme.providers[0]
    assessor = assessors.register(p.veil, p.bureau, "Quality Institute")
    with p.veil.db.transaction() as session:
        token = issue_token(session, assessor, lifetime=timedelta(days=1)).secret
    period_id = _open(p)
    assessors.assess(p.veil, assessor, provider.id, 40, "recorded while active")
    with pytest.raises(InvalidRequest):  # a reason is required
        assessors.set_status(p.veil, p.bureau, assessor.id, True, "")
    suspended = assessors.set_status(p.veil, p.bureau, assessor.id, True, "conflict of interest")
    assert suspended.status == Status.SUSPENDED
    with pytest.raises(Conflict):
        assessors.set_status(p.veil, p.bureau, assessor.id, True, "again")
    # Its token is refused; and the service refuses it too, should a request have been
    # authenticated before the suspension committed (``assessor`` is that stale object).
    with p.veil.db.read() as session, pytest.raises(Unauthenticated):
        authenticate(session, token)
    with pytest.raises(Forbidden, match="suspended"):
        assessors.assess(p.veil, assessor, provider.id, 99, "after the suspension")
    with p.veil.db.read() as session:
        (stored,) = session.scalars(select(Assessment).where(Assessment.assessor_id == assessor.id))
    assert stored.score == 40  # unchanged by the refused one
    part = _card(p, period_id, provider)["components"]["assessors"]  # type: ignore[index]
    (named,) = part["assessments"]
    assert part["score"] == 40.0 and named["assessor_status"] == "suspended"
    reinstated = assessors.set_status(p.veil, p.bureau, assessor.id, False, "cleared")
    assert reinstated.status == Status.ACTIVE


def test_the_bureau_cannot_enter_an_assessors_score(programme: Programme) -> None:
    p, provider = programme, programme.providers[0]
    assessor = assessors.register(p.veil, p.bureau, "Quality Institute")
    _open(p)
    with pytest.raises(InvalidRequest, match="assessors register"):
        periods.assess(p.veil, p.bureau, provider.id, 95, "forged", assessor.id)
    with pytest.raises(Forbidden):  # the assessors' own route refuses the bureau's role
        assessors.assess(p.veil, p.bureau, provider.id, 95, "forged")
    with p.veil.db.read() as session:
        assert list(session.scalars(select(Assessment))) == []


def test_only_the_bureau_keeps_the_register(programme: Programme) -> None:
    p = programme
    assessor = assessors.register(p.veil, p.bureau, "Quality Institute")
    with pytest.raises(Conflict):  # names are unique among assessors
        assessors.register(p.veil, p.bureau, " Quality Institute ")
    for caller in (p.operator, p.acme, p.providers[0], assessor):
        with pytest.raises(Forbidden):
            assessors.register(p.veil, caller, "Another")
        with pytest.raises(Forbidden):
            assessors.list_assessors(p.veil, caller)
        with pytest.raises(Forbidden):
            assessors.set_status(p.veil, caller, assessor.id, True, "not yours")
    with pytest.raises(NotFound):  # a provider is no assessor
        assessors.set_status(p.veil, p.bureau, p.providers[0].id, True, "wrong kind")
    assert [a.id for a in assessors.list_assessors(p.veil, p.bureau)] == [assessor.id]


def test_an_assessor_reaches_nothing_else(programme: Programme) -> None:
    p = programme
    assessor = assessors.register(p.veil, p.bureau, "Quality Institute")
    assert [c for c in Capability if may(assessor, c)] == [Capability.ASSESS_PROVIDERS]
    _open(p)
    with pytest.raises(Forbidden):
        periods.list_scorecards(p.veil, assessor)
    with pytest.raises(Forbidden):
        periods.rate(p.veil, assessor, p.providers[0].id, 5)
    with pytest.raises(Forbidden):
        service.read_table(p.veil, assessor, "participation", "total")
    for role in (Role.ENTERPRISE, Role.PROVIDER):
        with pytest.raises(Forbidden):
            list_principals(p.veil, assessor, role)
