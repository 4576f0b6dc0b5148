"""Suspending a provider: tokens refused, queued jobs cancelled at once, audited; reinstating."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keys import LocalKeyServer
from policies.principals import Principal, Status
from sandbox.cli import app as cli_app
from sandbox.client import ApiError, VeilClient
from sandbox.jobs.runner import claim_next_job
from sandbox.oversight.audit_log import verify_chain
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from sandbox.store.models import Job
from tests.sandbox.conftest import PURPOSE, World, make_world, settings_for

pytestmark = pytest.mark.integration

COUNT = [{"kind": "count"}]


@pytest.fixture
def idle(tmp_path: Path, key_server: LocalKeyServer) -> Iterator[tuple[Veil, World]]:
    """A world whose jobs stay queued: no worker runs them unless the test claims them."""
    with (
        open_veil(settings_for(tmp_path, key_server), worker=False) as veil,
        ApiThread(veil.settings, veil) as url,
    ):
        yield veil, make_world(veil, url)


def officer(world: World, scope: list[str] | None = None) -> VeilClient:
    created = world.operator.create_security_officer("Olivia", scope)
    return world.client(world.operator.issue_token(created["id"]))


def events(world: World, action: str) -> list[dict[str, object]]:
    return [e for e in world.operator.audit_events(limit=200) if e["action"] == action]


def test_suspension_cancels_queued_jobs_refuses_tokens_and_is_audited(
    idle: tuple[Veil, World],
) -> None:
    veil, world = idle
    queued = [world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT) for _ in range(2)]
    ids = [job["id"] for job in queued]
    so = officer(world)

    suspended = so.suspend_provider(world.provider_id, "  exfiltration suspected  ")
    assert suspended["status"] == "suspended" and suspended["reason"] == "exfiltration suspected"
    assert suspended["cancelled_job_ids"] == ids and suspended["stopping_job_ids"] == []
    for job_id in ids:  # at once, before any worker looked: failed, saying why
        job = world.acme.get_job(job_id)
        assert job["status"] == "failed"
        assert job["error"] == "cancelled: the provider was suspended; the job's budget stays spent"
    assert claim_next_job(veil) is None
    # Debited at submission, never refunded (as when a provider cancels its own job).
    assert world.acme.get_grant(world.grant_id)["budget"]["epsilon_spent"] == 0.5

    with pytest.raises(ApiError) as refused:
        world.provider.list_datasets()
    assert refused.value.status == 401 and refused.value.detail == "this account is suspended"
    with pytest.raises(ApiError) as again:
        so.suspend_provider(world.provider_id, "twice")
    assert again.value.status == 409 and "suspended already" in again.value.detail

    [event] = events(world, "provider.suspended")
    assert event["actor_role"] == "security_officer" and event["tenant_id"] == world.acme.me()["id"]
    assert event["resource"] == f"principal:{world.provider_id}"
    assert event["details"] == {
        "reason": "exfiltration suspected",
        "cancelled_job_ids": ids,
        "stopping_job_ids": [],
    }
    cancelled = events(world, "job.cancelled")
    assert sorted(str(e["resource"]) for e in cancelled) == sorted(f"job:{i}" for i in ids)
    assert all(e["actor_role"] == "security_officer" for e in cancelled)
    assert events(world, "auth.failed")  # the refused token was audited too

    reinstated = so.reinstate_provider(world.provider_id, "cleared by the review")
    assert reinstated["status"] == "active" and reinstated["cancelled_job_ids"] == []
    assert world.provider.list_datasets()  # the same token works again
    assert all(world.provider.get_job(i)["status"] == "failed" for i in ids)  # stay cancelled
    with pytest.raises(ApiError) as active:
        so.reinstate_provider(world.provider_id, "twice")
    assert active.value.status == 409
    assert events(world, "provider.reinstated")[0]["details"] == {"reason": "cleared by the review"}
    assert verify_chain(veil).ok


def test_a_queued_job_of_a_suspended_provider_is_never_run(idle: tuple[Veil, World]) -> None:
    """The race: a job committed just after the suspension still reaches the queue."""
    veil, world = idle
    job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT)
    with veil.db.transaction() as session:  # suspended without the suspension's cancelling
        provider = session.get(Principal, world.provider_id)
        assert provider is not None
        provider.status = Status.SUSPENDED
    assert claim_next_job(veil) is None
    failed = world.acme.get_job(job["id"])
    assert failed["status"] == "failed" and "provider was suspended" in failed["error"]
    [event] = [e for e in events(world, "job.cancelled") if e["resource"] == f"job:{job['id']}"]
    assert event["outcome"] == "denied" and event["actor_id"] is None
    assert "provider was suspended" in str(event["details"])


def test_running_jobs_are_asked_to_stop(idle: tuple[Veil, World]) -> None:
    veil, world = idle
    job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT)
    assert claim_next_job(veil) == job["id"]  # the worker has it
    result = world.operator.suspend_provider(world.provider_id, "contract breach")
    assert result["stopping_job_ids"] == [job["id"]] and result["cancelled_job_ids"] == []
    with veil.db.transaction() as session:
        row = session.get(Job, job["id"])
        assert row is not None and row.cancel_requested and row.status == "running"
    [event] = events(world, "job.cancel_requested")
    assert event["details"] == {"reason": "the provider was suspended"}


def test_who_may_suspend_and_what_a_scoped_officer_can_reach(world: World) -> None:
    acme_id, globex_id = world.acme.me()["id"], world.globex.me()["id"]
    for client in (world.acme, world.provider, world.other_provider):
        with pytest.raises(ApiError) as forbidden:
            client.suspend_provider(world.provider_id, "no")
        assert forbidden.value.status == 403
    globex_officer = officer(world, [globex_id])
    answers = {}
    for target in (world.provider_id, "prv_doesnotexist", acme_id):
        with pytest.raises(ApiError) as nf:
            globex_officer.suspend_provider(target, "outside my tenants")
        answers[target] = (nf.value.status, nf.value.detail)
    # Outside its scope, missing, or not a provider: the same answer, never a confirmation.
    assert answers == {t: (404, f"provider '{t}' not found") for t in answers}
    with pytest.raises(ApiError) as blank:
        globex_officer.suspend_provider(world.provider_id, "   ")
    assert blank.value.status == 422 and "reason" in blank.value.detail

    acme_officer = officer(world, [acme_id])
    assert acme_officer.suspend_provider(world.provider_id, "in my scope")["status"] == "suspended"
    # Even a revoked grant links the provider to the enterprise: still in scope.
    world.acme.revoke_grant(world.grant_id, reason="ended")
    assert acme_officer.reinstate_provider(world.provider_id, "ok")["status"] == "active"
    assert world.provider.me()["status"] == "active"


def test_cli_suspends_and_reinstates(world: World) -> None:
    token = str(world.operator._http.headers["authorization"]).split()[1]
    common = ["--token", token, "--url", world.url]
    runner = CliRunner()
    suspend = runner.invoke(
        cli_app, ["providers", "suspend", world.provider_id, "--reason", "audit finding", *common]
    )
    assert suspend.exit_code == 0, suspend.output
    assert "suspended" in suspend.output and "audit finding" in suspend.output
    with pytest.raises(ApiError):
        world.provider.me()
    as_json = runner.invoke(
        cli_app,
        ["providers", "reinstate", world.provider_id, "--reason", "resolved", "--json", *common],
    )
    assert as_json.exit_code == 0, as_json.output
    assert '"status": "active"' in as_json.output
    assert world.provider.me()["status"] == "active"
    missing_reason = runner.invoke(cli_app, ["providers", "suspend", world.provider_id, *common])
    assert missing_reason.exit_code != 0  # refused (by the CLI or by the API's schema)
    assert world.provider.me()["status"] == "active"
