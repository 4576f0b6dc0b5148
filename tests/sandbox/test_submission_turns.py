"""Submissions made at once are decided and written together (``submit_job``'s turns,
``sandbox.store.group_commit``), exactly as if each had committed alone: in order, each
seeing what those before it spent; a wrong one fails alone; a turn whose debits are
refused goes again one by one."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from policies.audit import AuditEvent
from policies.budget import Budget
from policies.errors import Denied, InvalidRequest
from policies.grants import BudgetDebit, Grant
from policies.principals import Principal
from sandbox.jobs import submit as submit_module
from sandbox.jobs.submit import JobSubmission, submit_job
from sandbox.oversight.audit_log import verify_chain
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset, Job
from tests.sandbox.conftest import PURPOSE, World

DEADLINE_S = 60.0
COUNT = {"aggregates": [{"kind": "count"}]}


def _provider(veil: Veil, world: World) -> Principal:
    with veil.db.read() as session:
        provider = session.get(Principal, world.provider_id)
        assert provider is not None
        session.expunge(provider)
    return provider


def _in_one_turn(veil: Veil, calls: list[Callable[[], Job]]) -> list[Job | Exception]:
    """Run ``calls`` (each a submission) from threads while the write lock is held, so
    that they wait together and go in one turn; their outcomes, in arrival order."""
    arrived: list[int] = []
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures: list[Future[Job]] = []
        with veil.db.transaction() as session:
            session.connection()  # the write lock, taken: the first to arrive waits for it
            for i, call in enumerate(calls):
                futures.append(pool.submit(call))
                deadline = time.monotonic() + DEADLINE_S
                while veil.submissions.waiting < i + 1:  # one at a time: a known order
                    assert time.monotonic() < deadline, "a submission never queued"
                    time.sleep(0.005)
                arrived.append(i)
        outcomes: list[Job | Exception] = []
        for future in futures:
            try:
                outcomes.append(future.result(timeout=DEADLINE_S))
            except Exception as exc:
                outcomes.append(exc)
    return outcomes


def _events_of(veil: Veil, job_ids: list[str]) -> list[AuditEvent]:
    resources = [f"job:{j}" for j in job_ids]
    with veil.db.read() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.resource.in_(resources))
                .order_by(AuditEvent.seq)
            )
        )


def test_a_turn_spends_in_order_and_denies_what_no_longer_fits(veil: Veil, world: World) -> None:
    provider = _provider(veil, world)
    asked = JobSubmission(world.dataset_id, PURPOSE, COUNT, tier=3, epsilon=0.25)  # ε 1 granted
    outcomes = _in_one_turn(veil, [lambda: submit_job(veil, provider, asked)] * 10)

    assert [type(o) for o in outcomes] == [Job] * 4 + [Denied] * 6  # the first four fit
    with pytest.raises(Denied) as alone:  # what one more says, alone: the same
        submit_job(veil, provider, asked)
    for denied in outcomes[4:]:
        assert isinstance(denied, Denied) and denied.reasons == alone.value.reasons
    assert "budget short" in alone.value.reasons[0]

    with veil.db.read() as session:
        grant = session.get(Grant, world.grant_id)
        dataset = session.get(Dataset, world.dataset_id)
        assert grant is not None and dataset is not None
        assert grant.budget_spent == dataset.cap_spent == Budget.from_floats(1.0)
        paid = session.scalars(select(BudgetDebit.job_id).where(BudgetDebit.grant_id == grant.id))
        queued = [o.id for o in outcomes if isinstance(o, Job)]
        assert sorted(paid) == sorted(queued)
        rows = session.scalar(
            select(func.count()).select_from(Job).where(Job.provider_id == provider.id)
        )
        assert rows == 11  # every submission has its row, the denied ones too
    job_ids = queued + [o.job_id for o in outcomes if isinstance(o, Denied) and o.job_id]
    events = _events_of(veil, job_ids)
    assert sorted(e.action for e in events) == ["job.denied"] * 6 + ["job.submitted"] * 4
    assert len({e.at for e in events}) == 1  # one append: one turn, not ten
    assert verify_chain(veil).ok


def test_a_wrong_submission_fails_alone_and_writes_nothing(veil: Veil, world: World) -> None:
    provider = _provider(veil, world)
    good = JobSubmission(world.dataset_id, PURPOSE, COUNT, tier=3, epsilon=0.1)
    unknown = JobSubmission(
        world.dataset_id,
        PURPOSE,
        {"aggregates": [{"kind": "mean", "column": "no_such_column"}]},
        tier=3,
        epsilon=0.1,
    )
    calls = [lambda: submit_job(veil, provider, good)] * 2
    calls.insert(1, lambda: submit_job(veil, provider, unknown))
    outcomes = _in_one_turn(veil, calls)

    assert isinstance(outcomes[0], Job) and isinstance(outcomes[2], Job)
    assert isinstance(outcomes[1], InvalidRequest) and outcomes[1].code == "unknown_column"
    with veil.db.read() as session:
        rows = session.scalar(
            select(func.count()).select_from(Job).where(Job.provider_id == provider.id)
        )
        grant = session.get(Grant, world.grant_id)
        assert rows == 2 and grant is not None
        assert grant.budget_spent == Budget.from_floats(0.2)
    assert verify_chain(veil).ok


def test_a_turn_whose_debits_are_refused_goes_again_one_by_one(
    veil: Veil, world: World, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    provider = _provider(veil, world)
    refusals: list[int] = []

    def refused(*args: object) -> bool:  # as if the rows had changed under the turn
        refusals.append(1)
        return False

    monkeypatch.setattr(submit_module, "debit_jobs", refused)
    asked = JobSubmission(world.dataset_id, PURPOSE, COUNT, tier=3, epsilon=0.25)
    with caplog.at_level(logging.INFO, logger="sandbox.jobs.submit"):
        outcomes = _in_one_turn(veil, [lambda: submit_job(veil, provider, asked)] * 6)

    assert refusals == [1]  # once, together; then each alone, debited as it is decided
    assert "6 submissions failed together; each goes alone" in caplog.text
    assert [type(o) for o in outcomes] == [Job] * 4 + [Denied] * 2
    with veil.db.read() as session:
        grant = session.get(Grant, world.grant_id)
        assert grant is not None and grant.budget_spent == Budget.from_floats(1.0)
        paid = session.scalar(select(func.count()).select_from(BudgetDebit))
        assert paid == 4
    assert verify_chain(veil).ok


def test_submissions_from_many_threads_never_overspend(veil: Veil, world: World) -> None:
    """No gate: turns form as they will; the budget still pays exactly what fits."""
    provider = _provider(veil, world)
    asked = JobSubmission(world.dataset_id, PURPOSE, COUNT, tier=3, epsilon=0.05)
    start = threading.Barrier(16)

    def submit(_: int) -> str:
        start.wait(DEADLINE_S)
        try:
            return submit_job(veil, provider, asked).status
        except Denied:
            return "denied"

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = list(pool.map(submit, range(32)))
    assert outcomes.count("queued") == 20 and outcomes.count("denied") == 12
    with veil.db.read() as session:
        grant = session.get(Grant, world.grant_id)
        assert grant is not None and grant.budget_spent == Budget.from_floats(1.0)
    assert verify_chain(veil).ok
