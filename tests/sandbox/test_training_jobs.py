"""Tier 4 through the real API: preview, DP training, progress, cancel, download and load."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from analytics.training import load_model, predict
from sandbox.client import ApiError
from sandbox.demo.data import production_log
from sandbox.runtime.veil import Veil
from tests.sandbox.conftest import GRANTED, PURPOSE, World, make_world

pytestmark = pytest.mark.integration

TRAINING = {
    "family": "logistic_regression",
    "features": ["temperature_c", "vibration_mm_s"],
    "target": "failure_24h",
    "epochs": 5,
    "batch_size": 128,
    "learning_rate": 1.0,
    "max_grad_norm": 1.0,
}
DELTA = 1e-5


@pytest.fixture
def trainer(veil: Veil, api: str) -> World:
    world = make_world(veil, api, rows=5_000, tiers=[0, 1, 3])
    grant = world.acme.create_grant(
        world.provider_id,
        [world.dataset_id],
        [*GRANTED, "vibration_mm_s", "failure_24h"],
        [4],
        [PURPOSE],
        datetime.now(UTC) + timedelta(days=1),
        3.0,
        delta=1e-4,
    )
    world.grant_id = grant["id"]
    return world


def test_training_releases_a_useful_model_with_exact_accounting(
    trainer: World, veil: Veil, tmp_path: Path
) -> None:
    preview = trainer.provider.preview_training(
        trainer.dataset_id, PURPOSE, TRAINING, epsilon=1.0, delta=DELTA
    )
    assert preview["allowed"] and preview["training"]["noise_multiplier"] > 0
    assert trainer.provider.get_grant(trainer.grant_id)["budget"]["epsilon_spent"] == 0

    job = trainer.provider.submit_training(
        trainer.dataset_id, PURPOSE, TRAINING, epsilon=1.0, delta=DELTA
    )
    # Debited before training starts, whatever the accountant later reports.
    assert trainer.provider.get_grant(trainer.grant_id)["budget"]["epsilon_spent"] == 1.0
    final = trainer.provider.wait_for_job(job["id"], timeout=300)
    assert final["status"] == "released", final
    assert final["progress"]["epoch"] == 5 and "loss" not in final["progress"]
    assert trainer.acme.get_job(job["id"])["progress"]["loss"] > 0  # the owner sees the loss

    result = trainer.provider.get_result(job["id"])
    card = result["card"]
    assert result["epsilon"] <= 1.0 and result["delta"] <= DELTA
    assert card["noise_multiplier"] == pytest.approx(preview["training"]["noise_multiplier"])
    weights, downloaded_card = trainer.provider.download_model(job["id"])
    assert downloaded_card == card
    assert not weights.startswith(b"\x80")  # not a pickle
    model = load_model(weights, card)
    fresh = pl.read_csv(io.BytesIO(production_log(2_000, seed=77)))
    predicted = predict(model, card, fresh)
    truth = fresh["failure_24h"].to_list()
    accuracy = sum(str(p).lower() == str(t).lower() for p, t in zip(predicted, truth, strict=True))
    assert accuracy / len(truth) > 0.72  # base rate is about 0.6 for "false"

    stored = [p for p in veil.settings.objects_dir.rglob(f"{job['id']}.veil")]
    assert stored and stored[0].read_bytes().startswith(b"VEILSTRM")
    assert weights not in stored[0].read_bytes()


def test_training_needs_tier_4(world: World) -> None:
    with pytest.raises(ApiError) as e:
        world.provider.submit_training(
            world.dataset_id, PURPOSE, TRAINING, epsilon=0.5, delta=DELTA
        )
    assert e.value.status == 403
    assert "tier 4 (private training) is not in your grant" in e.value.reasons


def test_secret_targets_are_refused(trainer: World) -> None:
    doc = TRAINING | {
        "features": ["temperature_c"],
        "target": "recipe_p1",
        "family": "mlp_regressor",
        "hidden_sizes": [8],
    }
    with pytest.raises(ApiError) as e:
        trainer.provider.submit_training(trainer.dataset_id, PURPOSE, doc, epsilon=0.5, delta=DELTA)
    assert e.value.status == 403 and any("secret" in r for r in e.value.reasons)


def test_a_running_training_can_be_cancelled(trainer: World) -> None:
    long = TRAINING | {"epochs": 60, "batch_size": 16}
    job = trainer.provider.submit_training(
        trainer.dataset_id, PURPOSE, long, epsilon=1.0, delta=DELTA
    )
    deadline = time.monotonic() + 60
    while trainer.provider.get_job(job["id"])["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    trainer.provider.cancel_job(job["id"])
    final = trainer.provider.wait_for_job(job["id"], timeout=60)
    assert final["status"] == "failed" and "cancelled" in final["error"]
    assert trainer.provider.get_grant(trainer.grant_id)["budget"]["epsilon_spent"] == 1.0
    with pytest.raises(ApiError) as e:
        trainer.provider.cancel_job(job["id"])
    assert e.value.status == 409
