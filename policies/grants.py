"""Consent grants (an enterprise lets a provider use datasets) and the privacy-budget ledger.

Budgets are stored as exact integers (ε in millionths, δ in 10⁻¹²) so that
ten debits of 0.1 exhaust a budget of 1.0 exactly; floats would drift.  Code works
with :class:`policies.budget.Budget` values; the models convert at their boundary
(``Grant.budget_total``, ``Grant.budget_spent``, ``BudgetDebit.amount``).  A
debit is one conditional ``UPDATE`` that succeeds only if the whole amount
fits, so concurrent jobs can never overspend, on SQLite or PostgreSQL.

The ledger (``budget_debits``) only grows: a refund is a new, negative entry naming the
debit it gives back (``refund_of``, unique: a debit is refunded at most once), so the
entries of a grant always add up to what it has spent.  Whether a debit may be refunded
(its job read no data) is the caller's decision (``sandbox.jobs.refunds``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    Table,
    bindparam,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from i18n import Msg

# The ``X as X`` imports (and TIERS) are names this module had before policies.budget and
# policies.tiers, still importable from here: tests, reliability/ and node/ use them.
from policies.budget import DELTA_UNIT as DELTA_UNIT
from policies.budget import EPSILON_UNIT as EPSILON_UNIT
from policies.budget import MAX_EPSILON as MAX_EPSILON
from policies.budget import Budget, summary
from policies.budget import delta_units as delta_units
from policies.budget import epsilon_units as epsilon_units
from policies.db import Base, UTCDateTime, new_id, utcnow
from policies.errors import Conflict, InvalidRequest, NotFound
from policies.tiers import ALL_TIERS

TIERS = ALL_TIERS  # policies.tiers is where tiers live


class Grant(Base):
    __tablename__ = "grants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    enterprise_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    dataset_ids: Mapped[list[str]] = mapped_column(JSON)
    columns: Mapped[list[str]] = mapped_column(JSON)
    tiers: Mapped[list[int]] = mapped_column(JSON)
    purposes: Mapped[list[str]] = mapped_column(JSON)
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime] = mapped_column(UTCDateTime)
    # Tier 2: smallest releasable cell; never below the platform floor.
    min_group_size: Mapped[int] = mapped_column(Integer, default=10)
    epsilon_budget: Mapped[int] = mapped_column(BigInteger)
    delta_budget: Mapped[int] = mapped_column(BigInteger)
    epsilon_spent: Mapped[int] = mapped_column(BigInteger, default=0)
    delta_spent: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Made on the enterprise's node: the grant as the node signed it ({document, signature}).
    node_signed: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    # Commitment letters (docs/commitments.md): a grant made while they are required is in
    # force only once its provider signed the letter (``letter_signed_at``).
    letter_required: Mapped[bool] = mapped_column(Boolean, default=False)
    letter_signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    def active_at(self, now: datetime) -> bool:
        return (
            self.revoked_at is None
            and self.valid_from <= now < self.valid_until
            and self.letter_in_force
        )

    @property
    def letter_in_force(self) -> bool:
        """Whether the grant's commitment letter, if it needs one, is signed."""
        return not self.letter_required or self.letter_signed_at is not None

    @property
    def budget_total(self) -> Budget:
        """What the grant allows in all (its columns, in the ledger's units)."""
        return Budget(self.epsilon_budget, self.delta_budget)

    @property
    def budget_spent(self) -> Budget:
        """What its jobs have spent of it (net of refunds)."""
        return Budget(self.epsilon_spent, self.delta_spent)

    @property
    def budget_left(self) -> Budget:
        """What is left to spend."""
        return self.budget_total - self.budget_spent

    def budget(self) -> dict[str, float]:
        """The budget as the API shows it (:func:`policies.budget.summary`)."""
        return summary(self.budget_total, self.budget_spent)


class BudgetDebit(Base):
    """One entry of the budget ledger: a debit of a grant's budget, written with the job it
    pays for, or the refund of one (negative amounts, ``refund_of`` naming the debit)."""

    __tablename__ = "budget_debits"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"), index=True)
    job_id: Mapped[str] = mapped_column(String(40), index=True)
    epsilon: Mapped[int] = mapped_column(BigInteger)
    delta: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Unique: the database itself refuses a second refund of one debit.
    refund_of: Mapped[str | None] = mapped_column(String(40), unique=True, default=None)

    @property
    def is_refund(self) -> bool:
        """Whether this entry gives a debit back (its stored amounts are negative)."""
        return self.refund_of is not None

    @property
    def amount(self) -> Budget:
        """How much this entry moved, as a (non-negative) budget: spent by a debit,
        given back by a refund (:attr:`is_refund`)."""
        return Budget(abs(self.epsilon), abs(self.delta))


