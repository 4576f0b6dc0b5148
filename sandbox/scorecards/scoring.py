"""A scorecard's arithmetic: four components on 0-100, weighted, against a pass mark.

Pure functions (no database): ``sandbox.scorecards.periods`` gathers the inputs.

- ``kpi``: 100 x met / (met + not met) over the provider's KPI verdicts released in the
  period; an inconclusive verdict counts as neither.
- ``ratings``: the enterprises' mean rating (1-5) mapped to 0-100, only as the
  programme's protection releases it (at least five enterprises, perturbed); otherwise
  the component is absent and shown as "too few to show" with its count.
- ``bureau``: the bureau's own assessment (0-100).
- ``assessors``: the mean of the third-party assessors' assessments (0-100).

A component without inputs is absent; the weights of the present ones are scaled to sum
to one.  No component at all: no score, neither passed nor failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from i18n import Msg
from policies.errors import InvalidRequest

COMPONENTS: Final = ("kpi", "ratings", "bureau", "assessors")
DEFAULT_WEIGHTS: Final = {"kpi": 0.4, "ratings": 0.2, "bureau": 0.2, "assessors": 0.2}
DEFAULT_PASS_MARK: Final = 60.0


def check_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """The period's weights: the defaults, or ``weights`` (every component, >= 0, sum > 0)."""
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    if set(weights) != set(COMPONENTS) or any(not 0 <= float(w) <= 100 for w in weights.values()):
        raise InvalidRequest(
            Msg(
                "weights must give each of {components} a number from 0 to 100",
                components=", ".join(COMPONENTS),
            )
        )
    if sum(weights.values()) <= 0:
        raise InvalidRequest(Msg("at least one weight must be above 0"))
    return {c: float(weights[c]) for c in COMPONENTS}


def check_pass_mark(pass_mark: float | None) -> float:
    """The period's pass mark on 0-100 (the default when not given)."""
    if pass_mark is None:
        return DEFAULT_PASS_MARK
    if not 0 <= pass_mark <= 100:
        raise InvalidRequest(Msg("the pass mark must be a number from 0 to 100"))
    return float(pass_mark)


@dataclass(frozen=True)
class Outcome:
    """The weighted score (None: nothing to score) and whether it reached the pass mark."""

    score: float | None
    passed: bool | None
    used_weights: dict[str, float]


def kpi_component(met: int, not_met: int) -> float | None:
    """The share of decided verdicts that met their target, on 0-100."""
    decided = met + not_met
    return None if decided == 0 else round(100.0 * met / decided, 2)


def rating_component(mean: float | None) -> float | None:
    """A released mean rating (1-5) on 0-100."""
    return None if mean is None else round(100.0 * (min(max(mean, 1.0), 5.0) - 1.0) / 4.0, 2)


def weigh(
    components: Mapping[str, float | None], weights: Mapping[str, float], pass_mark: float
) -> Outcome:
    """The weighted mean of the present components against ``pass_mark``."""
    present = {c: v for c, v in components.items() if v is not None and weights.get(c, 0) > 0}
    total = sum(weights[c] for c in present)
    if not present or total <= 0:
        return Outcome(None, None, {})
    used = {c: round(weights[c] / total, 4) for c in present}
    score = round(sum(weights[c] * v for c, v in present.items()) / total, 2)
    return Outcome(score, score >= pass_mark, used)
