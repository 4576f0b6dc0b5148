"""A black-box check of ε-DP for a KPI verdict's statistic: the relative change, by sampling.

What is checked
---------------
A KPI contract's evaluation releases each period's DP sums (``analytics.kpi.run_kpi``, the
code the sandbox runs; OpenDP's Laplace underneath, nothing here adds noise), and the
verdict is computed from the relative change of the KPI (``analytics.kpi.judge``).  The
change is post-processing, so it must be as private as the sums: for neighbouring datasets
``D`` and ``D'`` and every set ``B`` of outputs, ``P_D(B) <= e^ε P_D'(B)`` and back.

``D`` holds ``BASELINE_ROWS`` rows in the baseline period and ``EVALUATION_ROWS`` in the
evaluation period (a scrap rate: ``scrap`` 2 of its bound 20, ``produced`` 100 of its
bound 100).  ``D'`` has one row more, in the evaluation period, with the largest scrap the
declaration allows and nothing produced: the row that moves the change most.  That row
moves one released statistic, the evaluation period's ``sum(scrap)``, by its whole
sensitivity, and that statistic is charged ``ε / 4`` (half of ε per period, split between
its two sums).  So the change must satisfy both the evaluation's claimed ``EPSILON`` and
the tight ``EPSILON / 4`` for this neighbour.  The data make that sum's noise dominate the
change's, so the check has power: the negative control claims ``EPSILON / 16`` for the same
samples and must find a violation.

The output (the change, a float) falls into ``BUCKETS`` fixed buckets of width ``STEP``
around ``D``'s true change (0) and the two tails, each checked in both directions with
Clopper-Pearson bounds and Bonferroni's correction, as in ``test_dp_distribution.py``
(family-wise confidence 99.9 %).

Runtime: ``2 * SAMPLES`` evaluations (two OpenDP queries each) in two processes, about
two minutes on 2 free cores.  Marked ``statistical``: ``make reliability`` runs it,
``make test`` does not.
"""

from __future__ import annotations

import math
import multiprocessing
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from typing import Final

import polars as pl
import pytest

from analytics.kpi import judge, parse_kpi, run_kpi
from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema
from tests.analytics.test_kpi import _stats
from tests.security.test_dp_distribution import Bound, _ratio_lower

pytestmark = [pytest.mark.statistical, pytest.mark.timeout(900)]

EPSILON: Final = 4.0  # the evaluation's: 1 for each of the four sums
SAMPLES: Final = 1_500  # per dataset
BASELINE_ROWS: Final = 1_000
EVALUATION_ROWS: Final = 50
#: The change moves by about 0.2 when the evaluation's scrap sum moves by 20 (its bound).
STEP: Final = 0.1
WIDTH: Final = 4  # buckets on each side of 0
BUCKETS: Final = 2 * WIDTH + 2
FAMILY_ALPHA: Final = 0.001
MIN_MASS: Final = 50
MIN_BUCKETS_WITH_MASS: Final = 4

SCHEMA: Final = DatasetSchema(
    (
        ColumnSpec("day", ColumnType.INTEGER, ColumnClass.INTERNAL, 0, 200),
        ColumnSpec("scrap", ColumnType.FLOAT, ColumnClass.CONFIDENTIAL, 0.0, 20.0),
        ColumnSpec("produced", ColumnType.INTEGER, ColumnClass.INTERNAL, 0, 100),
    )
)
QUERY: Final = parse_kpi(
    {
        "kpi": "scrap_rate",
        "columns": {"scrap": "scrap", "produced": "produced"},
        "time_column": "day",
        "baseline": {"from": 0, "to": 100},
        "evaluation": {"from": 100, "to": 200},
    }
)


def _frame(neighbour: bool) -> pl.DataFrame:
    days = [i % 100 for i in range(BASELINE_ROWS)] + [100 + i % 100 for i in range(EVALUATION_ROWS)]
    scrap, produced = [2.0] * len(days), [100] * len(days)
    if neighbour:  # one privacy unit more: the most scrap, nothing produced
        days, scrap, produced = [*days, 150], [*scrap, 20.0], [*produced, 0]
    return pl.DataFrame({"day": days, "scrap": scrap, "produced": produced})


def _change(frame: pl.DataFrame) -> float:
    releases = run_kpi(frame, SCHEMA, QUERY, EPSILON)
    assert math.isclose(sum(r.epsilon for r in releases.values()), EPSILON)
    change = judge(QUERY, SCHEMA, {p: _stats(r) for p, r in releases.items()}, 0.05, 0.95)
    return change.change


def _bucket(value: float) -> int:
    return min(max(math.floor(value / STEP) + WIDTH + 1, 0), BUCKETS - 1)


def _sample(neighbour: bool) -> Counter[int]:
    frame, counts = _frame(neighbour), Counter[int]()
    for _ in range(SAMPLES):
        counts[_bucket(_change(frame))] += 1
    return counts


def _bounds(d: Counter[int], d_prime: Counter[int]) -> list[Bound]:
    alpha = FAMILY_ALPHA / (2 * BUCKETS)
    bounds = []
    for bucket in range(BUCKETS):
        a, b = d[bucket], d_prime[bucket]
        bounds.append(Bound(bucket, "D/D'", _ratio_lower(a, b, alpha), a, b))
        bounds.append(Bound(bucket, "D'/D", _ratio_lower(b, a, alpha), b, a))
    return bounds


@pytest.fixture(scope="module")
def bounds() -> list[Bound]:
    spawn = multiprocessing.get_context("spawn")  # no fork after Polars or OpenDP ran
    with ProcessPoolExecutor(max_workers=2, mp_context=spawn) as pool:
        d, d_prime = pool.map(_sample, [False, True])
    with_mass = [i for i in range(BUCKETS) if min(d[i], d_prime[i]) >= MIN_MASS]
    assert len(with_mass) >= MIN_BUCKETS_WITH_MASS, "too few buckets to test anything"
    return _bounds(d, d_prime)


def _violations(bounds: list[Bound], epsilon: float) -> list[Bound]:
    return [b for b in bounds if b.lower > math.exp(epsilon)]


def test_the_change_on_neighbours_stays_within_the_claimed_epsilon(bounds: list[Bound]) -> None:
    for claimed in (EPSILON, EPSILON / 4):
        violations = _violations(bounds, claimed)
        assert not violations, f"privacy loss above {claimed}: {violations}"
    # Not vacuous: the bound comes near the tight epsilon / 4.
    assert max(b.lower for b in bounds) > math.exp(EPSILON / 16)


def test_the_check_detects_an_understated_epsilon(bounds: list[Bound]) -> None:
    """Negative control: the same samples violate a claim of ε / 16."""
    assert _violations(bounds, EPSILON / 16), "the check missed a loss 4x the false claim"
