"""Tiers 0-3 through the real API: catalog, mock data, SDC tables, previews, grant lifecycle."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from sandbox.client import ApiError
from sandbox.demo.data import DECLARATION, production_log
from sandbox.isolation.child import Task
from sandbox.runtime.veil import Veil
from tests.sandbox.conftest import GRANTED, PURPOSE, World, make_world, settings_for

pytestmark = pytest.mark.integration
COUNT = [{"kind": "count"}]
SOON = datetime.now(UTC) + timedelta(days=2)


@pytest.fixture
def all_tiers(veil: Veil, api: str) -> World:
    return make_world(veil, api, rows=2_037, tiers=[0, 1, 2, 3])


def test_catalog_shows_schema_and_a_rounded_count_only(all_tiers: World) -> None:
    (entry,) = all_tiers.provider.catalog()
    assert entry["dataset_id"] == all_tiers.dataset_id
    assert entry["row_count_rounded"] == 2000  # 2,037 rows: never the exact count
    assert "2037" not in str(entry)
    classes = {c["name"]: c["class"] for c in entry["columns"]}
    assert classes["recipe_p1"] == "secret" and classes["shift"] == "public"
    assert entry["tiers"] == [0, 1, 2, 3] and entry["purposes"] == [PURPOSE]
    assert all_tiers.other_provider.catalog() == []


def test_mock_data_follows_the_declaration_and_ignores_the_data(all_tiers: World) -> None:
    first = all_tiers.provider.mock(all_tiers.dataset_id, rows=500, seed=7)
    frame = pl.read_csv(io.BytesIO(first))
    assert frame.columns == [c["name"] for c in DECLARATION["columns"]]
    assert frame.height == 500
    assert frame["temperature_c"].min() >= 20 and frame["temperature_c"].max() <= 120
    assert set(frame["shift"]) <= {"early", "late", "night"}
    # Replace the stored data entirely: the mock must not change.
    all_tiers.acme.upload(all_tiers.dataset_id, production_log(50, seed=999))
    assert all_tiers.provider.mock(all_tiers.dataset_id, rows=500, seed=7) == first
    assert all_tiers.provider.mock(all_tiers.dataset_id, rows=500, seed=8) != first
    parquet = all_tiers.provider.mock(all_tiers.dataset_id, rows=20, fmt="parquet")
    assert pl.read_parquet(io.BytesIO(parquet)).schema["defects"] == pl.Int64
    assert all_tiers.provider.get_grant(all_tiers.grant_id)["budget"]["epsilon_spent"] == 0


def test_mock_needs_tier_1(world: World) -> None:
    # Granted the dataset, not tier 1: told which tier is missing (it knows the dataset).
    with pytest.raises(ApiError) as e:
        world.provider.mock(world.dataset_id)
    assert e.value.status == 403
    assert e.value.detail == "tier 1 (mock data) is not in your grant"
    # No grant on the dataset at all: the same 404 as for a dataset that does not exist.
    for dataset_id in (world.globex_dataset_id, "ds_missing"):
        with pytest.raises(ApiError) as e:
            world.provider.mock(dataset_id)
        assert e.value.status == 404
        assert e.value.detail == f"dataset '{dataset_id}' not found"


def run_table(
    world: World, aggregates: list[dict[str, object]], group_by: list[str]
) -> dict[str, object]:
    job = world.provider.submit_table(world.dataset_id, PURPOSE, aggregates, group_by)
    final = world.provider.wait_for_job(job["id"], timeout=60)
    assert final["status"] == "released", final
    return world.provider.get_result(job["id"])


def test_tier2_tables_are_perturbed_and_disclosure_checked(all_tiers: World) -> None:
    truth = pl.read_csv(io.BytesIO(all_tiers.csv))
    result = run_table(
        all_tiers, [{"kind": "count"}, {"kind": "mean", "column": "temperature_c"}], ["shift"]
    )
    assert result["tier"] == 2 and result["epsilon"] == 0
    assert result["perturbation"]["method"] == "cell-key"
    for cell in result["cells"]:
        shift = cell["key"]["shift"]
        rows = truth.filter(pl.col("shift") == shift)
        assert cell["status"] == "ok" and cell["perturbed"]
        count, mean = cell["values"]["count"], cell["values"]["mean(temperature_c)"]
        assert abs(count - rows.height) <= 2  # the cell-key perturbation's bound
        true_mean, largest = rows["temperature_c"].mean(), rows["temperature_c"].max()
        # The perturbed sum over the perturbed count: (2 x largest + 2 x mean) / count.
        assert abs(mean - true_mean) <= (2 * largest + 2 * true_mean) / count
    small = run_table(all_tiers, COUNT, ["machine", "shift"])
    assert {c["status"] for c in small["cells"]} <= {"ok", "suppressed"}
    for cell in small["cells"]:
        if cell["status"] == "suppressed":
            assert cell["values"]["count"] is None and cell["reasons"]
            assert not cell["perturbed"]
    # The same table again: the very same values (nothing to average).
    assert run_table(all_tiers, COUNT, ["machine", "shift"])["cells"] == small["cells"]


def test_tier2_preview_states_the_rules_and_the_accuracy(all_tiers: World) -> None:
    preview = all_tiers.provider.preview_table(
        all_tiers.dataset_id,
        PURPOSE,
        [{"kind": "count"}, {"kind": "sum", "column": "temperature_c"}],
        ["shift"],
    )
    assert preview["allowed"] and preview["epsilon"] == 0 and preview["delta"] == 0
    table = preview["table"]
    assert table["rules"]["min_count"] == 10 and table["rules"]["nk_k"] == 0.9
    assert table["perturbation"]["method"] == "cell-key"
    count, total = table["aggregates"]
    assert count["aggregate"] == "count" and count["max_error"] == 2
    assert count["mean_abs_error"] == pytest.approx(1.2)
    # temperature_c is declared 20..120: a sum moves by less than 2 x 120.
    assert total["aggregate"] == "sum(temperature_c)" and total["max_error"] == 240
    assert "without review" in table["review"]
    denied = all_tiers.other_provider.preview_table(
        all_tiers.dataset_id, PURPOSE, [{"kind": "count"}]
    )
    assert not denied["allowed"] and denied["table"] is None


def test_a_tasks_cell_key_secret_stays_out_of_its_repr() -> None:
    """Tasks may be logged; the dataset's secret must not be, in any form."""
    secret = bytes(range(32))
    shown = repr(Task("table", None, None, cell_secret=secret))
    assert "cell_secret" not in shown and repr(secret) not in shown and secret.hex() not in shown


