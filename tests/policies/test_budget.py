"""The Budget value, the tiers and the dataset cap's rule (pure: no database, no server)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from policies.budget import (
    DELTA_UNIT,
    EPSILON_UNIT,
    ZERO,
    Budget,
    ledger_epsilon,
    summary,
)
from policies.caps import cap_reason
from policies.errors import InvalidRequest
from policies.tiers import JOB_TIERS, Tier


def test_from_floats_holds_exact_units_and_gives_the_floats_back() -> None:
    b = Budget.from_floats(0.25, 1e-6)
    assert (b.epsilon_units, b.delta_units) == (250_000, 1_000_000)
    assert (b.epsilon, b.delta) == (0.25, 1e-6)
    assert b.describe() == {"epsilon": 0.25, "delta": 1e-6}
    assert (b.epsilon_text, b.delta_text) == ("0.25", "1e-06")


def test_ten_debits_of_a_tenth_exhaust_one_exactly() -> None:
    tenth, spent = Budget.from_floats(0.1), ZERO
    for _ in range(10):
        spent += tenth
    assert spent == Budget.from_floats(1.0)
    assert spent.fits_within(Budget.from_floats(1.0))
    assert not (spent + Budget(1, 0)).fits_within(Budget.from_floats(1.0))
    assert sum(0.1 for _ in range(10)) != 1.0  # what floats would have done


@pytest.mark.parametrize(
    ("epsilon", "units"),
    [
        (0.0000004, 0),  # below half a unit: nothing
        (0.0000006, 1),  # above half a unit: one
        (0.000001, 1),
        (0.0000005, 0),  # a tie (half a unit) rounds to even: down to 0
        (0.0000015, 2),  # up to 2
        (0.0000025, 2),  # down to 2
        (100.0, 100 * EPSILON_UNIT),
    ],
)
def test_rounding_at_the_unit_boundary(epsilon: float, units: int) -> None:
    assert Budget.from_floats(epsilon).epsilon_units == units


def test_delta_rounds_to_its_unit() -> None:
    assert Budget.from_floats(0, 4e-13).delta_units == 0
    assert Budget.from_floats(0, 6e-13).delta_units == 1
    assert Budget(0, 1).delta == 1 / DELTA_UNIT


@pytest.mark.parametrize(
    ("epsilon", "delta", "words"),
    [
        (-0.1, 0.0, "epsilon must be a number between 0 and 100"),
        (math.nan, 0.0, "epsilon must be a number between 0 and 100"),
        (math.inf, 0.0, "epsilon must be a number between 0 and 100"),
        (100.0001, 0.0, "epsilon must be a number between 0 and 100"),
        (1.0, -1e-9, "delta must be a number in [0, 1)"),
        (1.0, math.nan, "delta must be a number in [0, 1)"),
        (1.0, -math.inf, "delta must be a number in [0, 1)"),
        (1.0, 1.0, "delta must be a number in [0, 1)"),
    ],
)
def test_from_floats_refuses_what_is_not_a_budget(epsilon: float, delta: float, words: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        Budget.from_floats(epsilon, delta)
    assert str(caught.value) == words and caught.value.code == "invalid_request"


@pytest.mark.parametrize("units", [(-1, 0), (0, -1), (True, 0), (1.0, 0), (0, "1")])
def test_units_are_non_negative_ints(units: tuple[object, object]) -> None:
    with pytest.raises(ValueError, match="non-negative int"):
        Budget(*units)  # type: ignore[arg-type]


def test_arithmetic_and_order() -> None:
    a, b = Budget(3, 5), Budget(1, 2)
    assert a + b == Budget(4, 7) and a - b == Budget(2, 3)
    assert a - a == ZERO and not ZERO and a
    assert b <= a and b.fits_within(a) and not a <= b
    # A partial order: fits in ε but not in δ.
    assert not Budget(1, 9).fits_within(a) and not a.fits_within(Budget(9, 1))
    with pytest.raises(ValueError, match="more budget than there is"):
        _ = b - a
    with pytest.raises(ValueError, match="more budget than there is"):
        _ = Budget(1, 9) - a  # enough ε, not enough δ


def test_a_budget_is_frozen_and_hashable() -> None:
    b = Budget(1, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.epsilon_units = 5  # type: ignore[misc]
    assert b.epsilon_units == 1
    assert len({b, Budget(1, 2), Budget(2, 1)}) == 2


def test_summary_is_what_the_api_shows() -> None:
    shown = summary(Budget.from_floats(1.0, 1e-5), Budget.from_floats(0.3, 2.5e-6))
    assert list(shown) == [
        "epsilon",
        "delta",
        "epsilon_spent",
        "delta_spent",
        "epsilon_remaining",
        "delta_remaining",
    ]
    assert shown["epsilon_remaining"] == 0.7 and shown["delta_remaining"] == 7.5e-6


def test_ledger_entries_may_be_negative() -> None:
    assert ledger_epsilon(-250_000) == -0.25


def test_cap_rule_refuses_with_what_is_left() -> None:
    cap, spent = Budget.from_floats(1.0, 1e-6), Budget.from_floats(0.75)
    assert cap_reason(cap, spent, Budget.from_floats(0.25, 1e-6)) is None
    refused = cap_reason(cap, spent, Budget.from_floats(0.25, 2e-6))
    assert refused == (
        "the dataset's enterprise-wide privacy cap (all providers together) has epsilon "
        "0.25 and delta 1e-06 left"
    )
    assert cap_reason(cap, spent, Budget.from_floats(0.250001)) is not None


def test_tiers_keep_their_numbers() -> None:
    assert [int(t) for t in Tier] == [0, 1, 2, 3, 4, 5]
    assert JOB_TIERS == (2, 3, 4, 5)
    assert f"{Tier.CODE}" == "5" and Tier.MOCK.label == "mock data"
