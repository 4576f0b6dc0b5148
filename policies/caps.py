"""The dataset-wide privacy cap: all providers together, against collusion.

Each grant has its own budget (``policies.grants``); each dataset also has a cap that the
jobs of *every* provider on it share, so that providers who pool their releases cannot
learn more than the enterprise allowed for the dataset as a whole.  A job pays both, or
neither (:func:`debit_job`), and a refund gives both back (:func:`restore_cap` with
``policies.grants.refund``).

The rule (:func:`cap_reason`) is pure.  The ledger operations are single conditional
``UPDATE`` statements, like the grant's, so concurrent jobs can never overspend the cap.  The
table that holds a cap (``sandbox.store.models.Dataset``) lives above this package, so it takes
its cap columns from :class:`CapColumns` and is passed in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import BigInteger, Update, bindparam, update
from sqlalchemy.orm import Mapped, Session, class_mapper, mapped_column
from sqlalchemy.orm.attributes import set_committed_value

from i18n import Msg
from policies.budget import ZERO, Budget
from policies.db import insert_new
from policies.grants import Grant, ledger_entry, new_entry, spend, spent_changed, unspend


class CapColumns:
    """Mixin of a mapped table (with a one-column primary key) that holds a dataset-wide
    cap and what was spent of it, in the ledger's units; the database columns stay
    integers, :attr:`cap` and :attr:`cap_spent` are their budgets."""

    epsilon_cap: Mapped[int] = mapped_column(BigInteger)
    delta_cap: Mapped[int] = mapped_column(BigInteger)
    epsilon_spent: Mapped[int] = mapped_column(BigInteger, default=0)
    delta_spent: Mapped[int] = mapped_column(BigInteger, default=0)

    @property
    def cap(self) -> Budget:
        """The cap, all providers together."""
        return Budget(self.epsilon_cap, self.delta_cap)

    @property
    def cap_spent(self) -> Budget:
        """What the jobs of every provider have spent of it."""
        return Budget(self.epsilon_spent, self.delta_spent)


def cap_reason(cap: Budget, spent: Budget, cost: Budget) -> str | None:
    """None if ``cost`` fits in what is left of ``cap``; else the refusal, saying what is
    left (a budget, never a data value)."""
    if (spent + cost).fits_within(cap):
        return None
    left = cap - spent
    return Msg(
        "the dataset's enterprise-wide privacy cap (all providers together) has epsilon "
        "{epsilon} and delta {delta} left",
        epsilon=left.epsilon_text,
        delta=left.delta_text,
    )


def _cap_debit(table: type[CapColumns]) -> Update:
    """The cap's conditional debit on ``table``, built once per table (a Core statement)."""
    return _cap_debit_of(table)  # type: ignore[arg-type]  # classes are hashable


@functools.cache
def _cap_debit_of(table: type[CapColumns]) -> Update:
    t: Any = table.__table__  # type: ignore[attr-defined]
    key = t.c[_key(table).name]
    return (
        update(t)
        .where(
            key == bindparam("row_id"),
            t.c.epsilon_spent + bindparam("epsilon") <= t.c.epsilon_cap,
            t.c.delta_spent + bindparam("delta") <= t.c.delta_cap,
        )
        .values(
            epsilon_spent=t.c.epsilon_spent + bindparam("epsilon"),
            delta_spent=t.c.delta_spent + bindparam("delta"),
        )
    )


def debit_cap(session: Session, table: type[CapColumns], row_id: str, cost: Budget) -> bool:
    """Debit ``cost`` from the cap of row ``row_id`` atomically; False (and nothing spent)
    if it would be exceeded."""
    params = {"row_id": row_id, "epsilon": cost.epsilon_units, "delta": cost.delta_units}
    return bool(session.connection().execute(_cap_debit(table), params).rowcount == 1)


def restore_cap(session: Session, table: type[CapColumns], row_id: str, amount: Budget) -> bool:
    """Give ``amount`` back to the cap of row ``row_id`` (a refund); False (and nothing
    changed) if less than that was spent: the books disagree."""
    eps, delta = amount.epsilon_units, amount.delta_units
    restored = session.execute(
        update(table)
        .where(_key(table) == row_id, table.epsilon_spent >= eps, table.delta_spent >= delta)
        .values(epsilon_spent=table.epsilon_spent - eps, delta_spent=table.delta_spent - delta)
        .execution_options(synchronize_session=False)
    )
    return bool(restored.rowcount == 1)


