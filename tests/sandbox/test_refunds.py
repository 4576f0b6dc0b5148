"""Refunds: a job that failed before any of its data was read gets its debit back, exactly and
once; a job that read its data never does (``sandbox.jobs.refunds``).

The key server is a real OpenBao that the tests stop; "read" is the job's own record, set
once the data key is unwrapped, so a key-server loss *after* the read (tier 4 storing its
model) keeps the debit although it is the same error as a loss before it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from keys import LocalKeyServer
from policies import audit
from policies.grants import BudgetDebit, Grant, refund
from policies.principals import Principal
from sandbox.data.datasets import latest_version
from sandbox.data.objects import read_decrypted
from sandbox.isolation.pool import SandboxError, SandboxProcess
from sandbox.jobs import outcomes
from sandbox.jobs.leases import recover_interrupted_jobs
from sandbox.jobs.outcomes import fail_running
from sandbox.jobs.refunds import GIVEN_BACK, KEPT, ClaimLost, data_read_marker, refund_unread
from sandbox.jobs.runner import claim_next_job, run_job
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from sandbox.store.models import Dataset, Job, JobStatus
from tests.sandbox.conftest import GRANTED, PURPOSE, World, make_world, settings_for

pytestmark = pytest.mark.integration

COUNT = [{"kind": "count"}]
TRAINING = {
    "family": "logistic_regression",
    "features": ["temperature_c", "vibration_mm_s"],
    "target": "failure_24h",
    "epochs": 1,
    "batch_size": 128,
    "learning_rate": 1.0,
    "max_grad_norm": 1.0,
}


@dataclass(frozen=True)
class Books:
    """A job's grant and dataset spend and its ledger entries, in exact units."""

    grant_spent: int
    dataset_spent: int
    entries: list[tuple[int, str | None]]  # (epsilon, refund_of)
    data_read: bool
    status: str
    error: str | None


def _books(veil: Veil, job_id: str) -> Books:
    with veil.db.read() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.grant_id is not None
        grant, dataset = session.get(Grant, job.grant_id), session.get(Dataset, job.dataset_id)
        assert grant is not None and dataset is not None
        entries = session.execute(
            select(BudgetDebit.epsilon, BudgetDebit.refund_of)
            .where(BudgetDebit.job_id == job_id)
            .order_by(BudgetDebit.created_at)
        )
        return Books(
            grant.epsilon_spent,
            dataset.epsilon_spent,
            [(eps, of) for eps, of in entries],
            job.data_read_at is not None,
            job.status,
            job.error,
        )


def _events(veil: Veil, job_id: str) -> list[audit.AuditEvent]:
    with veil.db.read() as session:
        return list(
            session.scalars(
                select(audit.AuditEvent)
                .where(audit.AuditEvent.resource == f"job:{job_id}")
                .order_by(audit.AuditEvent.seq)
            )
        )


def _run_next(veil: Veil) -> str:
    job_id = claim_next_job(veil)
    assert job_id is not None
    run_job(veil, job_id)
    return job_id


@pytest.fixture
def stoppable(tmp_path: Path, own_key_server: LocalKeyServer) -> Iterator[tuple[Veil, World]]:
    """A Veil on an OpenBao of the test's own, with no worker: the test runs the jobs."""
    with (
        open_veil(settings_for(tmp_path, own_key_server), worker=False) as veil,
        ApiThread(veil.settings, veil) as url,
    ):
        yield veil, make_world(veil, url, epsilon=1.0)


