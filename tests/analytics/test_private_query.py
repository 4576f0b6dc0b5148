"""The tier-3 DP engine: accounting, real noise, accuracy, keys, clamping, truncation, refusals."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import polars as pl
import pytest

from analytics import dp_catalog, dp_plans, dp_preview, dp_run, private_query, query_document
from analytics.private_query import (
    QueryError,
    QueryRelease,
    ReleasedValue,
    run_private_query,
    validate_query,
)
from analytics.schema import (
    Aggregate,
    AggregateKind,
    ColumnClass,
    ColumnSpec,
    ColumnType,
    DatasetSchema,
    PrivacyUnit,
    PrivateQuery,
)

COUNT = Aggregate(AggregateKind.COUNT)
SITES = ("south", "north", "east")  # declared order is not alphabetical on purpose
SECRET_VALUE = "alice-7f3a"  # a data value that must never appear in an error message

COLUMNS = (
    ColumnSpec("site", ColumnType.STRING, ColumnClass.PUBLIC, categories=SITES),
    ColumnSpec("temp", ColumnType.FLOAT, ColumnClass.CONFIDENTIAL, -10.0, 40.0, nullable=True),
    ColumnSpec("cycles", ColumnType.INTEGER, ColumnClass.INTERNAL, 0.0, 100.0),
    ColumnSpec("flag", ColumnType.BOOLEAN, ColumnClass.INTERNAL),
    ColumnSpec("owner", ColumnType.STRING, ColumnClass.SECRET),
    ColumnSpec("note", ColumnType.STRING, ColumnClass.INTERNAL),
    ColumnSpec("zone", ColumnType.STRING, ColumnClass.INTERNAL, categories=("z1", "z2")),
    ColumnSpec("region", ColumnType.STRING, ColumnClass.PUBLIC),
    ColumnSpec("shift", ColumnType.INTEGER, ColumnClass.PUBLIC, 0.0, 3.0),
    ColumnSpec("unbounded", ColumnType.FLOAT, ColumnClass.INTERNAL),
    ColumnSpec("flat", ColumnType.FLOAT, ColumnClass.INTERNAL, 5.0, 5.0),
    ColumnSpec("worker", ColumnType.INTEGER, ColumnClass.INTERNAL),
)
SCHEMA = DatasetSchema(COLUMNS)
N = 1000


def make_frame(n: int = N) -> pl.DataFrame:
    """n rows; sites only south/north (east is absent) plus one value outside the set."""
    sites = ["south", "north", "north", "elsewhere"]
    return pl.DataFrame(
        {
            "site": [sites[i % 4] for i in range(n)],
            "temp": [float(i % 30) for i in range(n)],
            "cycles": [i % 7 for i in range(n)],
            "flag": [i % 2 == 0 for i in range(n)],
            "owner": [SECRET_VALUE] * n,
            "note": ["x"] * n,
            "zone": ["z1"] * n,
            "region": ["r"] * n,
            "shift": [i % 3 for i in range(n)],
            "unbounded": [1.0] * n,
            "flat": [5.0] * n,
            "worker": [i // 4 for i in range(n)],
        }
    )


FRAME = make_frame()


def agg(kind: str, column: str | None = None) -> Aggregate:
    return Aggregate(AggregateKind(kind), column)


def run(
    query: PrivateQuery, epsilon: float, frame: pl.DataFrame = FRAME, schema: DatasetSchema = SCHEMA
) -> QueryRelease:
    return run_private_query(frame, schema, query, epsilon)


def discrete_laplace_std(scale: float) -> float:
    """Standard deviation of OpenDP's integer Laplace, P(x) ∝ exp(-|x| / scale)."""
    a = math.exp(-1.0 / scale)
    return math.sqrt(2 * a) / (1 - a)


# ---------------------------------------------------------------- accounting


QUERIES = {
    "one": (COUNT,),
    "two": (COUNT, agg("sum", "temp")),
    "three": (COUNT, agg("sum", "cycles"), agg("mean", "temp")),
}
NOISE_ADDITIONS = {"one": 1, "two": 2, "three": 4}  # a mean is a noisy sum and a noisy count