def test_tier2_refuses_confidential_columns(all_tiers: World) -> None:
    with pytest.raises(ApiError) as e:
        all_tiers.provider.submit_table(
            all_tiers.dataset_id, PURPOSE, [{"kind": "sum", "column": "defects"}], ["shift"]
        )
    assert e.value.status == 403
    assert any("confidential" in r for r in e.value.reasons)


def test_tier2_a_new_version_keeps_unchanged_cells(all_tiers: World) -> None:
    before = run_table(all_tiers, COUNT, ["shift"])
    # A new version that only adds 3 night-shift rows: subtracting the two night cells
    # gives those rows only with the noise of both; the other cells keep their values.
    extra = production_log(400, seed=5).decode().splitlines()
    night = [line for line in extra[1:] if ",night," in line][:3]
    data = all_tiers.csv.decode().rstrip("\n") + "\n" + "\n".join(night) + "\n"
    all_tiers.acme.upload(all_tiers.dataset_id, data.encode())
    after = run_table(all_tiers, COUNT, ["shift"])
    cells = {c["key"]["shift"]: c for c in before["cells"]}
    again = {c["key"]["shift"]: c for c in after["cells"]}
    assert again["early"] == cells["early"] and again["late"] == cells["late"]
    assert again["night"]["status"] == "ok"
    added = again["night"]["values"]["count"] - cells["night"]["values"]["count"]
    assert abs(added - 3) <= 4
    # One cell-key secret for the dataset, made by its first tier-2 job, audited once.
    events = all_tiers.operator.audit_events(action="dataset.cellkey_created")
    assert [e["resource"] for e in events] == [f"dataset:{all_tiers.dataset_id}"]


def test_preview_costs_nothing_and_matches_the_release(all_tiers: World) -> None:
    query = {"aggregates": [{"kind": "count"}], "group_by": ["shift"]}
    preview = all_tiers.provider.preview(all_tiers.dataset_id, PURPOSE, query, epsilon=0.5)
    assert preview["allowed"] and preview["epsilon"] == pytest.approx(0.5)
    (item,) = preview["aggregates"]
    assert all_tiers.provider.get_grant(all_tiers.grant_id)["budget"]["epsilon_spent"] == 0
    job = all_tiers.provider.submit_query(all_tiers.dataset_id, PURPOSE, query, epsilon=0.5)
    all_tiers.provider.wait_for_job(job["id"])
    result = all_tiers.provider.get_result(job["id"])
    assert result["rows"][0]["values"][0]["noise_scale"] == pytest.approx(item["noise_scale"])
    denied = all_tiers.provider.preview(
        all_tiers.dataset_id,
        PURPOSE,
        {"aggregates": [{"kind": "mean", "column": "recipe_p1"}]},
        epsilon=0.5,
    )
    assert not denied["allowed"] and "secret" in denied["reasons"][0]