def _key(table: type[CapColumns]) -> Any:
    """The primary-key column of ``table`` (one column: a dataset's id)."""
    (key,) = class_mapper(table).primary_key
    return key


def debit_job(
    session: Session,
    grant: Grant,
    table: type[CapColumns],
    row_id: str,
    job_id: str,
    cost: Budget,
) -> str | None:
    """Debit a job's ``cost`` from its grant and from the cap of dataset ``row_id``, both or
    neither; None when paid (a free job pays nothing), else the reason.

    Two conditional ``UPDATE``s and the ledger entry, no savepoint: when the cap refuses,
    the grant's spend (made a statement earlier in this transaction, its row locked since)
    is taken back exactly; the ledger entry is written only once both are paid."""
    if not cost:
        return None
    if not spend(session, grant.id, cost):
        return Msg("budget short: another job spent it first")
    if not debit_cap(session, table, row_id, cost):
        unspend(session, grant.id, cost)
        return Msg("the dataset's enterprise-wide privacy cap was reached by another job")
    ledger_entry(session, grant.id, job_id, cost)
    spent_changed(session, grant)
    return None


# An attribute's loaded value changed without marking it for the next flush (untyped).
_set_loaded = cast(Callable[[object, str, int], None], set_committed_value)


@dataclass(frozen=True)
class JobDebit:
    """One job's debit in :func:`debit_jobs`: of ``grant`` and of the cap of row ``row_id``."""

    grant: Grant
    row_id: str
    job_id: str
    cost: Budget


def count_spent(grant: Grant, cap_row: CapColumns, cost: Budget) -> None:
    """Raise what ``grant`` and ``cap_row`` have spent, as loaded in this session, by
    ``cost``, without writing it: the next decision in this transaction sees a job decided
    before it as paid, and :func:`debit_jobs` writes them all.

    Exact only under the write lock (``Database.transaction``), where nothing else changes
    the rows between their reading and the debit; the debit's conditions check it anyway."""
    for row, eps, delta in (
        (grant, grant.epsilon_spent, grant.delta_spent),
        (cap_row, cap_row.epsilon_spent, cap_row.delta_spent),
    ):
        _set_loaded(row, "epsilon_spent", eps + cost.epsilon_units)
        _set_loaded(row, "delta_spent", delta + cost.delta_units)


def debit_jobs(session: Session, table: type[CapColumns], debits: Sequence[JobDebit]) -> bool:
    """Debit several jobs, decided in this transaction against :func:`count_spent`'s
    running totals: each grant, and each cap, pays their sum in one of :func:`debit_job`'s
    conditional ``UPDATE``s (as costs are never negative, the sum fits exactly when each
    job, debited in turn, would have); then the ledger gets an entry per job.

    True when all paid.  False when any was refused (the rows changed since they were
    read, which the write lock rules out): then some may have paid, and the caller rolls
    the transaction back and debits the jobs one by one (:func:`debit_job`), each refusal
    with its reason."""
    paying = [d for d in debits if d.cost]
    grants: dict[str, Budget] = {}
    caps: dict[str, Budget] = {}
    for d in paying:
        grants[d.grant.id] = grants.get(d.grant.id, ZERO) + d.cost
        caps[d.row_id] = caps.get(d.row_id, ZERO) + d.cost
    if not all(spend(session, grant_id, total) for grant_id, total in grants.items()):
        return False
    if not all(debit_cap(session, table, row_id, total) for row_id, total in caps.items()):
        return False
    connection = session.connection()
    insert_new(connection, [new_entry(d.grant.id, d.job_id, d.cost) for d in paying])
    return True


__all__ = [
    "CapColumns",
    "JobDebit",
    "cap_reason",
    "count_spent",
    "debit_cap",
    "debit_job",
    "debit_jobs",
    "restore_cap",
]