@pytest.mark.parametrize("group_by", [(), ("site",)])
@pytest.mark.parametrize("name", sorted(QUERIES))
@pytest.mark.parametrize("epsilon", [0.3, 1.0])
def test_spends_exactly_the_requested_epsilon(
    name: str, group_by: tuple[str, ...], epsilon: float
) -> None:
    release = run(PrivateQuery(QUERIES[name], group_by), epsilon)
    assert release.epsilon <= epsilon
    assert release.epsilon == epsilon  # OpenDP's compositor charges exactly the budget
    assert release.delta == 0.0
    assert "OpenDP" in release.mechanism
    # One global scale: each noise addition gets epsilon / k, so a count's scale is k / eps.
    count = release.rows[0].values[0]
    assert count.noise_scale == pytest.approx(NOISE_ADDITIONS[name] / epsilon, rel=1e-9)
    assert len(release.rows) == (1 if not group_by else len(SITES))


def test_labels_follow_query_order() -> None:
    query = PrivateQuery((agg("mean", "temp"), COUNT, agg("count", "flag"), agg("sum", "cycles")))
    values = run(query, 1.0).rows[0].values
    assert [v.aggregate for v in values] == ["mean(temp)", "count", "count(flag)", "sum(cycles)"]


# ---------------------------------------------------------------- real noise


def test_same_query_twice_gives_different_values() -> None:
    query = PrivateQuery((COUNT, agg("sum", "temp")))
    first = [v.value for v in run(query, 0.1).rows[0].values]
    second = [v.value for v in run(query, 0.1).rows[0].values]
    assert first != second  # a float Laplace sum repeats with probability ~0


def test_count_noise_is_centred_with_the_reported_scale() -> None:
    query = PrivateQuery((COUNT,))
    releases = [run(query, 1.0).rows[0].values[0] for _ in range(200)]
    assert {r.noise_scale for r in releases} == {1.0}
    values = [r.value for r in releases]
    expected_std = discrete_laplace_std(1.0)  # ≈ 1.357
    # Mean of 200 draws: standard error ≈ 0.096, so 0.5 is > 5 standard errors.
    assert abs(statistics.fmean(values) - N) < 0.5
    # Sample std of 200 Laplace draws varies by ≈ 8% (kurtosis 6) with a heavy right tail:
    # simulated, it is off by > 30% in ≈ 5e-4 of runs and by > 40% in ≈ 1e-5.
    assert statistics.stdev(values) == pytest.approx(expected_std, rel=0.40)
    assert len(set(values)) > 3
    # Integer noise at scale 1 covers ≈ 97.3% (|noise| <= 3); at least 90% must.
    covered = sum(r.ci95[0] <= N <= r.ci95[1] for r in releases)
    assert covered >= 180


CELLS = tuple(f"c{i:02d}" for i in range(50))
CELL_SCHEMA = DatasetSchema(
    (
        ColumnSpec("cell", ColumnType.STRING, ColumnClass.PUBLIC, categories=CELLS),
        ColumnSpec("v", ColumnType.FLOAT, ColumnClass.CONFIDENTIAL, 0.0, 10.0),
    )
)
CELL_FRAME = pl.DataFrame(
    {"cell": [CELLS[i % 50] for i in range(N)], "v": [(i * 7 % 101) / 10.1 for i in range(N)]}
)


def test_ci95_covers_the_truth_about_95_percent_of_the_time() -> None:
    """20 runs x 50 independent groups = 1000 draws per statistic."""
    truth = {
        row["cell"]: row
        for row in CELL_FRAME.group_by("cell")
        .agg(pl.len().alias("n"), pl.col("v").sum().alias("s"), pl.col("v").mean().alias("m"))
        .iter_rows(named=True)
    }
    query = PrivateQuery((COUNT, agg("sum", "v"), agg("mean", "v")), ("cell",))
    hits = {"count": 0, "sum(v)": 0, "mean(v)": 0}
    for _ in range(20):
        for row in run(query, 1.0, CELL_FRAME, CELL_SCHEMA).rows:
            assert row.group is not None
            t = truth[row.group["cell"]]
            for value, exact in zip(row.values, (t["n"], t["s"], t["m"]), strict=True):
                hits[value.aggregate] += value.ci95[0] <= exact <= value.ci95[1]
    # Draws are Binomial(1000, ~0.95): sd ≈ 7, so [900, 990] is > 5 sd from 950.
    assert 900 <= hits["sum(v)"] <= 990
    # Integer noise covers ≈ 96%.
    assert 900 <= hits["count"] <= 990
    # The mean's interval is conservative (union bound), so it covers at least 95%.
    assert hits["mean(v)"] >= 930


