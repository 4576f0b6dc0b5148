# ruff: noqa: RUF001 - the Chinese messages use full-width punctuation
"""The decision engine's rules, one by one (pure: no database, no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from i18n.catalog import translate
from policies.decisions import NO_GRANT, JobRequest, decide
from policies.grants import EPSILON_UNIT, Grant

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
CLASSES = {
    "shift": "public",
    "temp": "internal",
    "yield": "confidential",
    "recipe": "secret",
    "pressure": "internal",
}


def grant(**changes: object) -> Grant:
    values: dict[str, object] = dict(
        id="gr_1",
        enterprise_id="ent_1",
        provider_id="prv_1",
        dataset_ids=["ds_1"],
        columns=["shift", "temp", "yield"],
        tiers=[2, 3],
        purposes=["quality"],
        valid_from=NOW - timedelta(days=1),
        valid_until=NOW + timedelta(days=1),
        epsilon_budget=EPSILON_UNIT,
        delta_budget=0,
        epsilon_spent=0,
        delta_spent=0,
        revoked_at=None,
    )
    values.update(changes)
    return Grant(**values)


def request(**changes: object) -> JobRequest:
    values: dict[str, object] = dict(
        provider_id="prv_1",
        dataset_id="ds_1",
        purpose="quality",
        tier=3,
        columns=frozenset({"temp", "shift"}),
        epsilon=EPSILON_UNIT // 4,
        delta=0,
    )
    values.update(changes)
    return JobRequest(**values)  # type: ignore[arg-type]


def test_allowed_with_the_permitting_grant() -> None:
    g = grant()
    decision = decide(request(), CLASSES, [g], NOW)
    assert decision.allowed and decision.grant is g and decision.reasons == ()


@pytest.mark.parametrize(
    ("req", "g", "reason"),
    [
        (request(), grant(provider_id="prv_2"), NO_GRANT),
        (request(dataset_id="ds_2"), grant(), NO_GRANT),
        (request(purpose="marketing"), grant(), "purpose 'marketing' is not granted"),
        (request(tier=4), grant(), "tier 4 (private training) is not in your grant"),
        (request(columns=frozenset({"recipe"})), grant(), "column 'recipe' is secret"),
        (request(tier=2, columns=frozenset({"yield"})), grant(), "column 'yield' is confidential"),
        (
            request(columns=frozenset({"pressure"})),
            grant(),
            "column 'pressure' is not in your grant",
        ),
        (
            request(columns=frozenset({"tmp"})),
            grant(),
            "unknown column 'tmp' (did you mean 'temp'?)",
        ),
        (request(), grant(revoked_at=NOW), "your grant was revoked"),
        (request(), grant(valid_until=NOW), "your grant expired"),
        (request(), grant(valid_from=NOW + timedelta(hours=1)), "your grant is valid only from"),
        (request(epsilon=EPSILON_UNIT + 1), grant(), "budget short"),
        (request(), grant(epsilon_spent=EPSILON_UNIT), "budget short"),
        (request(delta=1), grant(), "budget short"),
    ],
)
def test_denied_with_the_reason(req: JobRequest, g: Grant, reason: str) -> None:
    decision = decide(req, CLASSES, [g], NOW)
    assert not decision.allowed
    assert any(r.startswith(reason) for r in decision.reasons), decision.reasons


def test_confidential_columns_are_fine_under_dp() -> None:
    assert decide(request(columns=frozenset({"yield"})), CLASSES, [grant()], NOW).allowed


def test_reviewed_code_may_read_confidential_columns_only_with_a_dp_budget() -> None:
    code = grant(tiers=[5])
    with_dp = request(tier=5, columns=frozenset({"yield", "shift"}))
    assert decide(with_dp, CLASSES, [code], NOW).allowed
    without = decide(request(tier=5, columns=frozenset({"yield"}), epsilon=0), CLASSES, [code], NOW)
    assert not without.allowed
    assert without.reasons == (
        "column 'yield' is confidential: reviewed code may use it only with DP output "
        "(give the job epsilon > 0 and compute with veil_dp)",
    )
    assert decide(request(tier=5, epsilon=0), CLASSES, [code], NOW).allowed  # no confidential
    secret = decide(request(tier=5, columns=frozenset({"recipe"})), CLASSES, [code], NOW)
    assert not secret.allowed and "secret" in secret.reasons[0]


def test_a_second_grant_can_allow_what_the_first_does_not() -> None:
    narrow = grant(id="gr_narrow", purposes=["other"])
    wide = grant(id="gr_wide")
    decision = decide(request(), CLASSES, [narrow, wide], NOW)
    assert decision.allowed and decision.grant is wide


def test_reasons_come_from_a_live_grant_rather_than_a_revoked_one() -> None:
    revoked = grant(id="gr_old", revoked_at=NOW)
    future = grant(id="gr_new", valid_from=NOW + timedelta(days=1))
    decision = decide(request(), CLASSES, [revoked, future], NOW)
    assert decision.grant is future
    assert decision.reasons[0].startswith("your grant is valid only from")


def test_an_unknown_column_is_never_suggested_a_secret_or_ungranted_name() -> None:
    for column in ("recipes", "pressur"):  # close to secret "recipe", ungranted "pressure"
        decision = decide(request(columns=frozenset({column})), CLASSES, [grant()], NOW)
        assert decision.reasons == (f"unknown column '{column}'",)


def test_reasons_are_templates_that_translate() -> None:
    decision = decide(request(tier=4, columns=frozenset({"pressure"})), CLASSES, [grant()], NOW)
    assert [translate(r, "zh-CN") for r in decision.reasons] == [
        "第 4 级（隐私训练）不在你的授权范围内",
        "列“pressure”不在你的授权范围内",
    ]
