"""Collaborations on the control plane's API: who may propose, see and run them, and the
precise refusals of a bad proposal (runs over nodes: ``tests/nodes/test_collaborations.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from sandbox.client import ApiError
from tests.sandbox.conftest import World

COLUMNS = [{"name": "energy_kwh", "type": "float"}, {"name": "scrap_rate", "type": "float"}]


def benchmark(**change: Any) -> dict[str, Any]:
    return {
        "statistics": [
            {"kind": "count"},
            {"kind": "sum", "column": "energy_kwh", "lower": 0, "upper": 1e6},
            {"kind": "mean", "column": "scrap_rate", "lower": 0, "upper": 1},
        ],
        "by": "industry",
        "categories": ["汽车零部件", "电子"],
        "epsilon": 1.0,
        "delta": 1e-6,
        "min_participants": 5,
    } | change


def test_a_provider_proposes_and_sees_only_its_own(world: World) -> None:
    made = world.provider.propose_collaboration("能耗基准", "benchmark", COLUMNS, benchmark())
    assert made["participants"] == 0 and len(made["spec_sha256"]) == 64
    assert made["min_participants"] == 5
    assert [c["id"] for c in world.provider.list_collaborations()] == [made["id"]]
    assert world.other_provider.list_collaborations() == []
    with pytest.raises(ApiError) as hidden:
        world.other_provider.get_collaboration(made["id"])
    assert hidden.value.status == 404
    operator_view = world.operator.list_collaborations()
    assert [c["id"] for c in operator_view] == [made["id"]]


@pytest.mark.parametrize("who", ["acme", "operator"])
def test_only_a_provider_proposes(world: World, who: str) -> None:
    with pytest.raises(ApiError) as refused:
        getattr(world, who).propose_collaboration("t", "p", COLUMNS, benchmark())
    assert refused.value.status == 403


@pytest.mark.parametrize(
    ("columns", "doc", "words"),
    [
        (COLUMNS, benchmark(statistics=[{"kind": "sum", "column": "other", "lower": 0,
                                         "upper": 1}]), "not in the common schema"),
        ([{"name": "a b", "type": "float"}], benchmark(), "not a column name"),
        ([{"name": "x", "type": "text"}], benchmark(), "int or float"),
        (COLUMNS + COLUMNS[:1], benchmark(), "declared twice"),
        ([], benchmark(), "1 to"),
        (COLUMNS, benchmark(epsilon=-1), "epsilon"),
        (COLUMNS, benchmark(min_participants=1), "min_participants"),
        (COLUMNS, benchmark(statistics="count"), "statistics"),
    ],
)  # fmt: skip
def test_a_bad_proposal_is_refused_with_what_was_wrong(
    world: World, columns: list[dict[str, str]], doc: dict[str, Any], words: str
) -> None:
    with pytest.raises(ApiError) as refused:
        world.provider.propose_collaboration("t", "p", columns, doc)
    assert refused.value.status == 422
    assert words in refused.value.message, refused.value.message


def test_a_run_needs_the_minimum_and_an_open_collaboration(world: World) -> None:
    made = world.provider.propose_collaboration("t", "p", COLUMNS, benchmark())
    with pytest.raises(ApiError) as few:
        world.provider.start_collaboration_run(made["id"])
    assert few.value.status == 409 and few.value.code == "too_few_participants"
    world.provider.close_collaboration(made["id"])
    with pytest.raises(ApiError) as closed:
        world.provider.start_collaboration_run(made["id"])
    assert closed.value.status == 409 and closed.value.code == "collaboration_closed"
    with pytest.raises(ApiError) as other:
        world.other_provider.start_collaboration_run(made["id"])
    assert other.value.status == 404
