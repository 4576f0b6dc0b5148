"""The audit chain: appends link up; any edit, deletion, insertion or reordering is caught."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from keys import KeyService, SigningPublicKey
from policies import audit
from sandbox.database import Database, migrate


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    migrate(url)
    database = Database(url)
    yield database
    database.dispose()


def _fill(db: Database, n: int) -> None:
    for i in range(n):
        with db.transaction() as session:
            audit.record(
                session,
                "test.event",
                tenant_id="ent_a",
                resource=f"thing:{i}",
                details={"i": i, "text": "é ✓"},
            )


def _keys(keys: KeyService) -> dict[int, SigningPublicKey]:
    return {k.key_version: k for k in keys.signing_public_keys()}


def test_events_form_a_chain(db: Database) -> None:
    _fill(db, 5)
    with db.transaction() as session:
        events = session.query(audit.AuditEvent).order_by(audit.AuditEvent.seq).all()
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        assert events[0].prev_hash == audit.GENESIS
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
        report = audit.verify(session, {})
    assert report.ok and report.events == 5


def test_an_event_is_rolled_back_with_its_change(db: Database) -> None:
    _fill(db, 2)
    with pytest.raises(RuntimeError), db.transaction() as session:
        audit.record(session, "doomed")
        raise RuntimeError("the change failed")
    with db.transaction() as session:
        assert session.query(audit.AuditEvent).count() == 2
        assert audit.verify(session, {}).ok
    _fill(db, 1)  # and the chain carries on from the last committed event
    with db.transaction() as session:
        assert audit.verify(session, {}).ok


@pytest.mark.integration
def test_checkpoints_are_signed_and_verified(db: Database, keys: KeyService) -> None:
    _fill(db, 3)
    with db.transaction() as session:
        cp = audit.checkpoint(session, keys.sign)
        assert cp is not None and cp.seq == 3
        assert audit.checkpoint(session, keys.sign) is cp  # nothing new: same checkpoint
    _fill(db, 2)
    with db.transaction() as session:
        report = audit.verify(session, _keys(keys))
    assert report.ok and report.checkpoints == 1


TAMPERING = {
    "edited": ("UPDATE audit_events SET details = '{\"i\": 99}' WHERE seq = 3", 3),
    "edited outcome": ("UPDATE audit_events SET outcome = 'denied' WHERE seq = 4", 4),
    "deleted": ("DELETE FROM audit_events WHERE seq = 3", 3),
    "reordered": ("", 2),  # statements below: swap rows 2 and 5
    "inserted": ("", 6),  # statements below: shift 6.. up and insert a forged event at 6
    "tail deleted": ("DELETE FROM audit_events WHERE seq >= 7", 7),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampering_is_reported_at_the_first_bad_event(
    db: Database, keys: KeyService, case: str
) -> None:
    _fill(db, 8)
    with db.transaction() as session:
        audit.checkpoint(session, keys.sign)
    statement, first_bad = TAMPERING[case]
    with db.engine.begin() as conn:
        if case == "reordered":  # swap two rows' positions without violating the primary key
            conn.execute(text("UPDATE audit_events SET seq = -2 WHERE seq = 2"))
            conn.execute(text("UPDATE audit_events SET seq = 2 WHERE seq = 5"))
            conn.execute(text("UPDATE audit_events SET seq = 5 WHERE seq = -2"))
        elif case == "inserted":
            for seq in (8, 7, 6):
                conn.execute(
                    text("UPDATE audit_events SET seq = :new WHERE seq = :old"),
                    {"new": seq + 1, "old": seq},
                )
            conn.execute(
                text(
                    "INSERT INTO audit_events (seq, at, action, outcome, details, prev_hash, hash) "
                    "SELECT 6, at, 'forged', 'ok', '{}', prev_hash, hash FROM audit_events "
                    "WHERE seq = 7"
                )
            )
        else:
            conn.execute(text(statement))
    with db.transaction() as session:
        report = audit.verify(session, _keys(keys))
    assert not report.ok
    assert report.first_bad_seq == first_bad, report


@pytest.mark.integration
def test_rewriting_history_with_recomputed_hashes_is_caught_by_the_signature(
    db: Database, keys: KeyService
) -> None:
    _fill(db, 4)
    with db.transaction() as session:
        audit.checkpoint(session, keys.sign)
    # A database administrator edits event 2 and recomputes every hash after it.
    with db.transaction() as session:
        events = session.query(audit.AuditEvent).order_by(audit.AuditEvent.seq).all()
        events[1].details = {"i": 1, "text": "rewritten"}
        prev = audit.GENESIS
        for e in events:
            e.prev_hash = prev
            e.hash = prev = audit.chain_hash(prev, e.canonical())
        head = session.get(audit.AuditHead, 1)
        assert head is not None
        head.hash = prev
    with db.transaction() as session:
        report = audit.verify(session, _keys(keys))
    assert not report.ok
    assert report.first_bad_seq == 4 and "checkpoint" in (report.problem or "")
