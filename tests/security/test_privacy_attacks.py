"""Privacy attacks through the real API: averaging repeated DP answers.

* **Averaging.** Repeating one DP query and averaging the answers shrinks the noise, so
  Veil must stop the repetition at the grant's ε budget (basic sequential composition):
  the refusal comes at the first query that would overspend, not earlier or later, and it
  is audited.

Differencing tier-2 tables (nested cells, colluding providers, known totals, versions)
is in ``test_tier2_differencing.py``.
"""

from __future__ import annotations

import pytest

from sandbox.client import ApiError
from tests.sandbox.conftest import PURPOSE, World

pytestmark = pytest.mark.integration

COUNT = [{"kind": "count"}]


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
