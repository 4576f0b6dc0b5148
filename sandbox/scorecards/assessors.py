"""Registered third-party assessors: the bureau registers and suspends them, and each
records its own assessments of providers in the open period (docs/programme.md).

An assessor is a principal of its own (role ``assessor``): the bureau registers it, the
operator issues its token (``veil tokens issue``), so the bureau never holds an
assessor's credentials and cannot enter a score in an assessor's name.  An assessor
reaches no enterprise, no programme table and no scorecard: it sees the providers being
scored and its own assessments of the open period, nothing else.

A suspended assessor's tokens are refused, and its assessments with them; those it
recorded while active stay and count, and its scorecards mark it suspended.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from i18n import Msg
from policies import audit
from policies.capabilities import Capability, require
from policies.db import new_id
from policies.errors import Conflict, Forbidden, NotFound
from policies.principals import Principal, Role, Status, create_principal
from sandbox.accounts.tenants import require_reason
from sandbox.runtime.veil import Veil
from sandbox.scorecards import periods
from sandbox.store.scorecard_models import Assessment


def register(veil: Veil, bureau: Principal, name: str) -> Principal:
    """Register an assessor (the bureau), audited; its name is unique among assessors."""
    require(bureau, Capability.MANAGE_ASSESSORS)
    with veil.db.transaction() as session:
        taken = session.scalar(
            select(Principal.id).where(
                Principal.role == Role.ASSESSOR, Principal.name == name.strip()
            )
        )
        if taken is not None:
            raise Conflict(
                Msg("an assessor of that name is registered already; choose another name")
            )
        assessor = create_principal(session, Role.ASSESSOR, name)
        audit.record(session, "assessor.registered", actor=bureau,
                     resource=f"principal:{assessor.id}",
                     details={"name": assessor.name})  # fmt: skip
    return assessor


def list_assessors(veil: Veil, bureau: Principal) -> list[Principal]:
    """Every registered assessor, active or suspended, oldest first (the bureau)."""
    require(bureau, Capability.MANAGE_ASSESSORS)
    with veil.db.read() as session:
        return list(
            session.scalars(
                select(Principal)
                .where(Principal.role == Role.ASSESSOR)
                .order_by(Principal.created_at, Principal.id)
            )
        )


def set_status(
    veil: Veil, bureau: Principal, assessor_id: str, suspend: bool, reason: str | None
) -> Principal:
    """Suspend an assessor (its tokens and later assessments refused) or reinstate it,
    with a reason, audited (the bureau)."""
    require(bureau, Capability.MANAGE_ASSESSORS)
    why = require_reason(reason)
    wanted = Status.SUSPENDED if suspend else Status.ACTIVE
    with veil.db.transaction() as session:
        assessor = session.get(Principal, assessor_id, with_for_update=True)
        if assessor is None or assessor.role != Role.ASSESSOR:
            raise NotFound("assessor", assessor_id)
        if assessor.status == wanted:
            raise Conflict(
                Msg("this assessor is suspended already; reinstate it to restore it")
                if suspend
                else Msg("this assessor is active; only a suspended one is reinstated")
            )
        assessor.status = wanted
        action = "assessor.suspended" if suspend else "assessor.reinstated"
        audit.record(session, action, actor=bureau, resource=f"principal:{assessor.id}",
                     details={"reason": why})  # fmt: skip
        return assessor


def assess(
    veil: Veil, assessor: Principal, provider_id: str, score: float, reason: str
) -> Assessment:
    """The calling assessor's own score (0-100) of a provider in the open period, with its
    reason; one per assessor, provider and period (recording again replaces it), audited
    with the assessor as the actor.  Refused once the assessor is suspended."""
    require(assessor, Capability.ASSESS_PROVIDERS)
    value, why = periods.check_assessment(score, reason)
    with veil.db.transaction() as session:
        # Read again, locked: a suspension committed since the token was checked wins.
        me = session.get(Principal, assessor.id, with_for_update=True)
        if me is None or me.status != Status.ACTIVE:
            raise Forbidden(
                Msg("this assessor is suspended: its assessments are refused; ask the bureau")
            )
        provider = session.get(Principal, provider_id)
        if provider is None or provider.role != Role.PROVIDER:
            raise NotFound("provider", provider_id)
        period = periods.open_or_conflict(session)
        found = session.scalars(
            select(Assessment).where(
                Assessment.period_id == period.id,
                Assessment.provider_id == provider_id,
                Assessment.assessor == me.id,
            )
        ).first()
        if found is None:
            found = Assessment(id=new_id("asm"), period_id=period.id, provider_id=provider_id,
                               assessor=me.id, assessor_id=me.id)  # fmt: skip
            session.add(found)
        found.score, found.reason, found.recorded_by = value, why, me.id
        found.recorded_at = veil.clock()
        audit.record(session, "scorecards.provider_assessed", actor=me,
                     resource=f"principal:{provider_id}",
                     details={"period_id": period.id, "assessor_id": me.id, "score": value,
                              "reason": why})  # fmt: skip
        return found


def own_view(veil: Veil, assessor: Principal) -> dict[str, Any]:
    """What an assessor sees: the open period (None if none is), and each provider being
    scored with the assessor's own assessment of it in that period (None if none)."""
    require(assessor, Capability.ASSESS_PROVIDERS)
    with veil.db.read() as session:
        period = periods.open_in(session)
        mine: dict[str, Assessment] = {}
        if period is not None:
            mine = {
                a.provider_id: a
                for a in session.scalars(
                    select(Assessment).where(
                        Assessment.period_id == period.id, Assessment.assessor_id == assessor.id
                    )
                )
            }
        return {
            "period": None if period is None else {"id": period.id, "name": period.name,
                                                   "opened_at": period.opened_at.isoformat()},
            "providers": [{"id": p.id, "name": p.name,
                           "assessment": _mine(mine.get(p.id))}
                          for p in periods.scored_providers(session)],
        }  # fmt: skip


def _mine(assessment: Assessment | None) -> dict[str, Any] | None:
    if assessment is None:
        return None
    return {"id": assessment.id, "score": assessment.score, "reason": assessment.reason,
            "recorded_at": assessment.recorded_at.isoformat()}  # fmt: skip


def summary(assessment: Assessment) -> dict[str, Any]:
    """An assessment as the API answers its recording."""
    return {"id": assessment.id, "period_id": assessment.period_id,
            "provider_id": assessment.provider_id, "assessor_id": assessment.assessor_id,
            "score": assessment.score, "reason": assessment.reason}  # fmt: skip