@dataclass(frozen=True)
class GrantTerms:
    """What an enterprise grants; checked by :func:`create_grant`."""

    provider_id: str
    dataset_ids: tuple[str, ...]
    columns: tuple[str, ...]
    tiers: tuple[int, ...]
    purposes: tuple[str, ...]
    valid_from: datetime
    valid_until: datetime
    epsilon: float
    delta: float = 0.0
    min_group_size: int | None = None  # tier 2; None = the platform floor
    letter_required: bool = False  # in force only once the provider signed its letter


@dataclass(frozen=True)
class GrantChange:
    """A narrowing (or a validity extension) of a grant; None leaves a field as it is."""

    columns: tuple[str, ...] | None = None
    tiers: tuple[int, ...] | None = None
    purposes: tuple[str, ...] | None = None
    epsilon: float | None = None
    delta: float | None = None
    valid_until: datetime | None = None
    min_group_size: int | None = None


def _check_terms(terms: GrantTerms) -> None:
    if not terms.dataset_ids:
        raise InvalidRequest(Msg("a grant needs at least one dataset"))
    if not terms.columns:
        raise InvalidRequest(Msg("a grant needs at least one column"))
    if not terms.tiers or not set(terms.tiers) <= ALL_TIERS:
        raise InvalidRequest(Msg("tiers must be a non-empty list of numbers from 0 to 5"))
    purposes = [p.strip() for p in terms.purposes]
    # Purposes are shown in denials, the audit log and receipts: nothing that can hide or
    # reorder text there (control characters, bidirectional overrides).
    if not purposes or any(not p or len(p) > 64 or not p.isprintable() for p in purposes):
        raise InvalidRequest(
            Msg("purposes must be a non-empty list of names of 1-64 printable characters")
        )
    if terms.valid_from.tzinfo is None or terms.valid_until.tzinfo is None:
        raise InvalidRequest(Msg("valid_from and valid_until need a time zone, e.g. '...Z'"))
    if terms.valid_until <= terms.valid_from:
        raise InvalidRequest(Msg("valid_until must be after valid_from"))


def create_grant(
    session: Session, enterprise_id: str, terms: GrantTerms, *, min_group_floor: int
) -> Grant:
    """Store a grant (caller checked that the datasets, columns and provider exist)."""
    _check_terms(terms)
    total = Budget.from_floats(terms.epsilon, terms.delta)
    min_group = terms.min_group_size if terms.min_group_size is not None else min_group_floor
    if min_group < min_group_floor:
        raise InvalidRequest(
            Msg(
                "min_group_size may not be below the platform floor of {min_group_floor}",
                min_group_floor=min_group_floor,
            )
        )
    grant = Grant(
        id=new_id("gr"),
        enterprise_id=enterprise_id,
        provider_id=terms.provider_id,
        dataset_ids=sorted(set(terms.dataset_ids)),
        columns=sorted(set(terms.columns)),
        tiers=sorted(set(terms.tiers)),
        purposes=sorted({p.strip() for p in terms.purposes}),
        valid_from=terms.valid_from,
        valid_until=terms.valid_until,
        min_group_size=min_group,
        epsilon_budget=total.epsilon_units,
        delta_budget=total.delta_units,
        epsilon_spent=0,
        delta_spent=0,
        created_at=utcnow(),
        letter_required=terms.letter_required,
    )
    session.add(grant)
    session.flush()
    return grant


def visible_grant(session: Session, grant_id: str, principal_id: str) -> Grant:
    """A grant its enterprise or its provider may see; anyone else gets :class:`NotFound`."""
    return visible(session.get(Grant, grant_id), grant_id, principal_id)


def visible(grant: Grant | None, grant_id: str, principal_id: str) -> Grant:
    """``grant`` (read by id ``grant_id``; None: there is none) if ``principal_id`` is its
    enterprise or its provider; :class:`NotFound` otherwise, exactly as for a missing one."""
    if grant is None or principal_id not in (grant.enterprise_id, grant.provider_id):
        raise NotFound("grant", grant_id)
    return grant


def revoke_grant(session: Session, grant: Grant) -> None:
    if grant.revoked_at is not None:
        raise Conflict(Msg("this grant is already revoked"))
    grant.revoked_at = utcnow()
    session.flush()