# ---------------------------------------------------------------- grouping


def test_grouped_rows_are_all_declared_categories_in_declared_order() -> None:
    release = run(PrivateQuery((COUNT, agg("mean", "temp")), ("site",)), 1000.0)
    assert [row.group for row in release.rows] == [{"site": site} for site in SITES]
    counts = {site: row.values[0].value for site, row in zip(SITES, release.rows, strict=True)}
    # scale 2/1000: releases are exact but east (absent) still gets a noisy value.
    assert counts == {"south": 250.0, "north": 500.0, "east": pytest.approx(0.0, abs=1)}
    east_mean = release.rows[2].values[1]
    assert math.isfinite(east_mean.value) and -10.0 <= east_mean.value <= 40.0
    assert -10.0 <= east_mean.ci95[0] <= east_mean.ci95[1] <= 40.0


def test_ungrouped_release_has_one_row_without_group() -> None:
    release = run(PrivateQuery((COUNT,)), 1.0)
    assert len(release.rows) == 1 and release.rows[0].group is None


# ---------------------------------------------------------------- clamping and nulls


def test_outlier_is_clamped_to_declared_bounds() -> None:
    frame = FRAME.with_columns(
        temp=pl.Series([1.0] * (N - 1) + [1e9]),
        cycles=pl.Series([1] * (N - 1) + [10**12]),
    )
    query = PrivateQuery((agg("sum", "temp"), agg("sum", "cycles"), agg("mean", "temp")))
    total, cycles, mean = run(query, 1000.0, frame).rows[0].values
    # 1e9 counts as upper=40, 10**12 as 100.  The tolerance is 20 noise scales: Laplace
    # noise goes past it with probability e**-20 (a fixed ±1 failed about once in 400 runs).
    assert total.value == pytest.approx(999 + 40, abs=20 * total.noise_scale)
    assert cycles.value == pytest.approx(999 + 100, abs=20 * cycles.noise_scale)
    assert mean.value == pytest.approx(1039 / N, abs=0.01)
    assert mean.ci95[0] <= mean.value <= mean.ci95[1]


