"""The registry of job kinds: one kind per tier, and a job's query parsed once per step."""

from __future__ import annotations

from collections import Counter

import pytest

from analytics.query_document import parse_query
from analytics.sdc import TableQuery
from analytics.training_document import parse_training
from policies.errors import InvalidRequest
from sandbox.client import ApiError
from sandbox.jobs import kinds as job_kinds
from sandbox.jobs.kinds import JOB_TIERS, PARSED, kind_for
from sandbox.jobs.reviewed_code import CodeJob
from sandbox.runtime.veil import Veil
from tests.sandbox.conftest import PURPOSE, World, make_world

DOCUMENT = {"aggregates": [{"kind": "count"}, {"kind": "mean", "column": "temperature_c"}],
            "group_by": ["shift"]}  # fmt: skip
TRAINING = {"family": "logistic_regression", "features": ["temperature_c"],
            "target": "failure_24h", "epochs": 2, "batch_size": 64}  # fmt: skip


def test_every_job_tier_has_one_kind_and_other_tiers_are_refused_as_before() -> None:
    assert JOB_TIERS == (2, 3, 4, 5)
    assert [kind_for(tier).tier for tier in JOB_TIERS] == [2, 3, 4, 5]
    kinds = [kind_for(tier).task_kind for tier in JOB_TIERS]
    assert kinds == ["table", "query", "training", "syft"]
    for tier in (0, 1, 6, -1):
        with pytest.raises(InvalidRequest) as e:
            kind_for(tier)
        assert str(e.value.message) == (
            f"tier {tier} has no jobs here: tier 0 is GET /v1/catalog, tier 1 is "
            "GET /v1/datasets/{id}/mock, tiers 2 to 5 are jobs"
        )


def test_each_kind_parses_as_the_analytics_documents_say() -> None:
    query = parse_query(DOCUMENT)
    assert kind_for(3).parse(DOCUMENT, 0.5, 0.0) == query
    assert kind_for(2).parse(DOCUMENT, 0.0, 0.0) == TableQuery(query.aggregates, query.group_by)
    spec = parse_training(TRAINING | {"epsilon": 1.0, "delta": 1e-5})
    assert kind_for(4).parse(TRAINING, 1.0, 1e-5) == spec
    assert kind_for(5).parse({"code_request_id": "cr_1"}, 0.1, 0.0) == CodeJob("cr_1")
    assert kind_for(2).columns(kind_for(2).parse(DOCUMENT, 0, 0)) == {"temperature_c", "shift"}
    assert kind_for(4).columns(spec) == {"temperature_c", "failure_24h"}
    with pytest.raises(InvalidRequest, match=r"training\.epsilon differs from the job's epsilon"):
        kind_for(4).parse(TRAINING | {"epsilon": 2.0}, 1.0, 1e-5)


@pytest.mark.parametrize(
    ("tier", "epsilon", "delta", "message"),
    [
        (2, 1, 0, "a tier-2 job costs no privacy budget: leave epsilon and delta at 0"),
        (3, 0, 0, "a tier-3 job needs epsilon > 0 (at least 0.000001)"),
        (4, 0, 10, "a tier-4 job needs epsilon > 0 (at least 0.000001)"),
        (4, 10, 0, "a tier-4 training job needs delta > 0 (e.g. 1e-6), below 1/rows"),
        (5, 10, 1, "a tier-5 job's DP helpers are pure epsilon-DP: leave delta at 0"),
    ],
)
def test_each_kind_refuses_a_budget_it_cannot_ask_for(
    tier: int, epsilon: int, delta: int, message: str
) -> None:
    with pytest.raises(InvalidRequest) as e:
        kind_for(tier).cost(epsilon, delta)
    assert str(e.value.message) == message


def test_costs_a_kind_accepts_pass() -> None:
    kind_for(2).cost(0, 0)
    kind_for(3).cost(1, 0)
    kind_for(4).cost(1, 1)
    kind_for(5).cost(0, 0)
    kind_for(5).cost(1, 0)


def _parses_since(before: Counter[int]) -> dict[int, int]:
    return {tier: PARSED[tier] - before[tier] for tier in JOB_TIERS if PARSED[tier] != before[tier]}


@pytest.mark.integration
def test_a_job_is_parsed_once_at_preview_once_at_submit_and_once_at_run(
    veil: Veil, api: str
) -> None:
    world: World = make_world(veil, api, tiers=[2, 3])
    provider = world.provider
    before = PARSED.copy()
    preview = provider.preview(world.dataset_id, PURPOSE, DOCUMENT, epsilon=0.5)
    assert preview["allowed"] and preview["aggregates"]
    assert _parses_since(before) == {3: 1}

    before = PARSED.copy()
    job = provider.submit_query(world.dataset_id, PURPOSE, DOCUMENT, epsilon=0.5)
    assert provider.wait_for_job(job["id"], timeout=60)["status"] == "released"
    # Submit parses once; the run parses the stored document once (its re-check, task and
    # release share that parse: three parses before the registry).
    assert _parses_since(before) == {3: 2}
    assert provider.get_result(job["id"])["tier"] == 3

    before = PARSED.copy()
    table = provider.submit_table(world.dataset_id, PURPOSE, DOCUMENT["aggregates"], ["shift"])
    assert provider.wait_for_job(table["id"], timeout=60)["status"] == "released"
    assert _parses_since(before) == {2: 2}
    assert {c["status"] for c in provider.get_result(table["id"])["cells"]} == {"ok"}


@pytest.mark.integration
def test_a_refused_document_is_parsed_once_and_says_what_it_said_before(world: World) -> None:
    before = PARSED.copy()
    with pytest.raises(ApiError) as e:
        world.provider.submit_query(
            world.dataset_id, PURPOSE, {"aggregates": [{"kind": "nope"}]}, epsilon=0.5
        )
    assert e.value.status == 422 and e.value.detail.startswith("query: ")
    assert _parses_since(before) == {3: 1}
    assert job_kinds.PARSED is PARSED  # one counter for the process


def test_only_tier_5_has_no_preview() -> None:
    for tier in (2, 3, 4):
        kind_for(tier).require_preview()
    with pytest.raises(InvalidRequest) as e:
        kind_for(5).require_preview()
    assert str(e.value.message) == (
        "previews are for tiers 2 to 4 (tier 5 shows its output on the mock when submitted)"
    )
    assert [kind_for(tier).releases_model for tier in JOB_TIERS] == [False, False, True, False]