def _narrowed(name: str, new: tuple[object, ...] | None, old: list[Any]) -> list[Any] | None:
    if new is None:
        return None
    if not new:
        raise InvalidRequest(
            Msg(
                "{name} cannot become empty; revoke the grant instead",
                name=name,
            )
        )
    extra = sorted(str(v) for v in set(new) - set(old))
    if extra:
        raise InvalidRequest(
            Msg(
                "{name} can only be narrowed; not in the grant now: {extra} "
                "(create a new grant to give more)",
                name=name,
                extra=", ".join(extra),
            )
        )
    return sorted(set(new))


def change_grant(
    session: Session, grant: Grant, change: GrantChange, now: datetime
) -> dict[str, dict[str, Any]]:
    """Narrow a grant or extend its validity; return {field: {before, after}} of what changed."""
    if grant.revoked_at is not None:
        raise Conflict(Msg("a revoked grant cannot be changed; create a new one"))
    before = describe(grant)
    for name in ("columns", "tiers", "purposes"):
        narrowed = _narrowed(name, getattr(change, name), getattr(grant, name))
        if narrowed is not None:
            setattr(grant, name, narrowed)
    _change_budget(session, grant, change)
    if change.valid_until is not None:
        if change.valid_until.tzinfo is None or change.valid_until <= now:
            raise InvalidRequest(Msg("valid_until must be a time in the future, with a time zone"))
        grant.valid_until = change.valid_until
    if change.min_group_size is not None:
        if change.min_group_size < grant.min_group_size:
            raise InvalidRequest(Msg("min_group_size can only be raised"))
        grant.min_group_size = change.min_group_size
    session.flush()
    after = describe(grant)
    return {k: {"before": before[k], "after": after[k]} for k in after if before[k] != after[k]}


def _change_budget(session: Session, grant: Grant, change: GrantChange) -> None:
    if change.epsilon is not None:
        units = Budget.from_floats(change.epsilon).epsilon_units
        if not _lower(session, grant, "epsilon", units):
            raise InvalidRequest(
                Msg(
                    "epsilon can only be lowered, and not below what was spent ({spent})",
                    spent=grant.budget_spent.epsilon_text,
                )
            )
    delta = None if change.delta is None else Budget.from_floats(0.0, change.delta).delta_units
    if delta is not None and not _lower(session, grant, "delta", delta):
        raise InvalidRequest(Msg("delta can only be lowered, and not below what was spent"))


def _lower(session: Session, grant: Grant, name: str, units: int) -> bool:
    """Set the ``name`` budget to ``units`` if that lowers it (or keeps it) and is not below
    what was spent, in one conditional UPDATE: checked in Python, a debit committed meanwhile
    by another process (PostgreSQL) could leave more spent than the new budget."""
    budget, spent = getattr(Grant, f"{name}_budget"), getattr(Grant, f"{name}_spent")
    result = session.execute(
        update(Grant)
        .where(Grant.id == grant.id, spent <= units, budget >= units)
        .values({budget: units})
        .execution_options(synchronize_session=False)
    )
    session.refresh(grant, [f"{name}_budget", f"{name}_spent"])
    return bool(result.rowcount == 1)


def grants_for(session: Session, provider_id: str, dataset_id: str) -> list[Grant]:
    rows = session.scalars(select(Grant).where(Grant.provider_id == provider_id))
    return [g for g in rows if dataset_id in g.dataset_ids]


_grants: Table = Grant.__table__  # type: ignore[assignment]
# Built once (building a statement and its cache key costs as much as running it); Core
# statements on the table, so the ORM's bulk-update machinery is not involved either.
_SPEND = (
    update(_grants)
    .where(
        _grants.c.id == bindparam("grant_id"),
        _grants.c.revoked_at.is_(None),
        _grants.c.epsilon_spent + bindparam("epsilon") <= _grants.c.epsilon_budget,
        _grants.c.delta_spent + bindparam("delta") <= _grants.c.delta_budget,
    )
    .values(
        epsilon_spent=_grants.c.epsilon_spent + bindparam("epsilon"),
        delta_spent=_grants.c.delta_spent + bindparam("delta"),
    )
)
# The exact reversal of a spend this transaction made (its row is locked by that spend).
_UNSPEND = (
    update(_grants)
    .where(_grants.c.id == bindparam("grant_id"))
    .values(
        epsilon_spent=_grants.c.epsilon_spent - bindparam("epsilon"),
        delta_spent=_grants.c.delta_spent - bindparam("delta"),
    )
)


