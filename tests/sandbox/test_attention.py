"""The attention views: denials per provider, budget burn, held outputs, failed logins; scoping.

The held output is a job row inserted directly (with its ``job.held`` event):
holding a real tier-5 output needs PySyft and a sandboxed run, which
tests/sandbox/test_reviewed_code.py covers; here only the view is under test.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from policies import audit
from policies.db import new_id
from sandbox.cli import app as cli_app
from sandbox.client import ApiError, VeilClient
from sandbox.runtime.veil import Veil
from sandbox.store.models import Job, JobStatus
from tests.sandbox.conftest import GRANTED, PURPOSE, World

pytestmark = pytest.mark.integration

COUNT = [{"kind": "count"}]
UNGRANTED = [{"kind": "mean", "column": "vibration_mm_s"}]
NOT_GRANTED = "column 'vibration_mm_s' is not in your grant"


def officer(world: World, scope: list[str] | None = None) -> VeilClient:
    created = world.operator.create_security_officer("Olivia", scope)
    return world.client(world.operator.issue_token(created["id"]))


def denied(client: VeilClient, dataset_id: str, purpose: str, eps: float, aggs: Any) -> None:
    with pytest.raises(ApiError) as refused:
        client.submit_job(dataset_id, purpose, eps, aggs)
    assert refused.value.status == 403


def hold_an_output(veil: Veil, world: World, enterprise_id: str) -> str:
    """A tier-5 job whose output the checks held, as the runner leaves it."""
    job_id = new_id("job")
    checks = {"status": "held", "reasons": ["cell shift=night: fewer than 10 rows"]}
    with veil.db.transaction() as session:
        session.add(
            Job(
                id=job_id,
                provider_id=world.provider_id,
                enterprise_id=enterprise_id,
                dataset_id=world.dataset_id,
                dataset_version=1,
                grant_id=world.grant_id,
                purpose=PURPOSE,
                tier=5,
                query={"code_request_id": "code_x"},
                epsilon=0,
                delta=0,
                status=JobStatus.HELD,
                reasons=[],
                output_check=checks,
                result={"output": 1, "checks": checks},
                created_at=veil.clock(),
            )
        )
        audit.record(
            session,
            "job.held",
            tenant_id=enterprise_id,
            resource=f"job:{job_id}",
            details={"checks": checks},
        )
    return job_id


@pytest.fixture
def busy(world: World, veil: Veil) -> dict[str, str]:
    """Denials on both enterprises, one released query, a held output, two bad tokens."""
    acme_id, globex_id = world.acme.me()["id"], world.globex.me()["id"]
    job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT)
    assert world.provider.wait_for_job(job["id"], timeout=60)["status"] == "released"
    denied(world.provider, world.dataset_id, PURPOSE, 0.1, UNGRANTED)
    denied(world.provider, world.dataset_id, PURPOSE, 0.1, UNGRANTED)
    denied(world.provider, world.dataset_id, PURPOSE, 5.0, COUNT)  # over the budget
    other_id = world.other_provider.me()["id"]
    globex_grant = world.globex.create_grant(
        other_id, [world.globex_dataset_id], GRANTED, [3], [PURPOSE],
        datetime.now(UTC) + timedelta(days=1), 2.0,
    )  # fmt: skip
    denied(world.other_provider, world.globex_dataset_id, "marketing", 0.1, COUNT)
    for bad in ("veil_wrong", "veil_guessed"):
        with pytest.raises(ApiError) as unauthenticated, world.client(bad) as client:
            client.list_datasets()
        assert unauthenticated.value.status == 401
    held = hold_an_output(veil, world, acme_id)
    return {
        "acme": acme_id,
        "globex": globex_id,
        "other": other_id,
        "globex_grant": globex_grant["id"],
        "held": held,
    }


def test_operator_sees_denials_burn_held_outputs_and_failed_logins(
    world: World, busy: dict[str, str]
) -> None:
    view = world.operator.audit_attention()
    assert view["scope"] is None and view["failed_logins_included"]
    denials = {d["provider_id"]: d for d in view["denied_by_provider"]}
    assert set(denials) == {world.provider_id, busy["other"]}
    mine = denials[world.provider_id]
    assert mine["count"] == 3 and mine["provider_name"] == "Predicta"
    assert mine["reasons"][0] == {"reason": NOT_GRANTED, "count": 2}
    assert any(r["reason"].startswith("budget short") for r in mine["reasons"])
    assert view["denied_by_provider"][0]["provider_id"] == world.provider_id  # most first
    assert denials[busy["other"]]["reasons"][0]["reason"].startswith("purpose 'marketing'")

    burn = view["budget_burn"]
    assert [b["grant_id"] for b in burn] == [world.grant_id, busy["globex_grant"]]  # most used
    expected = {
        "provider_id": world.provider_id,
        "provider_name": "Predicta",
        "enterprise_id": busy["acme"],
        "enterprise_name": "Acme Metal",
        "dataset_ids": [world.dataset_id],
        "epsilon_budget": 1.0,
        "epsilon_spent": 0.25,
        "fraction_used": 0.25,
        "epsilon_spent_in_period": 0.25,
        "jobs_in_period": 2,  # the released query and the held output; not the denials
        "active": True,
    }
    assert {k: burn[0][k] for k in expected} == expected
    assert burn[1]["fraction_used"] == 0.0

    [held] = view["held_outputs"]
    assert held["job_id"] == busy["held"] and held["enterprise_id"] == busy["acme"]
    assert held["reasons"] == ["a cell: fewer than 10 rows"]  # the key value is blanked

    logins = {f["client"]: f for f in view["failed_logins"]}
    assert logins["127.0.0.1"]["count"] >= 2
    assert "GET /v1/datasets" in logins["127.0.0.1"]["paths"]


def test_a_later_since_leaves_only_what_is_current(world: World, busy: dict[str, str]) -> None:
    view = world.operator.audit_attention(since=datetime.now(UTC) + timedelta(minutes=5))
    assert view["denied_by_provider"] == [] and view["failed_logins"] == []
    grant = next(b for b in view["budget_burn"] if b["grant_id"] == world.grant_id)
    assert grant["epsilon_spent"] == 0.25 and grant["epsilon_spent_in_period"] == 0
    assert grant["jobs_in_period"] == 0
    assert [h["job_id"] for h in view["held_outputs"]] == [busy["held"]]  # held until decided
    with pytest.raises(ApiError) as naive:
        world.operator.audit_attention(since=datetime(2026, 1, 1))
    assert naive.value.status == 422 and "time zone" in naive.value.detail


def test_scoped_officers_see_only_their_enterprises(world: World, busy: dict[str, str]) -> None:
    acme_view = officer(world, [busy["acme"]]).audit_attention()
    assert acme_view["scope"] == [busy["acme"]]
    assert [d["provider_id"] for d in acme_view["denied_by_provider"]] == [world.provider_id]
    assert [b["grant_id"] for b in acme_view["budget_burn"]] == [world.grant_id]
    assert [h["job_id"] for h in acme_view["held_outputs"]] == [busy["held"]]
    # Failed logins belong to no tenant: a scoped officer does not see them.
    assert acme_view["failed_logins"] == [] and not acme_view["failed_logins_included"]

    globex_view = officer(world, [busy["globex"]]).audit_attention()
    assert [d["provider_id"] for d in globex_view["denied_by_provider"]] == [busy["other"]]
    assert [b["grant_id"] for b in globex_view["budget_burn"]] == [busy["globex_grant"]]
    assert globex_view["held_outputs"] == []

    unscoped = officer(world).audit_attention()
    assert unscoped["failed_logins_included"] and unscoped["failed_logins"]
    for client in (world.acme, world.provider):
        with pytest.raises(ApiError) as forbidden:
            client.audit_attention()
        assert forbidden.value.status == 403


def test_cli_prints_the_views(world: World, busy: dict[str, str]) -> None:
    so = world.operator.create_security_officer("Olivia", [busy["acme"]])
    token = world.operator.issue_token(so["id"])
    result = CliRunner().invoke(
        cli_app, ["audit", "attention", "--token", token, "--url", world.url]
    )
    assert result.exit_code == 0, result.output
    for text in (
        "denied attempts per provider",
        "Predicta",
        "budget burn per grant",
        "outputs held by output checks",
        "an officer with a scope does not see them",
    ):
        assert text in result.output, text
    args = ["audit", "attention", "--since", "2020-01-01", "--json"]
    as_json = CliRunner().invoke(cli_app, [*args, "--token", token, "--url", world.url])
    assert as_json.exit_code == 0, as_json.output
    view = json.loads(as_json.output)
    assert view["since"].startswith("2020-01-01T00:00:00")
    assert [b["grant_id"] for b in view["budget_burn"]] == [world.grant_id]
    assert [h["job_id"] for h in view["held_outputs"]] == [busy["held"]]
