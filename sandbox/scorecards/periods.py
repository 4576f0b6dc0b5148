"""Evaluation periods: the bureau opens one, enterprises rate, the bureau and registered
assessors (``sandbox.scorecards.assessors``) assess while it is open, and closing it signs
every provider's scorecard (audited, in one transaction).

Only one period is open at a time; a period covers the time from its opening to its
closing (a KPI verdict counts in the period in which it was released).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from i18n import Msg
from keys import key_operation
from policies import audit
from policies.capabilities import Capability, require
from policies.db import new_id
from policies.errors import Conflict, InvalidRequest, NotFound
from policies.grants import Grant
from policies.principals import Principal, Role
from sandbox.kpi.verdicts import settle_pending
from sandbox.programme.protection import MIN_ENTERPRISES, Protector, load_secret, ratio
from sandbox.runtime.veil import Veil
from sandbox.scorecards import exits, scoring
from sandbox.scorecards.document import FORMAT, sign_scorecard
from sandbox.store.kpi_models import KpiContract, KpiVerdict, VerdictStatus
from sandbox.store.scorecard_models import (
    Assessment,
    EvaluationPeriod,
    PeriodStatus,
    ProviderRating,
    Scorecard,
)

#: The assessor name of the bureau's own assessments.
BUREAU = "bureau"


def open_period(
    veil: Veil,
    caller: Principal,
    name: str,
    weights: Mapping[str, float] | None = None,
    pass_mark: float | None = None,
) -> EvaluationPeriod:
    """Open a period (none may be open already) with its weights and pass mark, audited."""
    require(caller, Capability.RUN_SCORECARDS)
    name = name.strip()
    if not 1 <= len(name) <= 80:
        raise InvalidRequest(Msg("the period's name must be 1-80 characters, e.g. 2026-Q4"))
    checked, mark = scoring.check_weights(weights), scoring.check_pass_mark(pass_mark)
    with veil.db.transaction() as session:
        if open_in(session) is not None:
            raise Conflict(Msg("a period is open already; close it before opening the next"))
        if session.scalar(select(EvaluationPeriod.id).where(EvaluationPeriod.name == name)):
            raise Conflict(Msg("a period of that name exists already; choose another name"))
        period = EvaluationPeriod(
            id=new_id("per"),
            name=name,
            status=PeriodStatus.OPEN,
            weights=checked,
            pass_mark=mark,
            opened_by=caller.id,
            opened_at=veil.clock(),
        )
        session.add(period)
        audit.record(session, "scorecards.period_opened", actor=caller,
                     resource=f"period:{period.id}",
                     details={"name": name, "weights": checked, "pass_mark": mark})  # fmt: skip
    return period


def list_periods(veil: Veil, caller: Principal) -> list[EvaluationPeriod]:
    """Every period, oldest first (the bureau's)."""
    require(caller, Capability.RUN_SCORECARDS)
    with veil.db.read() as session:
        return list(session.scalars(select(EvaluationPeriod).order_by(EvaluationPeriod.opened_at)))


def open_in(session: Session) -> EvaluationPeriod | None:
    """The open period, if one is."""
    return session.scalars(
        select(EvaluationPeriod).where(EvaluationPeriod.status == PeriodStatus.OPEN)
    ).first()


def open_or_conflict(session: Session) -> EvaluationPeriod:
    """The open period, or :class:`Conflict` (rating and assessing need one)."""
    period = open_in(session)
    if period is None:
        raise Conflict(Msg("no evaluation period is open; the bureau opens one first"))
    return period


def rate(veil: Veil, enterprise: Principal, provider_id: str, rating: int) -> ProviderRating:
    """The enterprise's rating (1-5) of a provider it granted, in the open period; a second
    rating replaces the first.  Audited without the value (it is never shown one by one)."""
    require(enterprise, Capability.RATE_PROVIDERS)
    if not 1 <= rating <= 5:
        raise InvalidRequest(Msg("a rating is a whole number from 1 to 5"))
    with veil.db.transaction() as session:
        granted = session.scalar(
            select(Grant.id).where(
                Grant.enterprise_id == enterprise.id, Grant.provider_id == provider_id
            )
        )
        if granted is None:  # only a provider it granted, now or before
            raise NotFound("provider", provider_id)
        period = open_or_conflict(session)
        found = session.scalars(
            select(ProviderRating).where(
                ProviderRating.period_id == period.id,
                ProviderRating.enterprise_id == enterprise.id,
                ProviderRating.provider_id == provider_id,
            )
        ).first()
        if found is None:
            found = ProviderRating(
                id=new_id("rat"),
                period_id=period.id,
                enterprise_id=enterprise.id,
                provider_id=provider_id,
            )
            session.add(found)
        found.rating, found.updated_at = rating, veil.clock()
        audit.record(session, "scorecards.provider_rated", actor=enterprise,
                     tenant_id=enterprise.id, resource=f"principal:{provider_id}",
                     details={"period_id": period.id})  # fmt: skip
        return found


def check_assessment(score: float, reason: str) -> tuple[float, str]:
    """An assessment's score (0-100) and its stripped reason (1-500 characters)."""
    if not 0 <= score <= 100:
        raise InvalidRequest(Msg("an assessment's score is a number from 0 to 100"))
    why = reason.strip()
    if not 1 <= len(why) <= 500:
        raise InvalidRequest(Msg("an assessment needs a reason of 1-500 characters"))
    return float(score), why


def assess(
    veil: Veil,
    caller: Principal,
    provider_id: str,
    score: float,
    reason: str,
    assessor: str | None = None,
) -> Assessment:
    """Record the bureau's own score (0-100) of a provider in the open period, with its
    reason; replaces an earlier one.  Naming an ``assessor`` is refused: registered
    assessors record their own (``sandbox.scorecards.assessors``), nobody for them."""
    require(caller, Capability.RUN_SCORECARDS)
    if assessor is not None:
        raise InvalidRequest(
            Msg(
                "the bureau records only its own assessment: leave out 'assessor'. A "
                "third-party assessor is registered (veil assessors register) and records "
                "its own assessments with its own token (veil assessments record)"
            )
        )
    value, why = check_assessment(score, reason)
    with veil.db.transaction() as session:
        provider = session.get(Principal, provider_id)
        if provider is None or provider.role != Role.PROVIDER:
            raise NotFound("provider", provider_id)
        period = open_or_conflict(session)
        found = session.scalars(
            select(Assessment).where(
                Assessment.period_id == period.id,
                Assessment.provider_id == provider_id,
                Assessment.assessor == BUREAU,
            )
        ).first()
        if found is None:
            found = Assessment(id=new_id("asm"), period_id=period.id, provider_id=provider_id,
                               assessor=BUREAU)  # fmt: skip
            session.add(found)
        found.score, found.reason, found.recorded_by = value, why, caller.id
        found.recorded_at = veil.clock()
        audit.record(session, "scorecards.provider_assessed", actor=caller,
                     resource=f"principal:{provider_id}",
                     details={"period_id": period.id, "assessor": BUREAU, "score": value,
                              "reason": why})  # fmt: skip
        return found


def close_period(veil: Veil, caller: Principal, period_id: str) -> list[Scorecard]:
    """Close the open period: every provider's signed scorecard, and the exit proposals of
    providers that failed twice in a row, in one transaction with their audit events."""
    require(caller, Capability.RUN_SCORECARDS)
    settle_pending(veil)  # verdicts whose jobs ended count in this period
    with veil.db.transaction() as session:
        period = session.get(EvaluationPeriod, period_id, with_for_update=True)
        if period is None:
            raise NotFound("evaluation period", period_id)
        if period.status != PeriodStatus.OPEN:
            raise Conflict(Msg("this period is closed already; its scorecards are final"))
        now = veil.clock()
        period.status, period.closed_at = PeriodStatus.CLOSED, now
        protect = Protector(load_secret(session))
        cards = []
        for provider in scored_providers(session):
            card = _scorecard(veil, session, period, provider, protect, now)
            session.add(card)
            session.flush()
            cards.append(card)
            audit.record(session, "scorecards.scorecard_issued", actor=caller,
                         resource=f"scorecard:{card.id}",
                         details={"provider_id": provider.id, "period_id": period.id,
                                  "result": card.document["result"], "score": card.score,
                                  "key_version": card.document["key_version"]})  # fmt: skip
            exits.propose_if_failing(session, caller, provider.id, period, now)
        audit.record(session, "scorecards.period_closed", actor=caller,
                     resource=f"period:{period.id}",
                     details={"scorecards": len(cards)})  # fmt: skip
        return cards


def scored_providers(session: Session) -> list[Principal]:
    """Every provider but those that exited the programme."""
    gone = set(exits.exited_ids(session))
    found = session.scalars(
        select(Principal).where(Principal.role == Role.PROVIDER).order_by(Principal.created_at)
    )
    return [p for p in found if p.id not in gone]


def _verdicts(
    session: Session, provider_id: str, start: datetime, end: datetime
) -> dict[str, list[str]]:
    """The provider's KPI verdicts released in [start, end], by verdict (ids)."""
    found: dict[str, list[str]] = {"met": [], "not_met": [], "inconclusive": []}
    rows = session.execute(
        select(KpiVerdict.id, KpiVerdict.verdict)
        .join(KpiContract, KpiContract.id == KpiVerdict.contract_id)
        .where(
            KpiContract.provider_id == provider_id,
            KpiVerdict.status == VerdictStatus.RELEASED,
            KpiVerdict.decided_at >= start,
            KpiVerdict.decided_at <= end,
        )
        .order_by(KpiVerdict.decided_at, KpiVerdict.id)
    )
    for verdict_id, verdict in rows:
        found.setdefault(str(verdict), []).append(verdict_id)
    return found


def released_ratings(protect: Protector, label: str, ratings: Mapping[str, int]) -> dict[str, Any]:
    """What a scorecard shows of the enterprises' ratings: below five raters only their
    count; from five on, the mean as the programme's protection releases it (perturbed
    count and sum), never one enterprise's rating."""
    if len(ratings) < MIN_ENTERPRISES:
        return {"raters": len(ratings), "shown": False, "mean": None, "note": "too few to show"}
    count = protect.count(f"{label}:raters", set(ratings))
    total = protect.total(f"{label}:sum", {e: float(r) for e, r in ratings.items()}, whole=False)
    mean = ratio(total, count).value
    if mean is None:
        return {"raters": count.value, "shown": False, "mean": None, "note": "suppressed"}
    # The perturbation may carry the ratio outside the scale: clamped (post-processing).
    mean = round(min(max(mean, 1.0), 5.0), 2)
    return {"raters": count.value, "shown": True, "mean": mean, "note": None}


def _scorecard(
    veil: Veil,
    session: Session,
    period: EvaluationPeriod,
    provider: Principal,
    protect: Protector,
    now: datetime,
) -> Scorecard:
    verdicts = _verdicts(session, provider.id, period.opened_at, now)
    ratings = dict(
        session.execute(
            select(ProviderRating.enterprise_id, ProviderRating.rating).where(
                ProviderRating.period_id == period.id, ProviderRating.provider_id == provider.id
            )
        )
        .tuples()
        .all()
    )
    shown = released_ratings(protect, f"scorecard:{period.id}:{provider.id}", ratings)
    assessed = list(
        session.scalars(
            select(Assessment)
            .where(Assessment.period_id == period.id, Assessment.provider_id == provider.id)
            .order_by(Assessment.assessor)
        )
    )
    own = next((a for a in assessed if a.assessor == BUREAU and a.assessor_id is None), None)
    # Registered assessors' only (each was active when it recorded: a suspended one is
    # refused); a name the bureau typed in before migration 0022 counts no more.
    others = [(a, session.get(Principal, a.assessor_id)) for a in assessed if a.assessor_id]
    components = {
        "kpi": scoring.kpi_component(len(verdicts["met"]), len(verdicts["not_met"])),
        "ratings": scoring.rating_component(shown["mean"]),
        "bureau": None if own is None else own.score,
        "assessors": round(sum(a.score for a, _ in others) / len(others), 2) if others else None,
    }
    outcome = scoring.weigh(components, period.weights, period.pass_mark)
    result = {True: "passed", False: "failed", None: "not_scored"}[outcome.passed]
    card_id = new_id("scd")
    body = {
        "format": FORMAT,
        "id": card_id,
        "period": {"id": period.id, "name": period.name,
                   "opened_at": period.opened_at.isoformat(), "closed_at": now.isoformat()},
        "provider_id": provider.id,
        "provider_name": provider.name,
        "components": {
            "kpi": {"score": components["kpi"], "met": len(verdicts["met"]),
                    "not_met": len(verdicts["not_met"]),
                    "inconclusive": len(verdicts.get("inconclusive", [])),
                    "verdict_ids": sorted(v for vs in verdicts.values() for v in vs)},
            "ratings": {"score": components["ratings"], **shown},
            "bureau": None if own is None else {"score": own.score, "reason": own.reason},
            "assessors": {"score": components["assessors"],
                          "assessments": [_assessed_by(a, who) for a, who in others]},
        },
        "weights": dict(period.weights),
        "used_weights": outcome.used_weights,
        "pass_mark": period.pass_mark,
        "score": outcome.score,
        "result": result,
        "reasons": _reasons(components, outcome, period.pass_mark),
        "issued_at": now.isoformat(),
    }  # fmt: skip
    # Named in the key server's log, like a KPI verdict's signature.
    with key_operation(f"scorecard:{card_id}/1"):
        document = sign_scorecard(body, veil.keys.sign)
    return Scorecard(id=card_id, period_id=period.id, provider_id=provider.id,
                     passed=outcome.passed, score=outcome.score, document=document,
                     created_at=now)  # fmt: skip


def _assessed_by(assessment: Assessment, assessor: Principal | None) -> dict[str, Any]:
    """One registered assessor's assessment as its scorecard names it; an assessor suspended
    since is marked so (its assessment, recorded while it was active, still counts)."""
    return {"assessor_id": assessment.assessor_id,
            "assessor": assessor.name if assessor is not None else None,
            "assessor_status": assessor.status if assessor is not None else None,
            "score": assessment.score, "reason": assessment.reason,
            "recorded_at": assessment.recorded_at.isoformat()}  # fmt: skip


def _reasons(
    components: Mapping[str, float | None], outcome: scoring.Outcome, pass_mark: float
) -> list[str]:
    """Why the scorecard reads as it does, one sentence per fact (stored, signed)."""
    missing = [c for c in scoring.COMPONENTS if components.get(c) is None]
    reasons = []
    if outcome.score is None:
        reasons.append("no component could be scored: neither passed nor failed")
    elif outcome.passed:
        reasons.append(f"score {outcome.score} reached the pass mark {pass_mark}")
    else:
        reasons.append(f"score {outcome.score} is below the pass mark {pass_mark}")
    if missing:
        reasons.append("not scored, left out of the weighting: " + ", ".join(missing))
    return reasons


def summary(card: Scorecard) -> dict[str, Any]:
    """What the provider (its own) and the bureau (every one) read of a scorecard."""
    return {"id": card.id, "period_id": card.period_id, "provider_id": card.provider_id,
            "result": card.document["result"], "score": card.score,
            "document": card.document}  # fmt: skip


def list_scorecards(
    veil: Veil, caller: Principal, period_id: str | None = None
) -> list[dict[str, Any]]:
    """The bureau's: every scorecard; a provider's: its own.  Oldest first."""
    query = select(Scorecard).order_by(Scorecard.created_at, Scorecard.provider_id)
    if not exits.sees_all(caller):
        query = query.where(Scorecard.provider_id == caller.id)
    if period_id is not None:
        query = query.where(Scorecard.period_id == period_id)
    with veil.db.read() as session:
        return [summary(c) for c in session.scalars(query)]


def get_scorecard(veil: Veil, caller: Principal, scorecard_id: str) -> dict[str, Any]:
    """One scorecard: the bureau's any, a provider's its own (another's: not found)."""
    sees_all = exits.sees_all(caller)
    with veil.db.read() as session:
        card = session.get(Scorecard, scorecard_id)
        if card is None or not (sees_all or card.provider_id == caller.id):
            raise NotFound("scorecard", scorecard_id)
        return summary(card)
