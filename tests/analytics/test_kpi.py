"""KPI verdicts (``analytics.kpi``): the verdict at the margin, the interval, the checks."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from analytics.kpi import (
    BASELINE,
    EVALUATION,
    KpiError,
    KpiQuery,
    Statistic,
    Verdict,
    judge,
    parse_kpi,
    run_kpi,
    validate_kpi,
)
from analytics.private_query import QueryRelease
from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema

F, INT = ColumnType.FLOAT, ColumnType.INTEGER
SCHEMA = DatasetSchema(
    (
        ColumnSpec("day", INT, ColumnClass.INTERNAL, 0, 1000),
        ColumnSpec("scrap", F, ColumnClass.CONFIDENTIAL, 0.0, 20.0),
        ColumnSpec("produced", INT, ColumnClass.INTERNAL, 0, 200),
        ColumnSpec("availability", F, ColumnClass.INTERNAL, 0.0, 1.0),
        ColumnSpec("performance", F, ColumnClass.INTERNAL, 0.0, 1.0),
        ColumnSpec("quality", F, ColumnClass.INTERNAL, 0.0, 1.0),
        ColumnSpec("recipe", F, ColumnClass.SECRET, 0.0, 1.0),
        ColumnSpec("line", ColumnType.STRING, ColumnClass.PUBLIC, categories=("a", "b")),
        ColumnSpec("lead_hours", F, ColumnClass.INTERNAL, 0.0, 100.0, nullable=True),
    )
)
SCRAP = {
    "kpi": "scrap_rate",
    "columns": {"scrap": "scrap", "produced": "produced"},
    "time_column": "day",
    "baseline": {"from": 0, "to": 100},
    "evaluation": {"from": 100, "to": 200},
}
OEE = {
    "kpi": "oee",
    "columns": {"availability": "availability", "performance": "performance",
                "quality": "quality"},
    "time_column": "day",
    "baseline": {"from": 0, "to": 100},
    "evaluation": {"from": 100, "to": 200},
}  # fmt: skip


def _frame(rows: int, scrap: tuple[float, float], oee_factor: float) -> pl.DataFrame:
    """``rows`` rows per period; the evaluation period's scrap and availability changed."""
    day = np.concatenate([np.arange(rows) % 100, 100 + np.arange(rows) % 100])
    n = 2 * rows
    return pl.DataFrame(
        {
            "day": day.astype(np.int64),
            "scrap": np.where(day < 100, scrap[0], scrap[1]),
            "produced": np.full(n, 100, dtype=np.int64),
            "availability": np.where(day < 100, 0.8, 0.8 * oee_factor),
            "performance": np.full(n, 0.9),
            "quality": np.full(n, 0.95),
            "recipe": np.zeros(n),
            "line": ["a"] * n,
            "lead_hours": np.ones(n),
        }
    )


def _verdict(document: dict, frame: pl.DataFrame, epsilon: float, target: float = 0.05):
    query = parse_kpi(document)
    releases = run_kpi(frame, SCHEMA, query, epsilon)
    assert sum(r.epsilon for r in releases.values()) == pytest.approx(epsilon)
    released = {p: _stats(r) for p, r in releases.items()}
    return judge(query, SCHEMA, released, target, 0.95)


def _stats(release: QueryRelease) -> list[Statistic]:
    (row,) = release.rows
    return [Statistic(v.aggregate, v.value, v.noise_scale) for v in row.values]


@pytest.mark.parametrize(
    ("improvement", "expected"), [(0.049, Verdict.NOT_MET), (0.051, Verdict.MET)]
)
def test_scrap_rate_at_the_margin_with_enough_data(improvement: float, expected: Verdict) -> None:
    # The scrap rate falls by exactly ``improvement`` (10 -> 10 * (1 - improvement) per 100).
    frame = _frame(100_000, (10.0, 10.0 * (1 - improvement)), 1.0)
    change = _verdict(SCRAP, frame, epsilon=10.0)
    assert change.verdict == expected
    low, high = change.interval
    assert low is not None and high is not None
    assert low <= improvement <= high
    assert high - low < 0.002


@pytest.mark.parametrize(
    ("improvement", "expected"), [(0.049, Verdict.NOT_MET), (0.051, Verdict.MET)]
)
def test_oee_at_the_margin_with_enough_data(improvement: float, expected: Verdict) -> None:
    frame = _frame(100_000, (10.0, 10.0), 1 + improvement)  # OEE up by exactly that
    change = _verdict(OEE, frame, epsilon=20.0)
    assert change.verdict == expected
    low, high = change.interval
    assert low is not None and high is not None
    assert low <= improvement <= high


def test_near_the_margin_with_little_data_is_inconclusive() -> None:
    frame = _frame(200, (10.0, 10.0 * 0.949), 1.0)
    change = _verdict(SCRAP, frame, epsilon=1.0)
    assert change.verdict == Verdict.INCONCLUSIVE
    low, high = change.interval
    assert (low is None or low < 0.05) and (high is None or high >= 0.05)


