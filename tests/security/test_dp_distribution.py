"""A black-box check of ε-DP: Veil's DP count on neighbouring datasets, by sampling.

What is checked
---------------
``D`` has ``ROWS`` rows, ``D'`` one row more (one privacy unit: the schema has no id
column, so a unit is one row).  Each is answered ``SAMPLES`` times by Veil's own
tier-3 code path, ``analytics.private_query.run_private_query`` (OpenDP's integer
Laplace underneath; nothing here adds noise), for one ``count`` at ``EPSILON``.
Pure ε-DP says that for every set of outputs ``B``:
``P_D(B) <= e^ε P_D'(B)`` and ``P_D'(B) <= e^ε P_D(B)``.

The output buckets are fixed before sampling: each integer in
``[ROWS - WIDTH, ROWS + 1 + WIDTH]`` and the two tails beyond, ``BUCKETS`` in all; each is
checked in both directions, ``2 * BUCKETS`` hypotheses.  For one of them, a one-sided
Clopper-Pearson lower bound of the numerator's probability and upper bound of the
denominator's, each at level ``1 - alpha / 2``, give a lower bound of the ratio that holds
with probability at least ``1 - alpha``; the check fails if that lower bound exceeds
``e^ε``.  With Bonferroni's correction, ``alpha = FAMILY_ALPHA / (2 * BUCKETS)``.

**Confidence.** If Veil's count is ε-DP, the check fails with probability at most
``FAMILY_ALPHA`` = 0.1 % (99.9 % confidence, family-wise over all buckets and both
directions).  Buckets with little mass in a direction have a lower bound near 0, so
they cannot fail the check; at least ``MIN_BUCKETS_WITH_MASS`` buckets must hold
``MIN_MASS`` samples in both datasets, or the check would have tested nothing.

**Power.** With 1 500 samples each, the expected lower bound at the central bucket is
about ``e^0.65`` for a true ratio of ``e^1``: a count whose real privacy loss is ``1.5 ε``
or more (noise a third too small) fails the check in most runs.  The negative control
below claims ``ε / 4`` for the same samples and must find a violation, which shows that
the check can fail (it found one in all of 3 000 simulated runs; missing it would take
the central ratio's estimate to be off by a third).

Runtime: ``2 * SAMPLES`` queries of 25 to 30 ms of CPU each (almost all of it OpenDP
calibrating its compositor), D and D' sampled in two processes: about 50 s on 2 free
cores (95 s of CPU); 150 s measured on 2 cores shared with a load average of 9.
Marked ``statistical``: ``make reliability`` runs it (``reliability/statistical.py``),
``make test`` does not.
"""

from __future__ import annotations

import math
import multiprocessing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Final

import polars as pl
import pytest
from scipy.stats import beta  # type: ignore[import-untyped]

from analytics.private_query import run_private_query
from analytics.schema import (
    Aggregate,
    AggregateKind,
    ColumnClass,
    ColumnSpec,
    ColumnType,
    DatasetSchema,
    PrivateQuery,
)

# The sampling runs in the first test's set-up: more than the suite's default timeout.
pytestmark = [pytest.mark.statistical, pytest.mark.timeout(900)]

EPSILON: Final = 1.0
SAMPLES: Final = 1_500  # per dataset
ROWS: Final = 200  # rows of D; D' has one more
WIDTH: Final = 2  # integer buckets on each side of ROWS .. ROWS + 1
BUCKETS: Final = 2 * WIDTH + 2 + 2  # the integers, plus the two tails
FAMILY_ALPHA: Final = 0.001
MIN_MASS: Final = 50
MIN_BUCKETS_WITH_MASS: Final = 4
UNDERSTATED: Final = EPSILON / 4  # the negative control's false claim

SCHEMA: Final = DatasetSchema(
    columns=(
        ColumnSpec("line", ColumnType.STRING, ColumnClass.PUBLIC, categories=("a", "b")),
        ColumnSpec("temperature_c", ColumnType.FLOAT, ColumnClass.INTERNAL, lower=0, upper=150),
    )
)
QUERY: Final = PrivateQuery(aggregates=(Aggregate(AggregateKind.COUNT),))


