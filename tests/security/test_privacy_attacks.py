"""Privacy attacks through the real API: averaging repeated DP answers, differencing tables.

* **Averaging.** Repeating one DP query and averaging the answers shrinks the noise, so
  Veil must stop the repetition at the grant's ε budget (basic sequential composition):
  the refusal comes at the first query that would overspend, not earlier or later, and it
  is audited.
* **Differencing** (tier 2, exact tables).  Subtracting two released cells whose rows
  differ by a few units reveals those units.  ``analytics/sdc.py`` guards against two
  patterns: nested cells a few units apart (rule 4a) and a known total minus a table
  with one small suppressed cell (secondary suppression, rule 5).  What it does not
  cover (three or more releases combined, splits by two columns at once) is listed in
  that module's docstring and ``docs/private-queries.md``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sandbox.client import ApiError, VeilClient
from tests.sandbox.conftest import PURPOSE, World

pytestmark = pytest.mark.integration

COUNT = [{"kind": "count"}]
FEW = "differencing: differs from an earlier released cell by fewer than 10 rows"


# ---------------------------------------------------------------- averaging (tier 3)


def _released_epsilon(world: World, job_id: str) -> float:
    final = world.provider.wait_for_job(job_id, timeout=60)
    assert final["status"] == "released", final["status"]
    return float(world.provider.get_result(job_id)["epsilon"])


def test_averaging_repeated_queries_stops_exactly_at_the_budget(world: World) -> None:
    """The grant has ε = 1.0; each repeat asks ε = 0.3: three fit (0.9), the fourth not."""
    per_query, budget = 0.3, 1.0
    released: list[float] = []
    with pytest.raises(ApiError) as refused:
        for _ in range(10):  # the loop must end at the budget, long before 10
            job = world.provider.submit_job(world.dataset_id, PURPOSE, per_query, COUNT)
            released.append(_released_epsilon(world, job["id"]))
    assert len(released) == 3  # 3 x 0.3 <= 1.0 < 4 x 0.3
    assert sum(released) <= budget + 1e-9
    assert sum(released) == pytest.approx(0.9)
    assert refused.value.status == 403
    assert refused.value.reasons == [
        "budget short: this job needs epsilon 0.3 and delta 0; "
        "the grant has epsilon 0.1 and delta 0 left"
    ]
    denied_id = refused.value.job_id
    assert denied_id and world.provider.get_job(denied_id)["status"] == "denied"
    grant = world.provider.get_grant(world.grant_id)["budget"]
    assert grant["epsilon_spent"] == pytest.approx(0.9)  # the refusal cost nothing

    # The refusal is audited with its reason, and each release's debit was audited too.
    (event,) = world.operator.audit_events(action="job.denied", resource=f"job:{denied_id}")
    assert event["outcome"] == "denied"
    assert event["details"]["reasons"] == refused.value.reasons
    assert event["details"]["epsilon"] == per_query
    debits = world.operator.audit_events(
        action="budget.debited", resource=f"grant:{world.grant_id}"
    )
    assert len(debits) == 3

    # Exactly at the boundary: what is left is still spendable, and then nothing more.
    last = world.provider.submit_job(world.dataset_id, PURPOSE, 0.1, COUNT)
    released.append(_released_epsilon(world, last["id"]))
    assert sum(released) <= budget + 1e-9
    with pytest.raises(ApiError) as empty:
        world.provider.submit_job(world.dataset_id, PURPOSE, 0.000001, COUNT)
    assert empty.value.status == 403 and empty.value.reasons[0].startswith("budget short")
    assert world.provider.get_grant(world.grant_id)["budget"]["epsilon_remaining"] == 0


# ---------------------------------------------------------------- differencing (tier 2)

COLUMNS: list[dict[str, Any]] = [
    {"name": "line", "type": "string", "class": "public", "categories": ["a", "b", "c"]},
    {"name": "shift", "type": "string", "class": "public", "categories": ["early", "late"]},
    {"name": "temperature_c", "type": "float", "class": "internal", "lower": 0, "upper": 150},
]


def _csv(cells: dict[tuple[str, str], int]) -> bytes:
    lines = ["line,shift,temperature_c"]
    for (line, shift), rows in cells.items():
        lines += [f"{line},{shift},{60 + i % 7}.5" for i in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def _table_dataset(world: World, name: str, cells: dict[tuple[str, str], int]) -> str:
    """A dataset of ``cells`` rows, granted to both providers for tier-2 tables."""
    ds = world.acme.create_dataset(name, COLUMNS)
    world.acme.upload(ds["id"], _csv(cells))
    for provider_id in (world.provider_id, world.other_provider.me()["id"]):
        world.acme.create_grant(
            provider_id,
            [ds["id"]],
            [c["name"] for c in COLUMNS],
            [2],
            [PURPOSE],
            datetime.now(UTC) + timedelta(days=1),
            0.0,
        )
    return str(ds["id"])


def _table(
    world: World, dataset_id: str, group_by: list[str], provider: VeilClient | None = None
) -> dict[tuple[str, ...], Any]:
    """Run a tier-2 count table (as ``provider``, by default world's); its cells by key."""
    provider = provider or world.provider
    job = provider.submit_table(dataset_id, PURPOSE, COUNT, group_by or None)
    final = provider.wait_for_job(job["id"], timeout=60)
    assert final["status"] == "released", final["status"]
    result = provider.get_result(job["id"])
    return {tuple(c["key"][g] for g in group_by): c for c in result["cells"]}


def test_differencing_nested_cells_is_suppressed(world: World) -> None:
    """Line a has 40 early rows and 3 late ones: ``count(a) - count(a, early)`` would
    reveal the 3 late rows that the threshold hides, so the nested cell is suppressed."""
    cells = {("a", "early"): 40, ("a", "late"): 3, ("b", "early"): 30, ("b", "late"): 30}
    cells |= {("c", "early"): 25, ("c", "late"): 12}
    dataset_id = _table_dataset(world, "nested", cells)
    by_line = _table(world, dataset_id, ["line"])
    assert by_line[("a",)]["status"] == "ok" and by_line[("a",)]["values"]["count"] == 43

    attempt = _table(world, dataset_id, ["line", "shift"])
    small = attempt[("a", "late")]
    assert small["status"] == "suppressed" and small["reasons"] == ["fewer than 10 rows"]
    nested = attempt[("a", "early")]
    assert nested["status"] == "suppressed" and nested["values"]["count"] is None
    assert nested["reasons"] == [FEW]
    # Cells that differ from their line by 10 rows or more are still released, exactly.
    for key in [("b", "early"), ("b", "late"), ("c", "early"), ("c", "late")]:
        assert attempt[key]["status"] == "ok"
        assert attempt[key]["values"]["count"] == cells[key]


def test_differencing_by_two_colluding_providers_is_suppressed_too(world: World) -> None:
    """One provider asks for the fine table, another for the coarse one (they would pool
    their results): the guard compares with every release on the dataset, so the coarse
    cell is suppressed for the second provider."""
    cells = {("a", "early"): 40, ("a", "late"): 3, ("b", "early"): 30, ("b", "late"): 30}
    dataset_id = _table_dataset(world, "nested-reverse", cells)
    fine = _table(world, dataset_id, ["line", "shift"])
    assert fine[("a", "early")]["status"] == "ok"
    assert fine[("a", "late")]["status"] == "suppressed"
    coarse = _table(world, dataset_id, ["line"], world.other_provider)
    assert coarse[("a",)]["status"] == "suppressed" and coarse[("a",)]["reasons"] == [FEW]
    assert coarse[("b",)]["status"] == "ok" and coarse[("b",)]["values"]["count"] == 60


def test_differencing_a_known_total_triggers_secondary_suppression(world: World) -> None:
    """The total is released first; line c (4 rows) is suppressed by the threshold, and
    ``total - a - b`` would give it back, so one more cell of the table is suppressed."""
    cells = {("a", "early"): 50, ("b", "early"): 40, ("c", "early"): 4}
    dataset_id = _table_dataset(world, "total", cells)
    total = _table(world, dataset_id, [])[()]
    assert total["status"] == "ok" and total["values"]["count"] == 94

    by_line = _table(world, dataset_id, ["line"])
    assert by_line[("c",)]["status"] == "suppressed"
    assert by_line[("c",)]["reasons"] == ["fewer than 10 rows"]
    assert by_line[("b",)]["status"] == "suppressed"
    assert by_line[("b",)]["reasons"] == ["secondary suppression"]
    assert by_line[("a",)]["status"] == "ok"
    # What the attacker can still derive is the sum of two cells, 10 rows or more.
    hidden = total["values"]["count"] - by_line[("a",)]["values"]["count"]
    assert hidden >= 10
