"""The core flow with the database on PostgreSQL: upload, grant, a DP query released, audited."""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import select

from keys import LocalKeyServer
from policies.grants import BudgetDebit, Grant, refund
from sandbox.client import ApiError
from sandbox.jobs.outcomes import fail_running
from sandbox.jobs.runner import claim_job
from sandbox.oversight.audit_log import verify_chain
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from sandbox.store.models import Dataset
from tests.sandbox.conftest import PURPOSE, make_world, settings_for

pytestmark = pytest.mark.integration

COUNT = [{"kind": "count"}]


@pytest.fixture
def veil(tmp_path: Path, key_server: LocalKeyServer, postgres_url: str) -> Iterator[Veil]:
    settings = settings_for(tmp_path, key_server, database_url=postgres_url, database_pool_size=3)
    with open_veil(settings) as running:
        yield running


def test_a_private_query_is_released_and_audited(veil: Veil) -> None:
    assert veil.db.engine.dialect.name == "postgresql"
    assert veil.db.engine.pool.size() == 3  # VEIL_DATABASE_POOL_SIZE
    with ApiThread(veil.settings, veil) as url:
        world = make_world(veil, url, epsilon=1.0)
        job = world.provider.submit_job(
            world.dataset_id, PURPOSE, 0.5, [*COUNT, {"kind": "mean", "column": "temperature_c"}]
        )
        final = world.provider.wait_for_job(job["id"], timeout=60)
        assert final["status"] == "released", final
        result = world.provider.get_result(job["id"])
        count, mean = result["rows"][0]["values"]
        assert math.isclose(count["value"], 2000, rel_tol=0.1)
        assert mean["ci95"][0] <= mean["value"] <= mean["ci95"][1]
        assert result["remaining_budget"]["epsilon_remaining"] == pytest.approx(0.5)
        # The rest of the budget, then one more: refused, at no cost.
        second = world.provider.submit_job(world.dataset_id, PURPOSE, 0.5, COUNT)
        assert world.provider.wait_for_job(second["id"], timeout=60)["status"] == "released"
        with pytest.raises(ApiError) as denied:
            world.provider.submit_job(world.dataset_id, PURPOSE, 0.01, COUNT)
        assert denied.value.status == 403
        # PostgreSQL enforces column lengths (SQLite does not): an over-long id is
        # refused as invalid (422), not a server error.
        with pytest.raises(ApiError) as unknown:
            world.provider.submit_job("ds_" + "x" * 100, PURPOSE, 0.01, COUNT)
        assert unknown.value.status == 422, unknown.value
        budget = world.provider.get_grant(world.grant_id)["budget"]
        assert budget["epsilon_spent"] == 1.0 and budget["epsilon_remaining"] == 0
    assert not (veil.settings.data_dir / "veil.db").exists()  # nothing went to SQLite
    report = verify_chain(veil)
    assert report.ok, report.problem
    assert report.events > 10


def test_a_refund_happens_once_on_postgresql(
    tmp_path: Path, key_server: LocalKeyServer, postgres_url: str
) -> None:
    """Racing settlements of one failed job, and a second refund of its debit, on
    PostgreSQL: one refund, and the ledger's unique refund_of holds inside a savepoint."""
    settings = settings_for(tmp_path, key_server, database_url=postgres_url)
    with open_veil(settings, worker=False) as veil, ApiThread(settings, veil) as url:
        world = make_world(veil, url, epsilon=1.0)
        job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT)
        world.provider.submit_job(world.dataset_id, PURPOSE, 0.5, COUNT)
        assert claim_job(veil, job["id"])
        with ThreadPoolExecutor(max_workers=6) as pool:
            settled = list(
                pool.map(lambda _: fail_running(veil, job["id"], "lost", refund_unread=True),
                         range(6))
            )  # fmt: skip
        assert settled.count(True) == 1
        with veil.db.transaction() as session:
            debit = session.scalars(
                select(BudgetDebit).where(
                    BudgetDebit.job_id == job["id"], BudgetDebit.refund_of.is_(None)
                )
            ).one()
            assert refund(session, debit, veil.clock()) is None  # refused; the transaction
            grant = session.get(Grant, world.grant_id)  # goes on after the savepoint
            assert grant is not None and grant.epsilon_spent == 500_000
            stored = session.get(Dataset, world.dataset_id)
            assert stored is not None and stored.epsilon_spent == 500_000  # the cap, too


def test_submissions_in_one_turn_on_postgresql(veil: Veil) -> None:
    """A turn's jobs, ledger entries and events go as multi-row INSERTs on PostgreSQL, its
    debits as one conditional UPDATE each: the first that fit are queued, the rest denied
    as they would be alone, and the books and the chain agree."""
    from policies.budget import Budget
    from policies.errors import Denied
    from sandbox.jobs.submit import JobSubmission, submit_job
    from sandbox.store.models import Job
    from tests.sandbox.test_submission_turns import COUNT as QUERY
    from tests.sandbox.test_submission_turns import _in_one_turn, _provider

    with ApiThread(veil.settings, veil) as url:
        world = make_world(veil, url, epsilon=1.0)
    provider = _provider(veil, world)
    asked = JobSubmission(world.dataset_id, PURPOSE, QUERY, tier=3, epsilon=0.3)
    outcomes = _in_one_turn(veil, [lambda: submit_job(veil, provider, asked)] * 5)
    assert [type(o) for o in outcomes] == [Job] * 3 + [Denied] * 2
    with veil.db.read() as session:
        grant, dataset = session.get(Grant, world.grant_id), session.get(Dataset, world.dataset_id)
        assert grant is not None and dataset is not None
        assert grant.budget_spent == dataset.cap_spent == Budget.from_floats(0.9)
        paid = session.scalars(select(BudgetDebit.job_id).where(BudgetDebit.grant_id == grant.id))
        assert sorted(paid) == sorted(o.id for o in outcomes if isinstance(o, Job))
    report = verify_chain(veil)
    assert report.ok, report.problem
