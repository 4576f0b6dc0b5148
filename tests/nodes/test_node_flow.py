"""Tiers through an enterprise node: the provider's API is the control plane's, as before;
the data, the keys, the decision that counts and the computation are the node's."""

from __future__ import annotations

import hashlib
import io
import math
import time
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from analytics.training import load_model, predict
from sandbox.client import ApiError, VeilClient
from sandbox.demo.data import DECLARATION
from sandbox.store.models import Job
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


TRAINING = {
    "family": "logistic_regression",
    "features": ["temperature_c", "vibration_mm_s"],
    "target": "failure_24h",
    "epochs": 3,
    "batch_size": 128,
    "learning_rate": 1.0,
    "max_grad_norm": 1.0,
}


@pytest.mark.slow  # DP-SGD on the node: about 50 s here (make test-slow)
def test_tier_4_model_is_trained_on_the_node_and_downloaded_from_the_control_plane(
    node_world: NodeWorld,
) -> None:
    node_world.enterprise.create_grant(
        node_world.provider_id, [node_world.dataset_id],
        ["temperature_c", "vibration_mm_s", "failure_24h"], [4], [PURPOSE],
        datetime.now(UTC) + timedelta(days=1), 2.0, delta=1e-4,
    )  # fmt: skip
    node_world.sync()
    job = node_world.provider.submit_training(
        node_world.dataset_id, PURPOSE, TRAINING, epsilon=1.0, delta=1e-5
    )
    epochs_seen: set[int] = set()
    deadline = time.monotonic() + 300
    while node_world.provider.get_job(job["id"])["status"] in ("queued", "running"):
        node_world.link.run_round()  # each round also reports a new epoch
        progress = node_world.provider.get_job(job["id"]).get("progress") or {}
        if progress.get("epoch"):
            assert "loss" not in progress  # the loss stays with the enterprise, on its node
            epochs_seen.add(progress["epoch"])
        assert time.monotonic() < deadline
        time.sleep(0.05)
    node_world.run_jobs()
    final = node_world.provider.get_job(job["id"])
    assert final["status"] == "released", final
    assert epochs_seen and max(epochs_seen) <= TRAINING["epochs"]  # progress reached the provider
    weights, card = node_world.provider.download_model(job["id"])
    result = node_world.provider.get_result(job["id"])
    assert hashlib.sha256(weights).hexdigest() == result["model_sha256"]
    model = load_model(weights, card)
    predictions = predict(model, card, pl.read_csv(io.BytesIO(node_world.csv)).head(20))
    assert len(predictions) == 20