def test_judge_is_post_processing_of_the_statistics() -> None:
    """Direction, and the interval from the noise scales (no data needed)."""
    query = parse_kpi(SCRAP)
    produced = Statistic("sum(produced)", 10_000.0, 1.0)
    exact = {
        BASELINE: [Statistic("sum(scrap)", 1000.0, 1.0), produced],
        EVALUATION: [Statistic("sum(scrap)", 900.0, 1.0), produced],
    }
    change = judge(query, SCHEMA, exact, 0.05, 0.95)
    assert change.change == pytest.approx(0.10)
    assert change.verdict == Verdict.MET
    noisy = {p: [Statistic(s.aggregate, s.value, 200.0) for s in v] for p, v in exact.items()}
    assert judge(query, SCHEMA, noisy, 0.05, 0.95).verdict == Verdict.INCONCLUSIVE
    wrong = {p: v[:1] for p, v in exact.items()}
    with pytest.raises(KpiError):
        judge(query, SCHEMA, wrong, 0.05, 0.95)


def _refusal(document: dict) -> str:
    with pytest.raises(KpiError) as caught:
        validate_kpi(SCHEMA, parse_kpi(document))
    return str(caught.value)


def test_a_secret_column_is_refused() -> None:
    message = _refusal({**SCRAP, "columns": {"scrap": "recipe", "produced": "produced"}})
    assert "'recipe' (scrap) is secret" in message


def test_a_column_of_the_wrong_type_is_refused() -> None:
    message = _refusal({**SCRAP, "columns": {"scrap": "line", "produced": "produced"}})
    assert "'line' (scrap) must be numeric" in message
    assert "not string" in message
    message = _refusal({**SCRAP, "time_column": "line"})
    assert "'line' (time_column) must be numeric" in message


def test_oee_needs_ratio_columns_and_a_kpi_column_no_nulls() -> None:
    columns = {"availability": "produced", "performance": "performance", "quality": "quality"}
    assert "within [0, 1]" in _refusal({**OEE, "columns": columns})
    lead = {**SCRAP, "kpi": "lead_time", "columns": {"lead_time": "lead_hours"}}
    assert "nullable" in _refusal(lead)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ({**SCRAP, "kpi": "profit"}, "kpi must be one of"),
        ({**SCRAP, "columns": {"scrap": "scrap"}}, "columns must map exactly scrap, produced"),
        ({**SCRAP, "evaluation": {"from": 50, "to": 150}}, "must not overlap"),
        ({**SCRAP, "baseline": {"from": 5, "to": 5}}, "baseline.from must be below"),
        ({**SCRAP, "baseline": {"from": "a", "to": 5}}, "baseline.from must be a finite"),
        ({k: v for k, v in SCRAP.items() if k != "time_column"}, "give exactly"),
    ],
)
def test_malformed_documents_say_what_to_fix(document: dict, problem: str) -> None:
    with pytest.raises(KpiError, match=problem):
        parse_kpi(document)


def test_the_document_round_trips() -> None:
    query = parse_kpi(SCRAP)
    assert isinstance(query, KpiQuery)
    assert parse_kpi(query.document()) == query
    assert query.columns_used() == {"scrap", "produced", "day"}


@pytest.mark.parametrize("document", [SCRAP, OEE], ids=["scrap_rate", "oee"])
def test_the_interval_covers_the_true_change_at_its_confidence(document: dict) -> None:
    """The interval over Laplace noise of the released scales holds the true change at least
    as often as its confidence says (it is conservative: the union bound and the corners).
    The noise here is numpy's, seeded: this checks the interval's arithmetic, not privacy."""
    query = parse_kpi(document)
    labels = [f"sum({c})" for _, c in query.columns] + (["count"] if document is OEE else [])
    truth = {  # baseline, evaluation: a 5% improvement
        BASELINE: [400.0, 4_000.0] if document is SCRAP else [400.0, 450.0, 475.0, 500.0],
        EVALUATION: [380.0, 4_000.0] if document is SCRAP else [420.0, 450.0, 475.0, 500.0],
    }
    scales = [3.0] * len(labels)
    exact = judge(query, SCHEMA, {p: [Statistic(a, v, 0.0) for a, v in
                                      zip(labels, vs, strict=True)] for p, vs in truth.items()},
                  0.05, 0.9)  # fmt: skip
    assert exact.change == pytest.approx(0.05)
    rng, draws, covered = np.random.default_rng(7), 1_000, 0
    for _ in range(draws):
        released = {
            p: [Statistic(a, v + rng.laplace(0, b), b) for a, v, b in
                zip(labels, vs, scales, strict=True)]
            for p, vs in truth.items()
        }  # fmt: skip
        low, high = judge(query, SCHEMA, released, 0.05, 0.9).interval
        covered += (low is None or low <= exact.change) and (high is None or exact.change <= high)
    assert covered / draws >= 0.9