def spend(session: Session, grant_id: str, cost: Budget) -> bool:
    """Add ``cost`` to what grant ``grant_id`` has spent, in one conditional ``UPDATE``;
    False (and nothing spent) if it would overspend or the grant is revoked.  The ledger
    entry is the caller's (:func:`debit` writes it)."""
    params = {"grant_id": grant_id, "epsilon": cost.epsilon_units, "delta": cost.delta_units}
    return bool(session.connection().execute(_SPEND, params).rowcount == 1)


def unspend(session: Session, grant_id: str, cost: Budget) -> None:
    """Take back a :func:`spend` of ``cost`` made earlier in this transaction (nothing else
    may have changed the row since: the spend holds its lock)."""
    params = {"grant_id": grant_id, "epsilon": cost.epsilon_units, "delta": cost.delta_units}
    session.connection().execute(_UNSPEND, params)


def ledger_entry(session: Session, grant_id: str, job_id: str, cost: Budget) -> None:
    """The ledger's entry for a debit of ``cost`` (written with the session's next flush)."""
    session.add(new_entry(grant_id, job_id, cost))


def new_entry(grant_id: str, job_id: str, cost: Budget) -> BudgetDebit:
    """The ledger's entry for a debit of ``cost``, not yet written."""
    return BudgetDebit(
        id=new_id("deb"),
        grant_id=grant_id,
        job_id=job_id,
        epsilon=cost.epsilon_units,
        delta=cost.delta_units,
        created_at=utcnow(),
        refund_of=None,
    )


def spent_changed(session: Session, grant: Grant) -> None:
    """``grant``'s spent amounts changed in the database: they load again if read."""
    if grant in session:
        session.expire(grant, ["epsilon_spent", "delta_spent"])


def debit(session: Session, grant: Grant, job_id: str, cost: Budget | int, delta: int = 0) -> bool:
    """Debit ``cost`` from ``grant`` atomically; False (and nothing spent) if it would
    overspend or is revoked.  (``cost`` may still be given as ε and δ in units.)

    ``grant``'s spent amounts are expired, not read back: they load again (from this
    transaction) only if something reads them."""
    if not isinstance(cost, Budget):
        cost = Budget(cost, delta)
    if not spend(session, grant.id, cost):
        return False
    ledger_entry(session, grant.id, job_id, cost)
    spent_changed(session, grant)
    return True


def refund(session: Session, debit: BudgetDebit, now: datetime) -> BudgetDebit | None:
    """Give ``debit`` back to its grant, exactly, as a new negative ledger entry; None (and
    nothing changed) if it is a refund itself or was refunded already.

    Runs in the caller's transaction, inside a savepoint: the entry and the grant's spend
    change together or not at all.
    """
    if debit.refund_of is not None:
        return None
    entry = BudgetDebit(
        id=new_id("ref"),
        grant_id=debit.grant_id,
        job_id=debit.job_id,
        epsilon=-debit.epsilon,
        delta=-debit.delta,
        created_at=now,
        refund_of=debit.id,
    )
    savepoint = session.begin_nested()
    try:
        session.add(entry)
        session.flush()  # the unique refund_of: a second refund of this debit stops here
    except IntegrityError:
        savepoint.rollback()
        return None
    restored = session.execute(
        update(Grant)
        .where(
            Grant.id == debit.grant_id,
            Grant.epsilon_spent >= debit.epsilon,
            Grant.delta_spent >= debit.delta,
        )
        .values(
            epsilon_spent=Grant.epsilon_spent - debit.epsilon,
            delta_spent=Grant.delta_spent - debit.delta,
        )
        .execution_options(synchronize_session=False)
    )
    if restored.rowcount != 1:  # less spent than this debit: the ledger is off, change nothing
        savepoint.rollback()
        return None
    savepoint.commit()
    return entry


def describe(grant: Grant) -> dict[str, Any]:
    """The grant as its enterprise and provider see it."""
    return {
        "id": grant.id,
        "enterprise_id": grant.enterprise_id,
        "provider_id": grant.provider_id,
        "dataset_ids": grant.dataset_ids,
        "columns": grant.columns,
        "tiers": grant.tiers,
        "purposes": grant.purposes,
        "valid_from": grant.valid_from,
        "valid_until": grant.valid_until,
        "revoked_at": grant.revoked_at,
        "min_group_size": grant.min_group_size,
        "budget": grant.budget(),
        "letter_required": grant.letter_required,
        "letter_signed_at": grant.letter_signed_at,
    }