def test_a_job_run_while_the_key_server_is_down_gets_its_budget_back_once(
    stoppable: tuple[Veil, World], own_key_server: LocalKeyServer
) -> None:
    veil, world = stoppable
    job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT)
    assert _books(veil, job["id"]).grant_spent == 250_000
    own_key_server.stop()
    assert _run_next(veil) == job["id"]

    books = _books(veil, job["id"])
    assert books.status == JobStatus.FAILED and not books.data_read
    assert (books.grant_spent, books.dataset_spent) == (0, 0)  # grant and cap, exactly
    assert books.error == "the key server is unavailable" + GIVEN_BACK
    (debit, given_back) = books.entries
    assert debit == (250_000, None) and given_back[0] == -250_000 and given_back[1] is not None
    events = _events(veil, job["id"])
    failed, refunded = events[-2:]
    assert (failed.action, refunded.action) == ("job.failed", "job.refunded")
    assert refunded.seq == failed.seq + 1  # written with the failure, in one transaction
    assert refunded.details["epsilon_units"] == 250_000 and refunded.details["delta_units"] == 0
    assert world.provider.get_grant(world.grant_id)["budget"]["epsilon_remaining"] == 1.0

    # Never twice: not by a second settlement of the job, nor by the ledger itself.
    assert fail_running(veil, job["id"], "again", refund_unread=True) is False
    with veil.db.transaction() as session:
        stored = session.get(Job, job["id"])
        assert stored is not None
        assert refund_unread(session, stored, veil.clock()) is None
        first = session.scalars(
            select(BudgetDebit).where(
                BudgetDebit.job_id == job["id"], BudgetDebit.refund_of.is_(None)
            )
        ).one()
        assert refund(session, first, veil.clock()) is None
    assert _books(veil, job["id"]) == books

    own_key_server.start()  # the whole budget is there to spend once the server is back
    whole = world.provider.submit_job(world.dataset_id, PURPOSE, 1.0, COUNT)
    assert _run_next(veil) == whole["id"]
    assert world.provider.get_job(whole["id"])["status"] == "released"
    after = _books(veil, whole["id"])
    assert (after.grant_spent, after.dataset_spent) == (1_000_000, 1_000_000)

    # The usage receipt shows the refunded job charged nothing, with its refund event.
    receipt = world.acme.usage_receipt(world.provider_id)
    (entry,) = [j for j in receipt["jobs"] if j["job_id"] == job["id"]]
    assert (entry["status"], entry["epsilon_charged"], entry["epsilon_refunded"]) == (
        "failed",
        0.0,
        0.25,
    )
    assert entry["refunded_seq"] == refunded.seq and entry["debited_seq"] is not None
    assert receipt["totals"]["epsilon_charged"] == 1.0


def test_a_debit_is_refunded_at_most_once_even_by_the_ledger_alone(
    stoppable: tuple[Veil, World],
) -> None:
    """Two workers (or a crash and a requeue) racing to refund one debit: the ledger's unique
    ``refund_of`` lets only the first through, whatever else the grant has spent."""
    veil, world = stoppable
    first = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT)
    world.provider.submit_job(world.dataset_id, PURPOSE, 0.5, COUNT)
    with veil.db.transaction() as session:
        debit = session.scalars(select(BudgetDebit).where(BudgetDebit.job_id == first["id"])).one()
        entry = refund(session, debit, veil.clock())
        assert entry is not None and (entry.epsilon, entry.delta) == (-250_000, 0)
    with veil.db.transaction() as session:
        assert refund(session, debit, veil.clock()) is None  # refunded already
        assert refund(session, entry, veil.clock()) is None  # a refund is not refunded
    with veil.db.read() as session:
        grant = session.get(Grant, world.grant_id)
        assert grant is not None and grant.epsilon_spent == 500_000


def test_settlements_racing_for_one_job_refund_it_once(stoppable: tuple[Veil, World]) -> None:
    """Its worker failing it and the recovery of a worker taken for dead, at once: one ends
    the job, and its debit comes back once."""
    veil, world = stoppable
    job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT)
    world.provider.submit_job(world.dataset_id, PURPOSE, 0.5, COUNT)  # spend that must stay
    assert claim_next_job(veil) == job["id"]
    start = threading.Barrier(8)

    def settle(_: int) -> bool:
        start.wait()
        return fail_running(veil, job["id"], "the key server is unavailable", refund_unread=True)

    with ThreadPoolExecutor(max_workers=8) as pool:
        settled = list(pool.map(settle, range(8)))
    assert settled.count(True) == 1
    books = _books(veil, job["id"])
    assert books.grant_spent == 500_000 and books.dataset_spent == 500_000
    assert [eps for eps, _ in books.entries] == [250_000, -250_000]
    assert [e.action for e in _events(veil, job["id"])].count("job.refunded") == 1