def _frame(rows: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "line": ["a" if i % 3 else "b" for i in range(rows)],
            "temperature_c": [float(40 + i % 50) for i in range(rows)],
        }
    )


def _bucket(value: float) -> int:
    """The bucket index of one released count: 0 the low tail, BUCKETS - 1 the high one."""
    released = round(value)
    if released != value:
        raise AssertionError("a DP count was not an integer")
    return min(max(released - (ROWS - WIDTH) + 1, 0), BUCKETS - 1)


def _sample(rows: int) -> Counter[int]:
    """``SAMPLES`` DP counts of a frame of ``rows`` rows, by bucket (runs in a worker process)."""
    frame, counts = _frame(rows), Counter[int]()
    for _ in range(SAMPLES):
        release = run_private_query(frame, SCHEMA, QUERY, EPSILON)
        assert math.isclose(release.epsilon, EPSILON)  # what the ledger would charge
        (row,) = release.rows
        (value,) = row.values
        counts[_bucket(value.value)] += 1
    return counts


@dataclass(frozen=True)
class Bound:
    """A lower confidence bound of ``P_num(bucket) / P_den(bucket)``."""

    bucket: int
    direction: str  # "D/D'" or "D'/D"
    lower: float
    num: int
    den: int


def _ratio_lower(num: int, den: int, alpha: float) -> float:
    """A lower bound of p_num / p_den holding with probability >= 1 - alpha (Clopper-Pearson,
    one-sided at alpha / 2 for each of the two binomial proportions, union bound)."""
    if num == 0:
        return 0.0
    num_low = float(beta.ppf(alpha / 2, num, SAMPLES - num + 1))
    den_high = 1.0 if den == SAMPLES else float(beta.ppf(1 - alpha / 2, den + 1, SAMPLES - den))
    return num_low / den_high


def _bounds(d: Counter[int], d_prime: Counter[int]) -> list[Bound]:
    alpha = FAMILY_ALPHA / (2 * BUCKETS)  # Bonferroni over buckets and both directions
    bounds = []
    for bucket in range(BUCKETS):
        a, b = d[bucket], d_prime[bucket]
        bounds.append(Bound(bucket, "D/D'", _ratio_lower(a, b, alpha), a, b))
        bounds.append(Bound(bucket, "D'/D", _ratio_lower(b, a, alpha), b, a))
    return bounds


def _violations(bounds: list[Bound], epsilon: float) -> list[Bound]:
    return [b for b in bounds if b.lower > math.exp(epsilon)]


@pytest.fixture(scope="module")
def bounds() -> list[Bound]:
    # "spawn": a forked child of a process that already ran Polars or OpenDP may deadlock.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        d, d_prime = pool.map(_sample, [ROWS, ROWS + 1])
    assert sum(d.values()) == sum(d_prime.values()) == SAMPLES
    with_mass = [i for i in range(BUCKETS) if min(d[i], d_prime[i]) >= MIN_MASS]
    assert len(with_mass) >= MIN_BUCKETS_WITH_MASS, "too few buckets to test anything"
    return _bounds(d, d_prime)


def _describe(violations: list[Bound]) -> str:
    return "; ".join(f"bucket {v.bucket} {v.direction}: ratio >= {v.lower:.3f}" for v in violations)


def test_dp_count_on_neighbours_stays_within_e_to_the_epsilon(bounds: list[Bound]) -> None:
    """No bucket's probability ratio is, at 99.9 % confidence, above e^ε."""
    violations = _violations(bounds, EPSILON)
    assert not violations, f"privacy loss above epsilon {EPSILON}: {_describe(violations)}"
    # Not vacuous: OpenDP's integer Laplace is tight (every bucket's true ratio is e^±ε), so
    # some bound comes close to e^ε; above e^0.4ε in all of 3 000 simulated runs (min e^0.51).
    assert max(b.lower for b in bounds) > math.exp(0.4 * EPSILON)


def test_the_check_detects_an_understated_epsilon(bounds: list[Bound]) -> None:
    """Negative control: the same samples must violate a claimed ε four times too small."""
    violations = _violations(bounds, UNDERSTATED)
    assert violations, "the check failed to detect a privacy loss 4x the claimed epsilon"
