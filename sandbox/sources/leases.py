"""Who may read a source: its lease (``SourceState.claimed_by`` / ``claimed_until``).

Every run takes the source's lease first, an atomic update, so that several processes on
one database (each ``veil worker``, ``veil serve``, ``veil node run`` runs a scheduler; an
API request runs a source now) never read a source at once; a run stores only while it
holds the lease (``sandbox.sources.runs``).

A **continuous** source (MQTT; OPC UA subscribed: ``kinds.continuous``) holds what it
received until a run stores it, and its cursors name the opening that issued them
(``sandbox.sources.held``): it must have **one reader**. The scheduler that runs it keeps
its lease between runs, not only during them: it renews the leases it holds at each poll
(``renew``), runs its own due sources while it holds them (``due_sources``, ``keep``), and
gives them back when it stops (``give_back``). No other scheduler or run-now reads the
source meanwhile; a run now asks the holder to run it (``queue``). A lease that runs out
(its process died or hung for ``VEIL_SOURCE_LEASE_S``) may be taken by another reader,
which opens the source afresh; the scheduler that held it learns so from ``renew`` or
``keep`` and closes its copy. Between runs the lease is held for ``VEIL_SOURCE_HOLD_S``
(renewed at every poll), during a run for ``VEIL_SOURCE_LEASE_S``: a reader whose process
died is replaced within the first. A lease holder is told apart from a single run by its owner's
prefix (``SCHEDULER``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, or_, select, update

from policies.db import new_id
from sandbox.runtime.veil import Veil
from sandbox.store.source_models import SourceState

#: The prefix of a scheduler's owner id; a single run's (run now) is ``run``.
SCHEDULER = "sched"


def scheduler_owner() -> str:
    """A new scheduler's owner id."""
    return new_id(SCHEDULER)


def run_owner() -> str:
    """The owner id of one run now."""
    return new_id("run")


def held_by_scheduler(owner: str | None) -> bool:
    return owner is not None and owner.startswith(SCHEDULER + "_")


def _until(veil: Veil, now: datetime) -> datetime:
    """A run's lease: as long as a run may take (``VEIL_SOURCE_LEASE_S``)."""
    return now + timedelta(seconds=veil.settings.source_lease_s)


def _held_until(veil: Veil, now: datetime) -> datetime:
    """A continuous source's lease between its runs (``VEIL_SOURCE_HOLD_S``), renewed at every
    poll: short, so that a reader whose process died is replaced within it."""
    return now + timedelta(seconds=veil.settings.source_hold_s)


def _free(now: datetime) -> ColumnElement[bool]:
    return or_(SourceState.claimed_until.is_(None), SourceState.claimed_until < now)


def due_sources(veil: Veil, owner: str | None = None) -> list[str]:
    """The sources whose next attempt is due and that no one else holds (``owner``'s own
    included)."""
    now = veil.clock()
    free = _free(now)
    with veil.db.read() as session:
        return list(
            session.scalars(
                select(SourceState.source_id)
                .where(SourceState.next_attempt_at <= now)
                .where(free if owner is None else or_(free, SourceState.claimed_by == owner))
                .order_by(SourceState.next_attempt_at)
            )
        )


def claim(veil: Veil, source_id: str, owner: str, *, due: bool = True) -> bool:
    """Take the source's lease, if no one holds it (``due``: only if its next attempt is
    due). A continuous source taken so is a new reader's: open it afresh."""
    now = veil.clock()
    with veil.db.transaction() as session:
        query = update(SourceState).where(SourceState.source_id == source_id).where(_free(now))
        if due:
            query = query.where(SourceState.next_attempt_at <= now)
        taken = session.execute(query.values(claimed_by=owner, claimed_until=_until(veil, now)))
        return bool(taken.rowcount == 1)


def keep(veil: Veil, source_id: str, owner: str, *, due: bool = True) -> bool:
    """Renew the lease ``owner`` still holds for a run (``due``: only if the run is due):
    ``True`` when no one else took it since ``owner`` did, so a copy ``owner`` kept open
    is still the source's one reader."""
    now = veil.clock()
    with veil.db.transaction() as session:
        query = update(SourceState).where(
            SourceState.source_id == source_id, SourceState.claimed_by == owner
        )
        if due:
            query = query.where(SourceState.next_attempt_at <= now)
        kept = session.execute(query.values(claimed_until=_until(veil, now)))
        return bool(kept.rowcount == 1)


def hold(veil: Veil, source_id: str, owner: str) -> None:
    """At the end of a run of a continuous source its scheduler keeps open: the lease stays
    ``owner``'s, renewed (if it is still ``owner``'s)."""
    now = veil.clock()
    with veil.db.transaction() as session:
        session.execute(
            update(SourceState)
            .where(SourceState.source_id == source_id, SourceState.claimed_by == owner)
            .values(claimed_until=_held_until(veil, now))
        )


def release(veil: Veil, source_id: str, owner: str) -> None:
    """Give back the lease of one source (if it is still ``owner``'s)."""
    with veil.db.transaction() as session:
        session.execute(
            update(SourceState)
            .where(SourceState.source_id == source_id, SourceState.claimed_by == owner)
            .values(claimed_by=None, claimed_until=None)
        )


def renew(veil: Veil, owner: str) -> set[str]:
    """Renew every lease ``owner`` holds (one update); the sources it still holds."""
    now = veil.clock()
    with veil.db.transaction() as session:
        session.execute(
            update(SourceState)
            .where(SourceState.claimed_by == owner)
            .values(claimed_until=_held_until(veil, now))
        )
        held = select(SourceState.source_id).where(SourceState.claimed_by == owner)
        return set(session.scalars(held))


def give_back(veil: Veil, owner: str) -> None:
    """Give back every lease ``owner`` holds (a scheduler that stops)."""
    with veil.db.transaction() as session:
        session.execute(
            update(SourceState)
            .where(SourceState.claimed_by == owner)
            .values(claimed_by=None, claimed_until=None)
        )


def queue(veil: Veil, source_id: str) -> bool:
    """Make the source due now for the scheduler that holds its lease: ``False`` when no
    scheduler holds it (it is free, or a single run holds it)."""
    now = veil.clock()
    with veil.db.transaction() as session:
        queued = session.execute(
            update(SourceState)
            .where(SourceState.source_id == source_id)
            .where(SourceState.claimed_by.startswith(SCHEDULER + "_", autoescape=True))
            .where(SourceState.claimed_until >= now)
            .values(next_attempt_at=now)
        )
        return bool(queued.rowcount == 1)
