"""The full catalog: multi-column keys, DP key selection, quantiles, histograms, previews."""

from __future__ import annotations

import math
import statistics

import polars as pl
import pytest

from analytics import dp_catalog
from analytics.private_query import (
    PreviewItem,
    QueryError,
    QueryRelease,
    ReleasedRow,
    ReleasedValue,
    preview_query,
    run_private_query,
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

K = AggregateKind
COUNT = Aggregate(K.COUNT)
SITES = ("south", "north", "east")  # east never occurs in the data
SHIFTS = ("day", "night")
N = 2000
SECRET_VALUE = "alice-7f3a"

SCHEMA = DatasetSchema(
    (
        ColumnSpec("site", ColumnType.STRING, ColumnClass.PUBLIC, categories=SITES),
        ColumnSpec("shift", ColumnType.STRING, ColumnClass.PUBLIC, categories=SHIFTS),
        ColumnSpec("line", ColumnType.STRING, ColumnClass.INTERNAL),
        ColumnSpec("machine", ColumnType.INTEGER, ColumnClass.PUBLIC, 0.0, 100.0),
        ColumnSpec("ok", ColumnType.BOOLEAN, ColumnClass.INTERNAL),
        ColumnSpec("badge", ColumnType.STRING, ColumnClass.CONFIDENTIAL),
        ColumnSpec("temp", ColumnType.FLOAT, ColumnClass.CONFIDENTIAL, 0.0, 100.0, nullable=True),
        ColumnSpec("cycles", ColumnType.INTEGER, ColumnClass.INTERNAL, 0.0, 1000.0),
    )
)


def make_frame() -> pl.DataFrame:
    """South/north alternate with day/night on a period of 4; lines L1/L2 big, L3 one row."""
    return pl.DataFrame(
        {
            "site": [SITES[i % 2] for i in range(N)],
            "shift": [SHIFTS[(i // 2) % 2] for i in range(N)],
            "line": ["L3"] + ["L1", "L2"] * ((N - 2) // 2) + ["L2"],
            "machine": [i % 2 + 7 for i in range(N)],
            "ok": [i % 4 != 0 for i in range(N)],
            "badge": [SECRET_VALUE] * N,
            "temp": [float(i % 100) for i in range(N)],  # 20 rows at each of 0..99
            "cycles": [i % 500 for i in range(N)],
        }
    )


FRAME = make_frame()


def run(query: PrivateQuery, epsilon: float, delta: float = 0.0) -> QueryRelease:
    return run_private_query(FRAME, SCHEMA, query, epsilon, delta)


def values(row: ReleasedRow) -> dict[str, ReleasedValue]:
    return {value.aggregate: value for value in row.values}


def histogram(column: str, bins: int | None = None) -> Aggregate:
    return Aggregate(K.HISTOGRAM, column, bins=bins)


# ---------------------------------------------------------------- public multi-column keys


def test_public_keys_are_the_product_of_declared_categories() -> None:
    release = run(PrivateQuery((COUNT,), ("site", "shift")), 1000.0)
    assert [row.group for row in release.rows] == [
        {"site": site, "shift": shift} for site in SITES for shift in SHIFTS
    ]
    counts = [row.values[0].value for row in release.rows]
    # scale 1/1000: exact for present keys; east (absent) still gets a noisy value.
    assert counts[:4] == [500.0, 500.0, 500.0, 500.0]
    assert counts[4:] == [pytest.approx(0.0, abs=1), pytest.approx(0.0, abs=1)]
    assert release.epsilon == 1000.0 and release.delta == 0.0 and release.notes == ()


def test_too_many_public_keys_are_refused() -> None:
    many = tuple(f"c{i}" for i in range(101))
    schema = DatasetSchema(
        tuple(
            ColumnSpec(name, ColumnType.STRING, ColumnClass.PUBLIC, categories=many)
            for name in ("a", "b")
        )
    )
    with pytest.raises(QueryError, match="10201 values per statistic, more than 10000"):
        dp_catalog.validate_query(schema, PrivateQuery((COUNT,), ("a", "b")))
    # Histogram bins multiply the keys too: 3 sites x 2 shifts x 100 bins fits, 101 x 100 not.
    dp_catalog.validate_query(SCHEMA, PrivateQuery((histogram("temp", 100),), ("site", "shift")))
    with pytest.raises(QueryError, match="more than 10000"):
        dp_catalog.validate_query(schema, PrivateQuery((histogram("a"),), ("a",)))


# ---------------------------------------------------------------- DP key selection


def test_key_selection_drops_rare_keys_and_costs_delta() -> None:
    release = run(PrivateQuery((COUNT, Aggregate(K.SUM, "cycles")), ("line",)), 1.0, 1e-6)
    groups = [row.group for row in release.rows]
    assert groups == [{"line": "L1"}, {"line": "L2"}]  # L3 (1 row) is below any threshold
    assert 0 < release.delta <= 1e-6  # OpenDP's accounting of the thresholded count
    assert release.epsilon <= 1.0
    assert release.epsilon == pytest.approx(1.0, rel=1e-12)
    assert "noisy row count reached" in release.notes[0]
    count = values(release.rows[0])["count"]
    assert count.value == pytest.approx(1000, abs=30)  # Laplace scale 2: |noise| < 30 always
    assert count.noise_scale == pytest.approx(2.0, rel=1e-9)  # 2 units share epsilon 1


def test_no_selected_key_releases_nothing_and_charges_only_the_key_plan() -> None:
    frame = FRAME.with_columns(line=pl.Series([f"L{i}" for i in range(N)]))  # 1 row each
    query = PrivateQuery((COUNT, Aggregate(K.MEAN, "temp")), ("line",))
    release = run_private_query(frame, SCHEMA, query, 1.0, 1e-6)
    assert release.rows == ()
    # Only the key plan ran: 1 of 3 units of epsilon, and its delta.
    assert release.epsilon == pytest.approx(1.0 / 3, rel=1e-9)
    assert 0 < release.delta <= 1e-6
    assert "0 key(s) kept" in release.notes[0]


def test_key_selection_with_an_id_privacy_unit() -> None:
    # 500 ids (cycles) of 4 rows each, all on one line (but id 0); at most 2 rows kept per id.
    schema = DatasetSchema(SCHEMA.columns, PrivacyUnit(id_column="cycles", max_rows_per_id=2))
    release = run_private_query(FRAME, schema, PrivateQuery((COUNT,), ("line",)), 1.0, 1e-6)
    assert [row.group for row in release.rows] == [{"line": "L1"}, {"line": "L2"}]
    counts = [row.values[0].value for row in release.rows]
    assert counts == pytest.approx([500, 500], abs=30)  # truncated from 1000 each
    # One id moves a count by up to 2 rows: the Laplace scale doubles.
    assert release.rows[0].values[0].noise_scale == pytest.approx(2.0, rel=1e-9)
    assert 0 < release.delta <= 1e-6


def test_smaller_delta_raises_the_threshold() -> None:
    query = PrivateQuery((COUNT,), ("line",))
    loose = preview_query(SCHEMA, query, 1.0, 1e-3)
    tight = preview_query(SCHEMA, query, 1.0, 1e-9)
    assert tight.delta <= 1e-9 < loose.delta <= 1e-3

    def threshold(notes: tuple[str, ...]) -> int:
        return int(
            next(n for n in notes if "key selection" in n).split("reaches ")[1].split(";")[0]
        )

    assert threshold(tight.notes) > threshold(loose.notes) > 2


def test_private_keys_without_delta_are_refused() -> None:
    for group_by in [("line",), ("site", "line"), ("machine",), ("ok",)]:
        with pytest.raises(QueryError, match=r"needs a delta > 0 \(e\.g\. 1e-6\)"):
            run(PrivateQuery((COUNT,), group_by), 1.0)


def test_confidential_keys_are_refused_without_values() -> None:
    with pytest.raises(QueryError, match=r"'badge' .* confidential") as caught:
        run(PrivateQuery((COUNT,), ("badge",)), 1.0, 1e-6)
    assert SECRET_VALUE not in str(caught.value)


def test_mixed_and_typed_private_keys() -> None:
    release = run(PrivateQuery((COUNT,), ("site", "machine", "ok")), 100.0, 1e-6)
    groups = [row.group for row in release.rows]
    # machine follows site, and north rows are all ok: 3 combinations exist; none invented.
    assert groups == [
        {"site": "north", "machine": "8", "ok": "true"},
        {"site": "south", "machine": "7", "ok": "false"},
        {"site": "south", "machine": "7", "ok": "true"},
    ]
    counts = [row.values[0].value for row in release.rows]
    assert counts == pytest.approx([1000, 500, 500], abs=2)


def test_hidden_key_count_still_gives_every_value() -> None:
    query = PrivateQuery((Aggregate(K.MEAN, "temp"), histogram("shift")), ("line",))
    release = run(query, 100.0, 1e-6)
    assert [row.group for row in release.rows] == [{"line": "L1"}, {"line": "L2"}]
    for row in release.rows:
        labels = [value.aggregate for value in row.values]
        assert labels == ["mean(temp)", "histogram(shift)=day", "histogram(shift)=night"]
        assert values(row)["mean(temp)"].value == pytest.approx(49.5, abs=1.5)
        shifts = values(row)["histogram(shift)=day"].value + row.values[2].value
        assert shifts == pytest.approx(1000, abs=5)


# ---------------------------------------------------------------- quantiles


def test_quantile_and_median_land_near_the_truth() -> None:
    query = PrivateQuery(
        (
            Aggregate(K.QUANTILE, "temp", q=0.9),
            Aggregate(K.MEDIAN, "temp"),
            Aggregate(K.MEDIAN, "cycles"),
        )
    )
    for _ in range(5):
        q90, median, cycles = run(query, 30.0).rows[0].values
        # Truth: 89.5 (90% of 0..99), 49.5, 249.5; candidates every 1 and every 10.
        # The rank error is within 0.9 * 0.2 * ln(2020) ≈ 1.4 rows (95%), i.e. one value.
        assert 87.0 <= q90.value <= 92.0
        assert 47.0 <= median.value <= 52.0
        assert cycles.value in (230.0, 240.0, 250.0, 260.0, 270.0)
    assert (q90.aggregate, median.aggregate) == ("quantile(temp, 0.9)", "median(temp)")
    assert q90.ci95 == (0.0, 100.0) and cycles.ci95 == (0.0, 1000.0)  # no honest interval
    # Global scale 6 / 30 = 0.2 per unit; in rows of rank, times max(q, 1 - q).
    assert q90.noise_scale == pytest.approx(0.2 * 0.9, rel=1e-9)
    assert median.noise_scale == pytest.approx(0.2 * 0.5, rel=1e-9)


def test_quantile_candidates() -> None:
    temp, cycles, machine = (SCHEMA.column(n) for n in ("temp", "cycles", "machine"))
    floats = dp_catalog.quantile_candidates(temp)
    assert len(floats) == 101 and floats[0] == 0.0 and floats[-1] == 100.0
    assert dp_catalog.quantile_candidates(cycles)[:3] == [0, 10, 20]
    assert dp_catalog.quantile_candidates(machine) == list(range(101))


def test_quantiles_ignore_nulls_and_nans() -> None:
    temp = [None, float("nan"), 80.0, 80.0] * (N // 4)
    frame = FRAME.with_columns(temp=pl.Series(temp, dtype=pl.Float64))
    release = run_private_query(frame, SCHEMA, PrivateQuery((Aggregate(K.MEDIAN, "temp"),)), 30.0)
    assert release.rows[0].values[0].value == pytest.approx(80.0, abs=1)


def test_grouped_medians_use_public_keys() -> None:
    frame = FRAME.with_columns(temp=pl.when(pl.col("site") == "south").then(20.0).otherwise(70.0))
    query = PrivateQuery((Aggregate(K.MEDIAN, "temp"),), ("site",))
    release = run_private_query(frame, SCHEMA, query, 30.0)
    medians = [row.values[0].value for row in release.rows]
    assert medians[:2] == [pytest.approx(20.0, abs=1), pytest.approx(70.0, abs=1)]
    assert 0.0 <= medians[2] <= 100.0  # east: no rows, any candidate


# ---------------------------------------------------------------- histograms


def test_numeric_histogram_bins_cover_the_bounds() -> None:
    temp = [-5.0, 150.0, None, float("nan")] + [float(i % 100) for i in range(N - 4)]
    frame = FRAME.with_columns(temp=pl.Series(temp, dtype=pl.Float64))
    release = run_private_query(frame, SCHEMA, PrivateQuery((histogram("temp", 10),)), 1000.0)
    bins = release.rows[0].values
    assert [b.aggregate for b in bins] == [
        f"histogram(temp)[{10 * i}, {10 * i + 10}{']' if i == 9 else ')'}" for i in range(10)
    ]
    counts = [b.value for b in bins]
    # -5 is clamped into the first bin, 150 into the last; null and NaN are not counted.
    # 0..95 occur 20 times, 96..99 19 times (N - 4 values of i % 100).
    assert counts == pytest.approx([200 + 1, *[200] * 8, 200 - 4 + 1], abs=1)
    assert sum(counts) == pytest.approx(N - 2, abs=5)
    assert release.epsilon == 1000.0


def test_category_histogram_releases_every_category() -> None:
    release = run(PrivateQuery((histogram("site"), histogram("shift")), ("shift",)), 1000.0)
    for row, shift in zip(release.rows, SHIFTS, strict=True):
        assert row.group == {"shift": shift}
        counts = {v.aggregate: v.value for v in row.values}
        assert counts == {
            "histogram(site)=south": pytest.approx(500, abs=1),
            "histogram(site)=north": pytest.approx(500, abs=1),
            "histogram(site)=east": pytest.approx(0, abs=1),
            f"histogram(shift)={shift}": pytest.approx(1000, abs=1),
            f"histogram(shift)={'night' if shift == 'day' else 'day'}": pytest.approx(0, abs=1),
        }


def test_histogram_shares_the_budget_with_other_plans() -> None:
    query = PrivateQuery((COUNT, histogram("temp", 4), Aggregate(K.MEAN, "temp")), ("site",))
    release = run(query, 1.0)
    # 4 units (count, histogram, mean's sum and count) in 2 OpenDP measurements.
    assert release.epsilon <= 1.0
    assert release.epsilon == pytest.approx(1.0, rel=1e-12)
    count, first_bin = release.rows[0].values[:2]
    assert count.noise_scale == pytest.approx(4.0, rel=1e-9)
    assert first_bin.noise_scale == pytest.approx(4.0, rel=1e-9)
    assert len(release.rows[0].values) == 1 + 4 + 1


def test_histogram_noise_is_real_and_its_intervals_cover() -> None:
    query = PrivateQuery((histogram("temp", 10),))
    truth = 200.0
    draws = [v.value - truth for _ in range(30) for v in run(query, 1.0).rows[0].values]
    # 300 integer-Laplace draws at scale 1 (sd ≈ 1.36): mean within 0.5 is > 6 standard errors.
    assert abs(statistics.fmean(draws)) < 0.5
    assert len(set(draws)) > 3
    covered = sum(
        v.ci95[0] <= truth <= v.ci95[1] for _ in range(30) for v in run(query, 1.0).rows[0].values
    )
    assert covered >= 270  # ≈ 97% expected (|noise| <= 3)


def test_histogram_with_private_keys_gives_every_bin_of_each_selected_key() -> None:
    release = run(PrivateQuery((histogram("temp", 2),), ("line",)), 100.0, 1e-6)
    assert [row.group for row in release.rows] == [{"line": "L1"}, {"line": "L2"}]
    for row in release.rows:
        assert [v.aggregate for v in row.values] == [
            "histogram(temp)[0, 50)",
            "histogram(temp)[50, 100]",
        ]
        assert sum(v.value for v in row.values) == pytest.approx(1000, abs=5)


# ---------------------------------------------------------------- preview


PREVIEWED = [
    (PrivateQuery((COUNT, Aggregate(K.SUM, "cycles"), histogram("temp", 5))), 0.0),
    (PrivateQuery((Aggregate(K.QUANTILE, "temp", q=0.25), histogram("site")), ("shift",)), 0.0),
    (PrivateQuery((COUNT, Aggregate(K.SUM, "cycles"), histogram("shift")), ("line",)), 1e-6),
    (PrivateQuery((Aggregate(K.MEDIAN, "cycles"),), ("ok",)), 1e-7),
]


@pytest.mark.parametrize(("query", "delta"), PREVIEWED)
def test_preview_scales_equal_the_release_scales(query: PrivateQuery, delta: float) -> None:
    preview = preview_query(SCHEMA, query, 0.5, delta)  # no frame at all
    release = run(query, 0.5, delta)
    assert preview.epsilon == pytest.approx(release.epsilon, rel=1e-12)
    assert preview.delta == pytest.approx(release.delta, rel=1e-9)
    assert preview.epsilon <= 0.5 and preview.delta <= delta
    released = {v.aggregate.split("[")[0].split("=")[0]: v for v in release.rows[0].values}
    for item in preview.aggregates:
        assert item.noise_scale == pytest.approx(released[item.aggregate].noise_scale, rel=1e-9)
        assert item.note is not None and "spends epsilon" in item.note
        if item.ci95_half_width is not None:
            value = released[item.aggregate]
            upper = value.ci95[1] - value.value
            if value.value > 0:
                assert upper == pytest.approx(item.ci95_half_width, rel=1e-9)
            else:  # a count clamped at 0 (post-processing) has its interval clamped too
                assert 0 <= upper <= item.ci95_half_width * (1 + 1e-9)


def test_preview_reads_no_data(monkeypatch: pytest.MonkeyPatch) -> None:
    from analytics import dp_plans

    seen: list[int] = []
    prepare = dp_plans.prepare

    def spy(frame: pl.DataFrame, *args: object) -> pl.LazyFrame:
        seen.append(frame.height)
        return prepare(frame, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(dp_plans, "prepare", spy)
    preview = preview_query(SCHEMA, PrivateQuery((COUNT,), ("site", "shift")), 1.0)
    assert seen == [0]
    assert preview.epsilon == 1.0 and preview.delta == 0.0
    assert preview.aggregates == (
        PreviewItem("count", pytest.approx(1.0), pytest.approx(3.38, abs=0.01), "spends epsilon 1"),
    )
    assert any("6 public keys" in note for note in preview.notes)


def test_preview_of_means_and_quantiles_is_honest() -> None:
    query = PrivateQuery((Aggregate(K.MEAN, "temp"), Aggregate(K.QUANTILE, "temp", q=0.9)))
    blind = preview_query(SCHEMA, query, 1.0)
    mean, quantile = blind.aggregates
    assert mean.noise_scale is None and mean.ci95_half_width is None
    assert mean.note is not None and "unknown row count" in mean.note
    assert quantile.ci95_half_width is None and quantile.noise_scale == pytest.approx(3.6)
    assert quantile.note is not None and "101 candidates" in quantile.note
    hinted = preview_query(SCHEMA, query, 1.0, rows_hint=N).aggregates[0]
    assert hinted.ci95_half_width is not None
    # The estimate takes the worst |mean| (the largest bound), so it covers the interval
    # of a release on N rows (mean 49.5), without being much wider.
    released = run(query, 1.0).rows[0].values[0]
    width = (released.ci95[1] - released.ci95[0]) / 2
    assert 0.9 * width <= hinted.ci95_half_width <= 2 * width
    assert preview_query(SCHEMA, query, 1.0, rows_hint=0).aggregates[0].ci95_half_width is None
    with pytest.raises(QueryError, match="rows_hint"):
        preview_query(SCHEMA, query, 1.0, rows_hint=-1)


def test_preview_refuses_what_a_release_refuses() -> None:
    with pytest.raises(QueryError, match="delta > 0"):
        preview_query(SCHEMA, PrivateQuery((COUNT,), ("line",)), 1.0)
    with pytest.raises(QueryError, match="confidential"):
        preview_query(SCHEMA, PrivateQuery((COUNT,), ("badge",)), 1.0, 1e-6)
    assert not math.isnan(preview_query(SCHEMA, PrivateQuery((COUNT,)), 1.0).epsilon)
