"""The first end-to-end path through the real API: grant → private query → result, audited."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from sandbox.client import ApiError
from sandbox.jobs.runner import claim_next_job, run_job
from sandbox.oversight.audit_log import verify_chain
from sandbox.runtime.veil import Veil
from tests.sandbox.conftest import PURPOSE, World

pytestmark = pytest.mark.integration

COUNT = [{"kind": "count"}]


def run(
    world: World,
    aggregates: list[dict[str, object]],
    group_by: str | None = None,
    epsilon: float = 0.25,
) -> dict[str, object]:
    job = world.provider.submit_job(world.dataset_id, PURPOSE, epsilon, aggregates, group_by)
    assert job["status"] == "queued"
    final = world.provider.wait_for_job(job["id"], timeout=60)
    assert final["status"] == "released", final
    return world.provider.get_result(job["id"])


def test_grouped_private_query_is_released_with_accuracy(world: World, veil: Veil) -> None:
    result = run(
        world,
        [{"kind": "count"}, {"kind": "mean", "column": "temperature_c"}],
        group_by="shift",
        epsilon=0.5,
    )
    assert [r["group"] for r in result["rows"]] == [
        {"shift": s} for s in ("early", "late", "night")
    ]
    total = 0.0
    for row in result["rows"]:
        count, mean = row["values"]
        assert count["aggregate"] == "count" and mean["aggregate"] == "mean(temperature_c)"
        for v in (count, mean):
            lo, hi = v["ci95"]
            assert lo <= v["value"] <= hi and v["noise_scale"] > 0
        assert 20 <= mean["value"] <= 120 or mean["ci95"][0] < 20 or mean["ci95"][1] > 120
        total += count["value"]
    assert math.isclose(total, 2000, rel_tol=0.1)  # noisy, but near the 2000 rows
    assert result["epsilon"] <= 0.5 + 1e-9
    assert result["remaining_budget"]["epsilon_remaining"] == pytest.approx(0.5)
    assert result["result_sha256"]
    assert verify_chain(veil).ok


def test_confidential_columns_are_usable_under_dp(world: World) -> None:
    result = run(world, [{"kind": "sum", "column": "defects"}])
    assert result["rows"][0]["group"] is None


def test_budget_is_spent_exactly_and_then_refused_at_no_cost(world: World) -> None:
    for _ in range(4):
        run(world, COUNT, epsilon=0.25)
    grant = world.provider.get_grant(world.grant_id)
    assert grant["budget"]["epsilon_remaining"] == 0
    with pytest.raises(ApiError) as denied:
        world.provider.submit_job(world.dataset_id, PURPOSE, 0.01, COUNT)
    assert denied.value.status == 403
    assert any(r.startswith("budget short") for r in denied.value.reasons)
    assert world.provider.get_job(denied.value.job_id or "")["status"] == "denied"
    assert world.provider.get_grant(world.grant_id)["budget"]["epsilon_spent"] == 1.0


@pytest.mark.parametrize(
    ("aggregates", "purpose", "reason"),
    [
        ([{"kind": "mean", "column": "recipe_p1"}], PURPOSE, "column 'recipe_p1' is secret"),
        (
            [{"kind": "mean", "column": "vibration_mm_s"}],
            PURPOSE,
            "column 'vibration_mm_s' is not in your grant",
        ),
        (COUNT, "marketing", "purpose 'marketing' is not granted"),
    ],
)
def test_denials_state_their_reasons_and_cost_nothing(
    world: World, veil: Veil, aggregates: list[dict[str, object]], purpose: str, reason: str
) -> None:
    with pytest.raises(ApiError) as denied:
        world.provider.submit_job(world.dataset_id, purpose, 0.5, aggregates)
    assert denied.value.status == 403
    assert any(r.startswith(reason) for r in denied.value.reasons), denied.value.reasons
    assert world.provider.get_grant(world.grant_id)["budget"]["epsilon_spent"] == 0
    events = world.operator.audit_events(limit=5)
    assert events[0]["action"] == "job.denied" and events[0]["outcome"] == "denied"


def test_other_tenants_datasets_are_refused_like_missing_ones(world: World) -> None:
    with pytest.raises(ApiError) as other:
        world.provider.submit_job(world.globex_dataset_id, PURPOSE, 0.1, COUNT)
    with pytest.raises(ApiError) as missing:
        world.provider.submit_job("ds_doesnotexist", PURPOSE, 0.1, COUNT)
    assert other.value.status == missing.value.status == 403
    assert other.value.reasons == missing.value.reasons == ["no grant gives you this dataset"]
    for client, path_id in [
        (world.acme, world.globex_dataset_id),
        (world.acme, "ds_nope"),
        (world.provider, world.globex_dataset_id),
    ]:
        with pytest.raises(ApiError) as nf:
            client.get_dataset(path_id)
        assert nf.value.status == 404 and nf.value.detail == f"dataset '{path_id}' not found"
    with pytest.raises(ApiError) as grant_nf:
        world.globex.get_grant(world.grant_id)
    assert grant_nf.value.status == 404
    with pytest.raises(ApiError) as grant_nf2:
        world.other_provider.get_grant(world.grant_id)
    assert grant_nf2.value.status == 404


def test_expired_not_yet_valid_and_tier_not_granted(world: World) -> None:
    ds = [world.dataset_id]
    now = datetime.now(UTC)
    world.acme.revoke_grant(world.grant_id)
    future = world.acme.create_grant(
        world.provider_id,
        ds,
        ["shift"],
        [3],
        [PURPOSE],
        now + timedelta(days=3),
        1.0,
        valid_from=now + timedelta(days=1),
    )
    with pytest.raises(ApiError) as early:
        world.provider.submit_job(world.dataset_id, PURPOSE, 0.1, COUNT)
    assert any("valid only from" in r for r in early.value.reasons)
    world.acme.revoke_grant(future["id"])
    world.acme.create_grant(
        world.provider_id, ds, ["shift"], [0, 1], [PURPOSE], now + timedelta(days=3), 1.0
    )
    with pytest.raises(ApiError) as tier:
        world.provider.submit_job(world.dataset_id, PURPOSE, 0.1, COUNT)
    assert "tier 3 (private query) is not in your grant" in tier.value.reasons


def test_roles_are_checked(world: World) -> None:
    with pytest.raises(ApiError) as e1:
        world.provider.create_enterprise("Sneaky", "sneaky")
    with pytest.raises(ApiError) as e2:
        world.acme.submit_job(world.dataset_id, PURPOSE, 0.1, COUNT)
    with pytest.raises(ApiError) as e3:
        world.provider.create_dataset(
            "mine", [{"name": "x", "type": "integer", "class": "internal", "lower": 0, "upper": 1}]
        )
    assert e1.value.status == e2.value.status == e3.value.status == 403


def test_unauthenticated_requests_are_refused_and_audited(world: World) -> None:
    for token in (None, "veil_wrong", "not-even-a-veil-token"):
        with pytest.raises(ApiError) as e, world.client(token or "") as client:
            client.list_datasets()
        assert e.value.status == 401
    failures = [e for e in world.operator.audit_events(limit=10) if e["action"] == "auth.failed"]
    assert len(failures) >= 3 and all(e["outcome"] == "denied" for e in failures)


def test_revocation_reaches_a_claimed_job(tmp_path, key_server) -> None:  # type: ignore[no-untyped-def]
    from sandbox.server.thread import ApiThread
    from sandbox.service import open_veil
    from tests.sandbox.conftest import make_world, settings_for

    with (
        open_veil(settings_for(tmp_path, key_server), worker=False) as veil,
        ApiThread(veil.settings, veil) as url,
    ):
        world = make_world(veil, url)
        job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT)
        assert world.provider.get_job(job["id"])["status"] == "queued"
        claimed = claim_next_job(veil)  # the worker has picked it up...
        assert claimed == job["id"]
        world.acme.revoke_grant(world.grant_id)  # ...when the enterprise revokes
        run_job(veil, claimed)
        final = world.provider.get_job(job["id"])
        assert final["status"] == "failed" and "revoked" in (final["error"] or "")
        with pytest.raises(ApiError) as no_result:
            world.provider.get_result(job["id"])
        assert no_result.value.status == 409
        assert verify_chain(veil).ok


def test_parallel_submissions_never_overspend(veil: Veil, api: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from tests.sandbox.conftest import make_world

    world = make_world(veil, api, epsilon=1.0)
    token = world.provider._http.headers["authorization"].split()[1]

    def submit(_: int) -> str:
        with world.client(token) as client:
            try:
                return str(client.submit_job(world.dataset_id, PURPOSE, 0.1, COUNT)["status"])
            except ApiError as exc:
                return "denied" if exc.status == 403 else f"error {exc.status}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(submit, range(24)))
    assert outcomes.count("queued") == 10, outcomes
    assert outcomes.count("denied") == 14, outcomes
    grant = world.provider.get_grant(world.grant_id)
    assert grant["budget"]["epsilon_spent"] == 1.0
    assert verify_chain(veil).ok


def test_jobs_fail_closed_when_the_key_server_is_lost(tmp_path, own_key_server) -> None:  # type: ignore[no-untyped-def]
    from sandbox.server.thread import ApiThread
    from sandbox.service import open_veil
    from tests.sandbox.conftest import make_world, settings_for

    with (
        open_veil(settings_for(tmp_path, own_key_server), worker=False) as veil,
        ApiThread(veil.settings, veil) as url,
    ):
        world = make_world(veil, url, tiers=[2, 3])
        job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT)
        table = world.provider.submit_table(world.dataset_id, PURPOSE, COUNT, ["shift"])
        own_key_server.stop()
        with pytest.raises(ApiError) as upload:
            world.acme.upload(world.dataset_id, world.csv)
        assert upload.value.status == 503 and "key server" in upload.value.detail
        run_job(veil, claim_next_job(veil) or "")
        failed = world.provider.get_job(job["id"])
        assert failed["status"] == "failed" and "key server is unavailable" in failed["error"]
        run_job(veil, claim_next_job(veil) or "")  # tier 2: no cell-key secret to be had
        failed = world.provider.get_job(table["id"])
        assert failed["status"] == "failed" and "key server is unavailable" in failed["error"]
        with pytest.raises(ApiError) as no_result:
            world.provider.get_result(job["id"])
        assert no_result.value.status == 409  # nothing was released
        own_key_server.start()  # back on the same port: service resumes with no manual step
        again = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT)
        run_job(veil, claim_next_job(veil) or "")
        assert world.provider.get_job(again["id"])["status"] == "released"
        events = [e for e in world.operator.audit_events(limit=20) if e["action"] == "job.failed"]
        assert events and "key server" in events[0]["details"]["reason"]
