"""The decision engine: may this provider run this job on this dataset now? With reasons.

A pure function of the request, the dataset's column classes and the
provider's grants: no I/O, so every rule is easy to test.  Allowing a job
does not spend anything; the ledger's atomic debit does (see ``grants``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from i18n import Msg
from policies.budget import Budget
from policies.grants import Grant
from policies.tiers import CODE_TIER, DP_TIERS, Tier

CONFIDENTIAL = "confidential"
SECRET = "secret"  # noqa: S105 - a column class, not a password
NO_GRANT = Msg("no grant gives you this dataset")
LETTER_UNSIGNED = Msg(
    "your grant is not in force yet: its commitment letter is not signed by you "
    "(read it and sign it with 'veil letters sign')"
)
#: The refusal of each tier a grant does not give, in the same words for every tier.
#: Whole sentences, not "tier {tier} ({name})": a denial is stored as English text and
#: translated when shown by looking the sentence up (``sandbox.api.messages``).
TIER_NOT_GRANTED: dict[int, Msg] = {
    Tier.CATALOG: Msg("tier 0 (catalog) is not in your grant"),
    Tier.MOCK: Msg("tier 1 (mock data) is not in your grant"),
    Tier.AGGREGATE: Msg("tier 2 (aggregate tables) is not in your grant"),
    Tier.PRIVATE_QUERY: Msg("tier 3 (private query) is not in your grant"),
    Tier.TRAINING: Msg("tier 4 (private training) is not in your grant"),
    Tier.CODE: Msg("tier 5 (reviewed code) is not in your grant"),
}


def tier_not_granted(tier: int) -> Msg:
    """The refusal of a tier the grant does not give."""
    return TIER_NOT_GRANTED.get(tier) or Msg("tier {tier} is not in your grant", tier=tier)


def unknown_column(column: str, known: Iterable[str]) -> Msg:
    """An unknown column, with the closest of ``known`` (names the caller may see)."""
    close = difflib.get_close_matches(column, sorted(known), n=1, cutoff=0.6)
    if close:
        return Msg(
            "unknown column '{column}' (did you mean '{suggestion}'?)",
            column=column,
            suggestion=close[0],
        )
    return Msg("unknown column '{column}'", column=column)


@dataclass(frozen=True)
class JobRequest:
    """What a provider asks for, as the policy engine sees it."""

    provider_id: str
    dataset_id: str
    purpose: str
    tier: int
    columns: frozenset[str]
    epsilon: int  # units of policies.budget.EPSILON_UNIT
    delta: int  # units of policies.budget.DELTA_UNIT
    #: Re-checks of a job already paid for (epsilon 0 here): whether it was paid in epsilon.
    epsilon_paid: bool = False

    @property
    def cost(self) -> Budget:
        """What the job asks to spend."""
        return Budget(self.epsilon, self.delta)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reasons: tuple[str, ...]
    grant: Grant | None = None


def _column_reasons(
    request: JobRequest, classes: Mapping[str, str], granted: set[str]
) -> list[str]:
    reasons: list[str] = []
    for column in sorted(request.columns):
        column_class = classes.get(column)
        if column_class is None:
            # Suggest only granted, usable names: a grantee sees the catalog's names anyway,
            # but a suggestion it may not use would only lead to the next refusal.
            usable = {c for c in granted if classes.get(c) not in (None, SECRET)}
            reasons.append(unknown_column(column, usable))
        elif column_class == SECRET:
            reasons.append(
                Msg(
                    "column '{column}' is secret: no job may use it, not even as a filter",
                    column=column,
                )
            )
        elif (
            column_class == CONFIDENTIAL
            and request.tier == CODE_TIER
            and not (request.epsilon or request.epsilon_paid)
        ):
            reasons.append(
                Msg(
                    "column '{column}' is confidential: reviewed code may use it only with DP "
                    "output (give the job epsilon > 0 and compute with veil_dp)",
                    column=column,
                )
            )
        elif column_class == CONFIDENTIAL and request.tier not in {*DP_TIERS, CODE_TIER}:
            reasons.append(
                Msg(
                    "column '{column}' is confidential: only differentially private tiers "
                    "(3: private query, 4: private training, 5 with DP output) may use it",
                    column=column,
                )
            )
        elif column not in granted:
            reasons.append(Msg("column '{column}' is not in your grant", column=column))
    return reasons


def _grant_reasons(
    request: JobRequest, classes: Mapping[str, str], grant: Grant, now: datetime
) -> list[str]:
    reasons: list[str] = []
    if grant.revoked_at is not None:
        reasons.append(Msg("your grant was revoked"))
    elif now < grant.valid_from:
        reasons.append(
            Msg("your grant is valid only from {time}", time=grant.valid_from.isoformat())
        )
    elif now >= grant.valid_until:
        reasons.append(Msg("your grant expired at {time}", time=grant.valid_until.isoformat()))
    if not grant.letter_in_force:
        reasons.append(LETTER_UNSIGNED)
    if request.purpose not in grant.purposes:
        # A purpose with control characters is shown escaped (the API refuses them anyway).
        shown = f"'{request.purpose}'" if request.purpose.isprintable() else repr(request.purpose)
        reasons.append(
            Msg(
                "purpose {purpose} is not granted (granted: {granted})",
                purpose=shown,
                granted=", ".join(grant.purposes),
            )
        )
    if request.tier not in grant.tiers:
        reasons.append(tier_not_granted(request.tier))
    reasons += _column_reasons(request, classes, set(grant.columns))
    cost, left = request.cost, grant.budget_left
    if not cost.fits_within(left):
        reasons.append(
            Msg(
                "budget short: this job needs epsilon {epsilon} and delta {delta}; "
                "the grant has epsilon {epsilon_left} and delta {delta_left} left",
                epsilon=cost.epsilon_text,
                delta=cost.delta_text,
                epsilon_left=left.epsilon_text,
                delta_left=left.delta_text,
            )
        )
    return reasons


def decide(
    request: JobRequest,
    column_classes: Mapping[str, str],
    grants: Iterable[Grant],
    now: datetime,
) -> Decision:
    """Allow with the first grant that permits everything; else deny with the closest's reasons."""
    candidates = [
        g
        for g in grants
        if g.provider_id == request.provider_id and request.dataset_id in g.dataset_ids
    ]
    if not candidates:
        return Decision(False, (NO_GRANT,))
    scored: list[tuple[Sequence[str], Grant]] = [
        (_grant_reasons(request, column_classes, g, now), g) for g in candidates
    ]
    for reasons, grant in scored:
        if not reasons:
            return Decision(True, (), grant)
    # Explain with the grant closest to allowing it; a revoked grant only when nothing else is left.
    closest = min(scored, key=lambda pair: (pair[1].revoked_at is not None, len(pair[0])))
    return Decision(False, tuple(closest[0]), closest[1])
