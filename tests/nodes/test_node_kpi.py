"""A KPI contract on a dataset held on an enterprise's node: the evaluation is a tier-3 job
the node decides again and runs in its own sandbox, debiting its own ledger; the control
plane computes the verdict from the node's signed release."""

from __future__ import annotations

import pytest

from sandbox.client import VeilClient
from tests.nodes.conftest import PURPOSE, NodeWorld

pytestmark = pytest.mark.integration

KPI = {
    "kpi": "lead_time",
    "columns": {"lead_time": "cycle_time_s"},
    "time_column": "temperature_c",
    "baseline": {"from": 20, "to": 60},
    "evaluation": {"from": 60, "to": 120},
}


def test_a_node_held_dataset_is_evaluated_on_its_node(node_world: NodeWorld) -> None:
    world = node_world
    body = {"dataset_id": world.dataset_id, "purpose": PURPOSE, "kpi": KPI, "target": 0.05,
            "confidence": 0.9, "epsilon": 0.5}  # fmt: skip
    made = world.provider.propose_kpi_contract(body)
    enterprise_id = world.enterprise.me()["id"]
    on_control_plane = VeilClient(world.cp_url, world.operator.issue_token(enterprise_id))
    on_control_plane.accept_kpi_contract(made["id"], made["terms_sha256"])
    pending = world.provider.evaluate_kpi_contract(made["id"])
    world.run_jobs()
    done = world.provider.get_kpi_verdict(made["id"], pending["id"])
    assert done["status"] == "released", done
    assert done["document"]["verdict"] in ("met", "not_met", "inconclusive")
    assert done["document"]["confidence"] == 0.9
    job = world.provider.get_job(done["job_id"])
    assert job["status"] == "released"
    # The node debited its own ledger for the evaluation.
    [grant] = world.enterprise.list_grants()
    assert grant["budget"]["epsilon_spent"] == pytest.approx(0.5)
