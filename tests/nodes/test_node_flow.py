"""Tiers through an enterprise node: the provider's API is the control plane's, as before;
the data, the keys, the decision that counts and the computation are the node's."""

from __future__ import annotations

import io
import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from sandbox.client import ApiError, VeilClient
from sandbox.demo_data import DECLARATION
from sandbox.models import Job
from tests.nodes.conftest import PURPOSE, NodeWorld

pytestmark = pytest.mark.integration

COUNT = [{"kind": "count"}]


def test_catalog_and_mock_come_from_the_published_declaration(node_world: NodeWorld) -> None:
    (entry,) = node_world.provider.catalog()
    assert entry["dataset_id"] == node_world.dataset_id
    assert entry["row_count_rounded"] == 2000  # 2,037 rows on the node: never the exact count
    assert "2037" not in str(entry)
    mock = pl.read_csv(io.BytesIO(node_world.provider.mock(node_world.dataset_id, rows=50)))
    assert mock.columns == [c["name"] for c in DECLARATION["columns"]] and mock.height == 50


def test_dp_query_is_answered_by_the_node_and_signed(node_world: NodeWorld) -> None:
    job = node_world.submit([{"kind": "count"}, {"kind": "mean", "column": "temperature_c"}],
                            epsilon=0.5, group_by="shift")  # fmt: skip
    assert job["status"] == "released", job
    result = node_world.provider.get_result(job["id"])
    total = sum(row["values"][0]["value"] for row in result["rows"])
    assert math.isclose(total, 2037, rel_tol=0.1)
    for row in result["rows"]:
        assert row["values"][0]["noise_scale"] > 0  # OpenDP's noise, on the node
    with node_world.cp.db.read() as session:
        stored = session.get(Job, job["id"])
        assert stored is not None and stored.node_release is not None
        assert stored.node_release["document"]["node_id"] == node_world.config.node_id
    # The node debited its own ledger: its grant shows the spend.
    [grant] = node_world.enterprise.list_grants()
    assert grant["budget"]["epsilon_spent"] == pytest.approx(0.5)


def test_tier_2_table_is_computed_on_the_node(node_world: NodeWorld) -> None:
    job = node_world.provider.submit_query(
        node_world.dataset_id, PURPOSE,
        {"group_by": ["shift"], "aggregates": [{"kind": "count"}]}, tier=2,
    )  # fmt: skip
    node_world.run_jobs()
    final = node_world.provider.get_job(job["id"])
    assert final["status"] == "released", final


def test_the_enterprise_cannot_upload_or_grant_on_the_control_plane(
    node_world: NodeWorld,
) -> None:
    token = node_world.operator.issue_token(node_world.config.enterprise_id)
    on_cp = VeilClient(node_world.cp_url, token)
    attempts = [
        lambda: on_cp.create_dataset("elsewhere", DECLARATION["columns"]),
        lambda: on_cp.upload(node_world.dataset_id, node_world.csv),
        lambda: on_cp.create_grant(node_world.provider_id, [node_world.dataset_id], ["shift"],
                                   [3], [PURPOSE], datetime.now(UTC) + timedelta(days=1), 9.0),
        lambda: on_cp.revoke_grant(node_world.grant_id, "from the control plane"),
    ]  # fmt: skip
    for attempt in attempts:
        with pytest.raises(ApiError) as refused:
            attempt()
        assert refused.value.status == 409 and refused.value.code == "data_on_node"