def test_a_job_that_failed_after_reading_its_data_keeps_its_debit(
    stoppable: tuple[Veil, World], monkeypatch: pytest.MonkeyPatch
) -> None:
    veil, world = stoppable
    job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT)

    def fails_once_the_data_is_sent(process: SandboxProcess, *_: object) -> None:
        assert process._writer is not None
        process._writer.join()  # decrypted and sent as it went: the data was read
        raise SandboxError("the job's sandboxed process ended without a result")

    monkeypatch.setattr(SandboxProcess, "_receive", fails_once_the_data_is_sent)
    assert _run_next(veil) == job["id"]

    books = _books(veil, job["id"])
    assert books.status == JobStatus.FAILED and books.data_read
    assert (books.grant_spent, books.dataset_spent) == (250_000, 250_000)
    assert books.entries == [(250_000, None)]
    assert books.error is not None and books.error.endswith(KEPT)
    assert "job.refunded" not in [e.action for e in _events(veil, job["id"])]


def test_the_key_server_lost_after_the_read_keeps_the_debit(
    stoppable: tuple[Veil, World], own_key_server: LocalKeyServer, monkeypatch: Any
) -> None:
    """Tier 4: the model is trained on the data, then storing it needs a data key and the key
    server is gone — the same error as before any read, but the data was read."""
    veil, world = stoppable
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
    store = outcomes.store_artifact

    def store_after_losing_the_key_server(*args: Any) -> Any:
        own_key_server.stop()
        return store(*args)

    monkeypatch.setattr(outcomes, "store_artifact", store_after_losing_the_key_server)
    job = world.provider.submit_training(
        world.dataset_id, PURPOSE, TRAINING, epsilon=1.0, delta=1e-5
    )
    assert _run_next(veil) == job["id"]

    books = _books(veil, job["id"])
    assert books.status == JobStatus.FAILED and books.data_read
    assert books.entries == [(1_000_000, None)]
    assert books.error == "the key server is unavailable" + KEPT
    with veil.db.read() as session:
        stored = session.get(Grant, grant["id"])
        assert stored is not None and stored.epsilon_spent == 1_000_000
    assert "job.refunded" not in [e.action for e in _events(veil, job["id"])]


def test_a_job_read_by_a_worker_that_died_is_not_refunded_by_the_next(
    stoppable: tuple[Veil, World], own_key_server: LocalKeyServer
) -> None:
    """The crash/requeue race: the first worker unwrapped the data key and died; the job runs
    again, meets the key server down, and fails with its debit kept."""
    veil, world = stoppable
    job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT)
    mine = veil.worker_id
    veil.worker_id = "wrk_died_after_reading"  # no lease: it is dead
    assert claim_next_job(veil) == job["id"]
    data_read_marker(veil, job["id"])()  # what decrypt_stream calls once the key is unwrapped
    veil.worker_id = mine
    assert recover_interrupted_jobs(veil) == 1  # queued again
    own_key_server.stop()
    assert _run_next(veil) == job["id"]

    books = _books(veil, job["id"])
    assert books.status == JobStatus.FAILED and books.data_read
    assert (books.grant_spent, books.dataset_spent) == (250_000, 250_000)
    assert books.error == "the key server is unavailable" + KEPT


def test_a_worker_taken_for_dead_decrypts_nothing(stoppable: tuple[Veil, World]) -> None:
    """A worker whose job was taken back cannot record the read, so it never decrypts: a later
    refund by the job's new owner stays right."""
    veil, world = stoppable
    job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, COUNT)
    mine = veil.worker_id
    veil.worker_id = "wrk_taken_for_dead"
    assert claim_next_job(veil) == job["id"]
    veil.worker_id = mine
    assert recover_interrupted_jobs(veil) == 1
    assert claim_next_job(veil) == job["id"]  # another worker has it now
    late = Veil(veil.settings, veil.db, veil.keys, worker_id="wrk_taken_for_dead")
    with veil.db.read() as session:
        stored = latest_version(session, world.dataset_id)
        dataset = session.get(Dataset, world.dataset_id)
        assert stored is not None and dataset is not None
        owner = session.get(Principal, dataset.enterprise_id)
        assert owner is not None and owner.slug is not None
    with pytest.raises(ClaimLost):
        read_decrypted(
            late,
            owner.slug,
            f"dataset:{world.dataset_id}",
            stored.version,
            stored.wrapped_key,
            stored.object_path,
            on_unwrapped=data_read_marker(late, job["id"]),
        )
    assert not _books(veil, job["id"]).data_read
    assert fail_running(veil, job["id"], "lost", refund_unread=True)  # by its owner now
    assert _books(veil, job["id"]).grant_spent == 0