def test_nulls_and_nans_count_as_zero_clamped_into_bounds() -> None:
    frame = FRAME.with_columns(
        temp=pl.Series([None, float("nan"), 2.0, 2.0] * (N // 4), dtype=pl.Float64)
    )
    schema = DatasetSchema(
        (*COLUMNS[:1], ColumnSpec("temp", ColumnType.FLOAT, ColumnClass.INTERNAL, 1.0, 5.0))
    )
    query = PrivateQuery((agg("sum", "temp"), agg("count", "temp"), agg("mean", "temp")))
    total, non_null, mean = run(query, 1000.0, frame, schema).rows[0].values
    # Nulls and NaN become 0 clamped into [1, 5], i.e. 1; NaN is not null for count.
    assert total.value == pytest.approx(250 * (1 + 1 + 2 + 2), abs=1.0)
    assert non_null.value == pytest.approx(750, abs=1)
    assert mean.value == pytest.approx(1.5, abs=0.01)


def test_polars_dtypes_are_cast_to_declared_types() -> None:
    frame = FRAME.with_columns(
        pl.col("temp").cast(pl.Float32),
        pl.col("cycles").cast(pl.Int16),
        pl.col("site").cast(pl.Enum(["south", "north", "elsewhere"])),
        pl.col("shift").cast(pl.UInt8),
    )
    schema = DatasetSchema(
        (*COLUMNS, ColumnSpec("odd", ColumnType.INTEGER, ColumnClass.INTERNAL, 0.5, 9.5))
    )
    frame = frame.with_columns(odd=pl.Series([3, None] * (N // 2), dtype=pl.Int32))
    query = PrivateQuery(
        (agg("mean", "temp"), agg("sum", "cycles"), agg("count", "flag"), agg("sum", "odd")),
        ("site",),
    )
    release = run(query, 1000.0, frame, schema)
    assert [row.group for row in release.rows] == [{"site": site} for site in SITES]
    odd = sum(row.values[3].value for row in release.rows)
    # 500 threes (all at south/north rows); nulls become 0, inside the hull [0, 10] of [0.5, 9.5].
    assert odd == pytest.approx(3 * 500, abs=3.0)
    assert all(math.isfinite(v.value) for row in release.rows for v in row.values)


# ---------------------------------------------------------------- privacy unit


def id_schema(max_rows: int) -> DatasetSchema:
    return DatasetSchema(COLUMNS, PrivacyUnit(id_column="worker", max_rows_per_id=max_rows))


def test_id_unit_scales_noise_by_max_rows_per_id() -> None:
    query = PrivateQuery((COUNT,))
    per_row = run(query, 1.0).rows[0].values[0].noise_scale
    one = run(query, 1.0, schema=id_schema(1)).rows[0].values[0].noise_scale
    three = run(query, 1.0, schema=id_schema(3)).rows[0].values[0].noise_scale
    assert per_row == pytest.approx(1.0, rel=1e-12)
    assert one == pytest.approx(1.0, rel=1e-12)
    assert three == pytest.approx(3.0, rel=1e-12)
    grouped = run(PrivateQuery((COUNT,), ("site",)), 1.0, schema=id_schema(3))
    assert grouped.rows[0].values[0].noise_scale == pytest.approx(3.0, rel=1e-12)


def test_opendp_truncates_rows_per_id() -> None:
    # worker 0 has 500 rows, workers 1..100 one row each.
    frame = make_frame().with_columns(worker=pl.Series([0] * 500 + list(range(1, 501))))
    frame = frame.head(600)
    release = run(PrivateQuery((COUNT,)), 1000.0, frame, id_schema(3))
    assert release.rows[0].values[0].value == pytest.approx(3 + 100, abs=1)
    assert release.epsilon == 1000.0


# ---------------------------------------------------------------- refusals


QUANTILE = AggregateKind.QUANTILE
HISTOGRAM = AggregateKind.HISTOGRAM
REFUSED = [
    (PrivateQuery((agg("sum", "owner"),)), "owner", "secret"),
    (PrivateQuery((agg("count", "owner"),)), "owner", "secret"),
    (PrivateQuery((COUNT,), ("owner",)), "owner", "secret"),
    (PrivateQuery((agg("sum", "nope"),)), "nope", "not declared"),
    (PrivateQuery((COUNT,), ("nope",)), "nope", "not declared"),
    (PrivateQuery((agg("sum", "note"),)), "note", "integer or float"),
    (PrivateQuery((agg("mean", "flag"),)), "flag", "integer or float"),
    (PrivateQuery((agg("median", "note"),)), "note", "integer or float"),
    (PrivateQuery((agg("sum", "unbounded"),)), "unbounded", "bounds"),
    (PrivateQuery((agg("median", "unbounded"),)), "unbounded", "bounds"),
    (PrivateQuery((agg("mean", "flat"),)), "flat", "lower below upper"),
    (PrivateQuery((agg("sum"),)), "sum", "needs a column"),
    (PrivateQuery((agg("histogram"),)), "histogram", "needs a column"),
    (PrivateQuery((COUNT,), ("temp",)), "temp", "confidential"),
    (PrivateQuery((COUNT,), ("unbounded",)), "unbounded", "string, integer or boolean"),
    (PrivateQuery((COUNT,), ("site", "site")), "group_by", "twice"),
    (PrivateQuery((COUNT,), ("site", "zone", "flag", "note", "shift")), "group_by", "at most 4"),
    (PrivateQuery((Aggregate(QUANTILE, "temp"),)), "quantile(temp)", "strictly between 0"),
    (PrivateQuery((Aggregate(QUANTILE, "temp", q=1.0),)), "quantile(temp)", "between 0 and 1"),
    (PrivateQuery((Aggregate(AggregateKind.MEAN, "temp", q=0.5),)), "mean", "only a quantile"),
    (PrivateQuery((Aggregate(AggregateKind.COUNT, bins=3),)), "count", "only a histogram"),
    (PrivateQuery((Aggregate(HISTOGRAM, "temp"),)), "temp", "needs bins"),
    (PrivateQuery((Aggregate(HISTOGRAM, "temp", bins=1),)), "temp", "2 to 100 bins"),
    (PrivateQuery((Aggregate(HISTOGRAM, "temp", bins=101),)), "temp", "2 to 100 bins"),
    (PrivateQuery((Aggregate(HISTOGRAM, "unbounded", bins=4),)), "unbounded", "bounds"),
    (PrivateQuery((Aggregate(HISTOGRAM, "site", bins=4),)), "site", "takes no bins"),
    (PrivateQuery((Aggregate(HISTOGRAM, "flag"),)), "flag", "declared categories"),
    (PrivateQuery((Aggregate(HISTOGRAM, "note"),)), "note", "declared categories"),
    (PrivateQuery(()), "aggregate", "at least one"),
    (PrivateQuery((COUNT,) * 9), "aggregates", "at most 8"),
]


@pytest.mark.parametrize(("query", "column", "expected"), REFUSED)
def test_validate_query_refuses(query: PrivateQuery, column: str, expected: str) -> None:
    with pytest.raises(QueryError) as caught:
        validate_query(SCHEMA, query)
    message = str(caught.value)
    assert column in message and expected in message
    assert SECRET_VALUE not in message
    # run_private_query validates too, before touching the data
    with pytest.raises(QueryError, match=expected):
        run(query, 1.0)


@pytest.mark.parametrize("epsilon", [0.0, -1.0, math.inf, math.nan])
def test_bad_epsilon_is_refused(epsilon: float) -> None:
    with pytest.raises(QueryError, match="epsilon"):
        run(PrivateQuery((COUNT,)), epsilon)


@pytest.mark.parametrize("delta", [-0.1, 1.0])
def test_bad_delta_is_refused(delta: float) -> None:
    with pytest.raises(QueryError, match="delta"):
        run_private_query(FRAME, SCHEMA, PrivateQuery((COUNT,)), 1.0, delta)


def test_private_keys_need_a_delta() -> None:
    # zone is internal: its declared categories are not public keys, so OpenDP selects keys.
    with pytest.raises(QueryError, match=r"delta > 0 \(e.g. 1e-6\)"):
        run(PrivateQuery((COUNT,), ("zone",)), 1.0)


def test_given_delta_is_not_spent() -> None:
    release = run_private_query(FRAME, SCHEMA, PrivateQuery((COUNT,)), 1.0, 1e-6)
    assert release.delta == 0.0 and release.epsilon == 1.0


def test_frame_and_unit_mismatches_are_refused_without_data_values() -> None:
    with pytest.raises(QueryError, match="'temp'") as caught:
        run(PrivateQuery((agg("sum", "temp"),)), 1.0, FRAME.drop("temp"))
    assert SECRET_VALUE not in str(caught.value)
    unknown_id = DatasetSchema(COLUMNS, PrivacyUnit(id_column="badge", max_rows_per_id=2))
    with pytest.raises(QueryError, match="'badge'"):
        run(PrivateQuery((COUNT,)), 1.0, schema=unknown_id)


def test_frames_over_the_row_limit_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dp_plans, "MAX_ROWS", N - 1)
    with pytest.raises(QueryError, match="rows"):
        run(PrivateQuery((COUNT,)), 1.0)


@pytest.mark.parametrize(
    "module", [private_query, dp_catalog, dp_plans, dp_preview, dp_run, query_document]
)
def test_no_hand_rolled_noise(module: object) -> None:
    source = Path(str(getattr(module, "__file__", ""))).read_text()
    for forbidden in (
        "import random",
        "numpy",
        "secrets",
        "np.",
        ".laplace(",
        "laplace_noise",
        "def noise",
        "def add_noise",
    ):
        assert forbidden not in source


def test_released_value_is_frozen() -> None:
    value = ReleasedValue("count", 1.0, 1.0, (0.0, 2.0))
    with pytest.raises(AttributeError):
        value.value = 2.0  # type: ignore[misc]
