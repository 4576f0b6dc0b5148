"""Released counts, histogram bins and one-signed sums are clamped at 0, on OpenDP's real path.

The dataset is tiny on purpose: a category no row has and empty histogram bins have a true
count of 0, where unclamped Laplace noise is negative about half the time and the lower end
of every interval (``value - a``) is negative nearly always.  Each test repeats the release
a fixed number of times (``RUNS``) with fresh OpenDP noise.
"""

from __future__ import annotations

import polars as pl

from analytics.private_query import QueryRelease, ReleasedValue, run_private_query
from analytics.schema import (
    Aggregate,
    AggregateKind,
    ColumnClass,
    ColumnSpec,
    ColumnType,
    DatasetSchema,
    PrivateQuery,
)

RUNS = 120
EPSILON = 0.5  # scale 2 per unit of sensitivity: ± about 6 at 95%
SCHEMA = DatasetSchema(
    (
        ColumnSpec("site", ColumnType.STRING, ColumnClass.PUBLIC, categories=("a", "b", "c")),
        ColumnSpec("cycles", ColumnType.INTEGER, ColumnClass.INTERNAL, 0.0, 100.0),
        ColumnSpec("offset", ColumnType.FLOAT, ColumnClass.INTERNAL, -5.0, 0.0),
        ColumnSpec("temp", ColumnType.FLOAT, ColumnClass.INTERNAL, -10.0, 40.0),
    )
)
# Two rows, both at site "a": sites "b" and "c" have a true count of 0.
FRAME = pl.DataFrame(
    {"site": ["a", "a"], "cycles": [1, 0], "offset": [0.0, 0.0], "temp": [0.0, 0.0]}
)


def release(*aggregates: Aggregate, group_by: tuple[str, ...] = ()) -> QueryRelease:
    return run_private_query(FRAME, SCHEMA, PrivateQuery(aggregates, group_by), EPSILON)


def values(result: QueryRelease) -> list[ReleasedValue]:
    return [v for row in result.rows for v in row.values]


def test_counts_and_histogram_bins_never_go_below_zero() -> None:
    """Over RUNS releases no count, bin or interval end is negative, and the clamp is a
    clamp (not a shift): a true 0 comes back as exactly 0 in a fair share of the runs."""
    count = Aggregate(AggregateKind.COUNT)
    histogram = Aggregate(AggregateKind.HISTOGRAM, "cycles", bins=10)
    zeros = low_ends_at_zero = 0
    for _ in range(RUNS):
        grouped = release(count, group_by=("site",))
        binned = release(histogram)
        for v in values(grouped) + values(binned):
            low, high = v.ci95
            assert 0 <= low <= v.value <= high, v
        absent = grouped.rows[2].values[0]  # site "c": no row
        zeros += absent.value == 0
        # Unclamped, the low end ``value - a`` is below 0 whenever the noise is below a:
        # with probability >= 0.95.
        low_ends_at_zero += absent.ci95[0] == 0
    # Integer Laplace at scale 2: P(noise <= 0) is about 0.62.  With 120 runs the share of
    # zeros lies in [0.40, 0.85], and the share of low ends at 0 is above 0.85, except
    # with probability below 1e-5 each.
    assert 0.40 <= zeros / RUNS <= 0.85
    assert low_ends_at_zero / RUNS >= 0.85


def test_the_interval_still_covers_the_true_count() -> None:
    """Clamping keeps the 95% statement: the true count lies in the interval as often."""
    count = Aggregate(AggregateKind.COUNT)
    truth = {"a": 2, "b": 0, "c": 0}
    covered = total = 0
    for _ in range(RUNS // 2):
        for row in release(count, group_by=("site",)).rows:
            low, high = row.values[0].ci95
            assert row.group is not None
            covered += low <= truth[row.group["site"]] <= high
            total += 1
    # Nominal coverage >= 0.95 (OpenDP's integer accuracy is conservative): 180 intervals
    # with at most 10% misses fails with probability well below 1e-4.
    assert covered / total >= 0.90


def test_sums_are_clamped_only_when_the_declared_bounds_have_one_sign() -> None:
    non_negative = Aggregate(AggregateKind.SUM, "cycles")  # bounds [0, 100]
    non_positive = Aggregate(AggregateKind.SUM, "offset")  # bounds [-5, 0]
    mixed = Aggregate(AggregateKind.SUM, "temp")  # bounds [-10, 40]: no clamp
    mixed_lows = []
    for _ in range(RUNS // 4):
        up, down, either = values(release(non_negative, non_positive, mixed))
        assert 0 <= up.ci95[0] <= up.value <= up.ci95[1]
        assert down.ci95[0] <= down.value <= down.ci95[1] <= 0
        mixed_lows.append(either.ci95[0])
        assert either.ci95[0] < either.value < either.ci95[1]
    # The true sum is 0, so an unclamped lower end is below 0 unless the noise drew above the
    # interval's half-width (2.5% of runs); clamped, none would be. Half of them or more below
    # 0 fails by chance with probability below 1e-15.
    assert sum(low < 0 for low in mixed_lows) >= len(mixed_lows) / 2