def test_invalid_query_documents_get_precise_errors(all_tiers: World) -> None:
    schema = all_tiers.provider.query_schema()
    assert schema["type"] == "object" and "aggregates" in schema["properties"]
    bad = {
        "aggregates": [{"kind": "count"}, {"kind": "quantile", "column": "cycle_time_s", "q": 1.5}]
    }
    with pytest.raises(ApiError) as e:
        all_tiers.provider.submit_query(all_tiers.dataset_id, PURPOSE, bad, epsilon=0.1)
    assert e.value.status == 422 and "aggregates[1].q" in e.value.detail
    with pytest.raises(ApiError) as e2:
        all_tiers.provider.submit_query(
            all_tiers.dataset_id, PURPOSE, {"aggregates": []}, epsilon=0.1
        )
    assert e2.value.status == 422
    assert all_tiers.provider.get_grant(all_tiers.grant_id)["budget"]["epsilon_spent"] == 0


def test_grant_lifecycle_narrow_extend_and_audit(all_tiers: World) -> None:
    gid = all_tiers.grant_id
    narrowed = all_tiers.acme.change_grant(
        gid, "pilot scope reduced", columns=["shift"], tiers=[0, 3], epsilon=0.5
    )
    assert narrowed["columns"] == ["shift"] and narrowed["tiers"] == [0, 3]
    assert narrowed["budget"]["epsilon"] == 0.5
    with pytest.raises(ApiError) as denied:
        all_tiers.provider.submit_job(
            all_tiers.dataset_id, PURPOSE, 0.1, [{"kind": "mean", "column": "temperature_c"}]
        )
    assert "column 'temperature_c' is not in your grant" in denied.value.reasons
    with pytest.raises(ApiError) as widen:
        all_tiers.acme.change_grant(gid, "oops", columns=["shift", "temperature_c"])
    assert widen.value.status == 422 and "only be narrowed" in widen.value.detail
    later = datetime.now(UTC) + timedelta(days=90)
    extended = all_tiers.acme.change_grant(gid, "pilot extended", valid_until=later)
    assert extended["valid_until"].startswith(later.date().isoformat())
    with pytest.raises(ApiError) as who:
        all_tiers.provider.change_grant(gid, "sneaky", epsilon=0.4)
    assert who.value.status == 403
    events = [
        e for e in all_tiers.operator.audit_events(limit=20) if e["action"] == "grant.changed"
    ]
    assert [e["details"]["reason"] for e in events] == ["pilot extended", "pilot scope reduced"]
    assert events[1]["actor_role"] == "enterprise"
    assert "columns" in events[1]["details"]["changes"]


def test_dataset_cap_holds_across_providers(veil: Veil, api: str) -> None:
    world = make_world(veil, api)
    capped = world.acme.create_dataset("capped", DECLARATION["columns"], None)
    world.acme._call(
        "POST",
        f"/v1/datasets/{capped['id']}/versions",
        content=world.csv,
        headers={"content-type": "text/csv"},
    )
    other_id = world.operator.list_providers()[1]["id"]
    for provider_id in (world.provider_id, other_id):
        world.acme.create_grant(provider_id, [capped["id"]], GRANTED, [3], [PURPOSE], SOON, 8.0)
    world.provider.submit_job(capped["id"], PURPOSE, 6.0, COUNT)
    with pytest.raises(ApiError) as e:
        world.other_provider.submit_job(capped["id"], PURPOSE, 6.0, COUNT)
    assert any("enterprise-wide privacy cap" in r for r in e.value.reasons)
    assert world.acme.get_dataset(capped["id"])["cap"]["epsilon_spent"] == 6.0
    world.other_provider.submit_job(capped["id"], PURPOSE, 4.0, COUNT)  # exactly what is left


def test_revocation_and_expiry_cancel_queued_jobs(tmp_path: Path, key_server) -> None:  # type: ignore[no-untyped-def]
    from sandbox.jobs.submit import cancel_expired
    from sandbox.server.thread import ApiThread
    from sandbox.service import open_veil

    with (
        open_veil(settings_for(tmp_path, key_server), worker=False) as veil,
        ApiThread(veil.settings, veil) as url,
    ):
        world = make_world(veil, url)
        queued = world.provider.submit_job(world.dataset_id, PURPOSE, 0.1, COUNT)
        world.acme.revoke_grant(world.grant_id, reason="contract ended")
        job = world.provider.get_job(queued["id"])
        assert job["status"] == "failed" and "revoked" in job["error"]
        short = world.acme.create_grant(
            world.provider_id,
            [world.dataset_id],
            GRANTED,
            [3],
            [PURPOSE],
            datetime.now(UTC) + timedelta(seconds=2),
            1.0,
        )
        pending = world.provider.submit_job(world.dataset_id, PURPOSE, 0.1, COUNT)
        time.sleep(2.2)
        assert cancel_expired(veil) == 1
        expired = world.provider.get_job(pending["id"])
        assert expired["status"] == "failed" and "expired" in expired["error"]
        assert short["id"]
