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

from typing import Any

from sqlalchemy import BigInteger, update
from sqlalchemy.orm import Mapped, Session, class_mapper, mapped_column

from i18n import Msg
from policies.budget import Budget
from policies.grants import Grant, debit


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


def debit_cap(session: Session, table: type[CapColumns], row_id: str, cost: Budget) -> bool:
    """Debit ``cost`` from the cap of row ``row_id`` atomically; False (and nothing spent)
    if it would be exceeded."""
    eps, delta = cost.epsilon_units, cost.delta_units
    result = session.execute(
        update(table)
        .where(
            _key(table) == row_id,
            table.epsilon_spent + eps <= table.epsilon_cap,
            table.delta_spent + delta <= table.delta_cap,
        )
        .values(epsilon_spent=table.epsilon_spent + eps, delta_spent=table.delta_spent + delta)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount == 1)


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
    neither (a savepoint); None when paid (a free job pays nothing), else the reason."""
    if not cost:
        return None
    savepoint = session.begin_nested()
    if not debit(session, grant, job_id, cost):
        savepoint.rollback()
        return Msg("budget short: another job spent it first")
    if not debit_cap(session, table, row_id, cost):
        savepoint.rollback()
        return Msg("the dataset's enterprise-wide privacy cap was reached by another job")
    savepoint.commit()
    return None


__all__ = ["CapColumns", "cap_reason", "debit_cap", "debit_job", "restore_cap"]
