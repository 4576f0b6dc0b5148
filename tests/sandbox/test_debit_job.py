"""A job's debit pays the grant and the dataset's cap both or neither, without a savepoint
(``policies.caps.debit_job``), and its audit events chain on whatever the session appended
before (``policies.audit.append`` after ``record``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from policies import audit
from policies.budget import Budget
from policies.caps import JobDebit, count_spent, debit_job, debit_jobs
from policies.grants import EPSILON_UNIT, BudgetDebit, Grant, GrantTerms, create_grant
from policies.principals import Role, create_principal
from sandbox.store.database import Database, migrate, sqlite_url
from sandbox.store.models import Dataset


def _world(db: Database, cap_units: int) -> tuple[str, str]:
    now = datetime.now(UTC)
    with db.transaction() as session:
        enterprise = create_principal(session, Role.ENTERPRISE, "Acme", slug="acme")
        provider = create_principal(session, Role.PROVIDER, "Predicta")
        session.add(
            Dataset(id="ds_test", enterprise_id=enterprise.id, name="log", declaration={},
                    epsilon_cap=cap_units, delta_cap=0, epsilon_spent=0, delta_spent=0)
        )  # fmt: skip
        terms = GrantTerms(
            provider_id=provider.id, dataset_ids=("ds_test",), columns=("c",), tiers=(3,),
            purposes=("p",), valid_from=now, valid_until=now + timedelta(days=1), epsilon=1.0,
        )  # fmt: skip
        return create_grant(session, enterprise.id, terms, min_group_floor=10).id, "ds_test"


def test_a_cap_refusal_leaves_the_grant_and_the_ledger_untouched(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    migrate(url)
    db = Database(url)
    try:
        grant_id, dataset_id = _world(db, cap_units=EPSILON_UNIT // 100)  # cap ε 0.01
        cost = Budget.from_floats(0.006)
        outcomes = []
        for job in ("job_1", "job_2"):  # the second fits the grant, not the cap
            with db.transaction() as session:
                grant = session.get(Grant, grant_id)
                assert grant is not None
                outcomes.append(debit_job(session, grant, Dataset, dataset_id, job, cost))
                # The grant object shows what the database holds, paid or refused.
                assert grant.budget_spent == Budget.from_floats(0.006)
        assert outcomes[0] is None and outcomes[1] is not None
        assert "cap" in outcomes[1]
        with db.read() as session:
            grant = session.get(Grant, grant_id)
            dataset = session.get(Dataset, dataset_id)
            assert grant is not None and dataset is not None
            entries = session.scalar(select(func.count()).select_from(BudgetDebit))
            assert grant.epsilon_spent == dataset.epsilon_spent == cost.epsilon_units
            assert entries == 1
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("cap", "more"),
    [(2.0, 0.3), (0.95, 0.08)],
    ids=["the grant refuses", "the cap refuses"],
)
def test_debits_made_together_pay_in_full_or_are_refused(
    tmp_path: Path, cap: float, more: float
) -> None:
    """``debit_jobs``: each grant and cap pays the sum of its jobs in one conditional
    UPDATE; more than is left is refused however the running totals were counted."""
    url = sqlite_url(tmp_path)
    migrate(url)
    db = Database(url)
    try:
        grant_id, dataset_id = _world(db, cap_units=int(cap * EPSILON_UNIT))  # grant ε 1
        cost = Budget.from_floats(0.3)
        with db.transaction() as session:
            grant, dataset = session.get(Grant, grant_id), session.get(Dataset, dataset_id)
            assert grant is not None and dataset is not None
            debits = [JobDebit(grant, dataset_id, f"job_{i}", cost) for i in range(3)]
            for _ in debits:
                count_spent(grant, dataset, cost)  # decided in turn: each saw those before
            assert grant.budget_spent == dataset.cap_spent == Budget.from_floats(0.9)
            assert debit_jobs(session, Dataset, debits)
        with db.transaction() as session:
            grant = session.get(Grant, grant_id)
            assert grant is not None
            # Over what is left of the grant (ε 0.1) or of the cap (ε 0.05): refused.
            extra = Budget.from_floats(more)
            assert not debit_jobs(session, Dataset, [JobDebit(grant, dataset_id, "job_3", extra)])
            session.rollback()  # as the caller does
        with db.read() as session:
            grant, dataset = session.get(Grant, grant_id), session.get(Dataset, dataset_id)
            assert grant is not None and dataset is not None
            paid = session.scalars(select(BudgetDebit.job_id).order_by(BudgetDebit.job_id))
            assert list(paid) == ["job_0", "job_1", "job_2"]
            assert grant.budget_spent == dataset.cap_spent == Budget.from_floats(0.9)
    finally:
        db.dispose()


def test_an_append_chains_on_a_record_of_the_same_transaction(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    migrate(url)
    db = Database(url)
    try:
        with db.transaction() as session:
            audit.record(session, "test.first")
            appended = audit.append(
                session, [audit.Entry("test.second"), audit.Entry("test.third", details={"n": 3})]
            )
            last = audit.record(session, "test.fourth")
        assert [e.seq for e in appended] == [2, 3] and last.seq == 4
        assert last.prev_hash == appended[-1].hash
        with db.read() as session:
            report = audit.verify(session, {})
        assert report.ok, report.problem
        assert report.events == 4
    finally:
        db.dispose()
