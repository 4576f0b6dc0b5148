"""The audit chain: appends link up; any edit, deletion, insertion or reordering is caught."""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from keys import KeyService, SigningPublicKey
from policies import audit, audit_export
from policies.principals import Principal
from sandbox.store.database import Database, migrate
from tests.policies.chains import CHAIN_HASHES, append, rehash


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    migrate(url)
    database = Database(url)
    yield database
    database.dispose()


def _fill(db: Database, n: int, chain_hash: str = audit.SHA256) -> None:
    """``n`` events; a chain meant for SM3 switches to it at ``chains.SWITCH_AT``."""
    for i in range(n):
        with db.transaction() as session:
            append(
                session,
                chain_hash,
                tenant_id="ent_a",
                resource=f"thing:{i}",
                details={"i": i, "text": "é ✓"},
            )


def _keys(keys: KeyService) -> dict[int, SigningPublicKey]:
    return {k.key_version: k for k in keys.signing_public_keys()}


@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
def test_events_form_a_chain(db: Database, chain_hash: str) -> None:
    _fill(db, 5, chain_hash)
    with db.transaction() as session:
        events = session.query(audit.AuditEvent).order_by(audit.AuditEvent.seq).all()
        assert [e.seq for e in events] == [1, 2, 3, 4, 5]
        assert events[0].prev_hash == audit.GENESIS
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
        report = audit.verify(session, {})
    assert report.ok and report.events == 5


@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
def test_an_event_is_rolled_back_with_its_change(db: Database, chain_hash: str) -> None:
    _fill(db, 4, chain_hash)
    with pytest.raises(RuntimeError), db.transaction() as session:
        audit.record(session, "doomed")
        raise RuntimeError("the change failed")
    with db.transaction() as session:
        assert session.query(audit.AuditEvent).count() == 4
        assert audit.verify(session, {}).ok
    _fill(db, 1)  # and the chain carries on from the last committed event
    with db.transaction() as session:
        assert audit.verify(session, {}).ok


@pytest.mark.integration
@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
def test_checkpoints_are_signed_and_verified(
    db: Database, keys: KeyService, chain_hash: str
) -> None:
    _fill(db, 3, chain_hash)
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
    # In the form CanonicalJSON writes, so that verification hashes the stored text as it is.
    "edited, canonical text": (
        'UPDATE audit_events SET details = \'{"i"\\:99,"text":"\\u00e9 \\u2713"}\' WHERE seq = 3',
        3,
    ),
    # Text moved from one field into another: the bytes hashed keep their order, the fields
    # do not (details swallow the outcome, the outcome is emptied).
    "text moved between fields": (
        "UPDATE audit_events SET details = substr(details, 1, length(details) - 1) "
        "|| ',\"outcome\":\"ok\"}', outcome = '' WHERE seq = 5",
        5,
    ),
}


@pytest.mark.integration
@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
@pytest.mark.parametrize("case", sorted(TAMPERING))
def test_tampering_is_reported_at_the_first_bad_event(
    db: Database, keys: KeyService, case: str, chain_hash: str
) -> None:
    _fill(db, 8, chain_hash)
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
@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
def test_rewriting_history_with_recomputed_hashes_is_caught_by_the_signature(
    db: Database, keys: KeyService, chain_hash: str
) -> None:
    _fill(db, 4, chain_hash)
    with db.transaction() as session:
        audit.checkpoint(session, keys.sign)
    # A database administrator edits event 2 and recomputes every hash after it.
    with db.transaction() as session:
        events = session.query(audit.AuditEvent).order_by(audit.AuditEvent.seq).all()
        events[1].details = {"i": 1, "text": "rewritten"}
        head = session.get(audit.AuditHead, 1)
        assert head is not None
        head.hash = rehash(events)
    with db.transaction() as session:
        report = audit.verify(session, _keys(keys))
    assert not report.ok
    assert report.first_bad_seq == 4 and "checkpoint" in (report.problem or "")


# -- the fast canonical form (verification, exports) ----------------------------------------------

TRICKY_STRINGS = [
    "",
    "plain",
    "é ✓ 上海 Ōsaka",
    "emoji 🏭 beyond the BMP",
    'quotes " and \\ backslashes / slash',
    "control \x00 \x01 \x1f \t \n \r \x7f",
    "\u2028\u2029 line separators",
    ',"outcome":"ok","resource":null',  # the export line's key text, inside a value
    "null",
    "NaN",
]
TRICKY_NUMBERS: list[Any] = [
    0,
    -1,
    2**70,
    -(2**64),
    0.1,
    -0.0,
    1e16,
    1.5e-7,
    5e-324,
    1.7976931348623157e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    True,
    False,
    None,
]


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(6 if depth < 3 else 3)
    if kind == 0:
        return rng.choice(TRICKY_STRINGS)
    if kind in (1, 2):
        return rng.choice(TRICKY_NUMBERS)
    if kind == 3:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return _details(rng, depth + 1)


def _details(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    keys = ["b", "a", "Z", "é", "outcome", "resource", "hash", "type", "", "10", "9", "🏭"]
    return {k: _value(rng, depth) for k in rng.sample(keys, rng.randrange(len(keys)))}


def _varied(db: Database, n: int) -> None:
    """``n`` events with every kind of value an event can hold, appended with ``record``."""
    rng = random.Random(20260105)  # noqa: S311 - test data, not secrets
    zones = [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-3, minutes=-30))]
    with db.transaction() as session:
        for i in range(n):
            at = datetime(2026, 1, 5, tzinfo=UTC) + timedelta(
                days=rng.randrange(-20000, 2000), microseconds=rng.randrange(10**9)
            )
            if i % 7 == 0:
                at = at.replace(microsecond=0)  # SQLite still stores ".000000"
            actor = None
            if i % 3:
                actor = Principal(id=f"prv_{i:032x}", role=rng.choice(["provider", "é✓"]))
            audit.record(
                session,
                rng.choice(["job.submitted", "auth.failed", "x\u2028y", ""]),
                actor=actor,
                outcome=rng.choice(list(audit.Outcome)),
                tenant_id=rng.choice([None, "ent_a", "ent_🏭"]),
                resource=rng.choice([None, *TRICKY_STRINGS]),
                details=_details(rng),
                at=at.astimezone(rng.choice(zones)),
            )


def _raw_rows(db: Database) -> list[Sequence[Any]]:
    with db.transaction() as session:
        return [row for batch in audit.event_rows(session.connection()) for row in batch]


def _orm_canonical(db: Database, seq: int) -> bytes | Exception:
    """What ``AuditEvent.canonical()`` gives for the event loaded by the ORM, or the error."""
    try:
        with db.transaction() as session:
            event = session.get(audit.AuditEvent, seq)
            assert event is not None
            return event.canonical()
    except Exception as error:  # compared with the fast path's outcome by the caller
        return error


def test_the_fast_canonical_form_is_byte_identical_to_the_definition(db: Database) -> None:
    _varied(db, 400)
    rows = _raw_rows(db)
    assert len(rows) == 400
    canonical = audit.row_canonicalizer(db.engine.dialect)
    with db.transaction() as session:
        events = session.query(audit.AuditEvent).order_by(audit.AuditEvent.seq).all()
        for row, event in zip(rows, events, strict=True):
            assert canonical(row) == event.canonical(), event.seq
            line = audit_export.canonical_json({"type": "event"} | event.to_dict())
            assert audit_export.event_line(canonical(row), row[9], row[10]) == line
        report = audit.verify(session, {})
    assert report.ok and report.events == 400


def test_details_are_stored_in_their_canonical_form(db: Database) -> None:
    """What CanonicalJSON writes is the canonical text, so verification hashes it unparsed:
    over 400 varied events the candidate bytes are the exact ones, and the whole chain
    verifies without once falling back."""
    _varied(db, 400)
    rows = _raw_rows(db)
    exact = audit.row_canonicalizer(db.engine.dialect)
    candidate = audit.row_canonicalizer(db.engine.dialect, stored_details=True)
    for row in rows:
        assert row[8] == audit.encode_canonical(json.loads(row[8])), row[0]
        assert candidate(row) == exact(row), row[0]

    def no_fallback(row: Sequence[Any]) -> bytes:
        raise AssertionError(f"event {row[0]} fell back")

    walked = audit._walk_chain([rows], candidate, set(), fallback=no_fallback)
    assert not isinstance(walked, audit.VerifyReport) and walked[0] == 400


@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
@pytest.mark.parametrize(
    "stored",
    [
        '{"text":"\\u00e9 \\u2713","i":1}',  # compact, keys not sorted
        '{"i":1,"text":"\u00e9 \u2713"}',  # compact, not ASCII
        '{"i": 1, "text": "\\u00e9 \\u2713"}',  # as JSON's default serializer writes
        '{"i":1,"text":"\\u00E9 \\u2713"}',  # upper-case escape
    ],
)
def test_the_same_details_in_another_text_still_verify(
    db: Database, stored: str, chain_hash: str
) -> None:
    """Details rewritten as other JSON text for the same value (or written before
    CanonicalJSON, as JSON's default serializer writes them) hash as the ORM's value does."""
    _fill(db, 4, chain_hash)
    with db.engine.begin() as conn:
        rewritten = conn.execute(
            text("UPDATE audit_events SET details = :d WHERE json_extract(details, '$.i') = 1"),
            {"d": stored},
        )
        assert rewritten.rowcount == 1
    with db.transaction() as session:
        assert audit.verify(session, {}) == audit.VerifyReport(4, 0)


# Rows Veil never writes, put in the database by hand: the fast path must give what the ORM
# gives, or fail where the ORM fails.
ODD_ROWS: dict[str, dict[str, Any]] = {
    "time with a T": {"at": "2026-01-05T08:00:00.000001"},
    "time without microseconds": {"at": "2026-01-05 08:00:00"},
    "time in milliseconds": {"at": "2026-01-05 08:00:00.123"},
    "time with a zone": {"at": "2026-01-05 08:00:00.000001+02:00"},
    "ISO week date": {"at": "2026-W02-1 08:00:00.000001"},
    "impossible date": {"at": "2026-02-30 08:00:00.000001"},
    "time as a number": {"at": 20260105},
    "details with spaces around": {"details": '  {"b": 1, "a": [1, 2]}\n'},
    "details not an object": {"details": "[1, 2.50, null]"},
    "details a number": {"details": 7},
    "details a float": {"details": 2.5},
    "details as bytes": {"details": b'{"a": 1}'},
    "details with a BOM": {"details": '\ufeff{"a": 1}'},
    "details with extra data": {"details": '{"a": 1} {"b": 2}'},
    "details not JSON": {"details": "not json"},
    "details with NaN": {"details": '{"a": NaN, "b": -Infinity}'},
    "details with duplicate keys": {"details": '{"a": 1, "a": 2}'},
    "details deeply nested": {"details": "[" * 100_000 + "]" * 100_000},
    "actor as bytes": {"actor_id": b"prv_1"},
    "action as bytes": {"action": b"test.event"},
    "resource as a number": {"resource": 12},
    "outcome as a number": {"outcome": 5},
}


@pytest.mark.parametrize("case", sorted(ODD_ROWS))
def test_the_fast_canonical_form_matches_the_orm_on_rows_veil_never_writes(
    db: Database, case: str
) -> None:
    _fill(db, 1)
    values: dict[str, Any] = {
        "at": "2026-01-05 08:00:00.000001",
        "actor_id": "prv_1",
        "actor_role": "provider",
        "tenant_id": "ent_a",
        "action": "test.event",
        "outcome": "ok",
        "resource": None,
        "details": "{}",
    } | ODD_ROWS[case]
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO audit_events (seq, at, actor_id, actor_role, tenant_id, action, "
            "outcome, resource, details, prev_hash, hash) "
            "VALUES (2, ?, ?, ?, ?, ?, ?, ?, ?, '', '')",
            tuple(values[k] for k in audit.EVENT_COLUMNS[1:9]),
        )
    row = _raw_rows(db)[1]
    expected = _orm_canonical(db, 2)
    canonical = audit.row_canonicalizer(db.engine.dialect)
    if isinstance(expected, Exception):
        with pytest.raises(audit.UNREADABLE):
            canonical(row)
    else:
        assert canonical(row) == expected


ODD_DETAILS = {
    "compact, keys not sorted": '{"b":1,"a":2}',
    "compact, not ASCII": '{"a":"\u00e9"}',
    "compact, a float in another form": '{"a":1.50,"b":1e-6}',
    "compact, not JSON": '{"a":1',
    "compact, NaN": '{"a":NaN}',
    "compact, space before a colon": '{"a" :1}',
    "compact, trailing newline": '{"a":1}\n',
}


@pytest.mark.parametrize("case", sorted(ODD_ROWS) + sorted(ODD_DETAILS))
def test_verification_agrees_with_the_orm_on_rows_veil_never_writes(
    db: Database, case: str
) -> None:
    """An odd row hashed as the ORM loads it verifies; one the ORM cannot load is altered."""
    _fill(db, 1)
    values: dict[str, Any] = {
        "at": "2026-01-05 08:00:00.000001",
        "actor_id": "prv_1",
        "actor_role": "provider",
        "tenant_id": "ent_a",
        "action": "test.event",
        "outcome": "ok",
        "resource": None,
        "details": "{}",
    } | ODD_ROWS.get(case, {"details": ODD_DETAILS.get(case)})
    with db.transaction() as session:
        prev = session.get(audit.AuditEvent, 1)
        assert prev is not None
        prev_hash = prev.hash
    with db.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO audit_events (seq, at, actor_id, actor_role, tenant_id, action, "
            "outcome, resource, details, prev_hash, hash) "
            "VALUES (2, ?, ?, ?, ?, ?, ?, ?, ?, ?, '')",
            (*(values[k] for k in audit.EVENT_COLUMNS[1:9]), prev_hash),
        )
    expected = _orm_canonical(db, 2)
    if not isinstance(expected, Exception):
        with db.engine.begin() as conn:
            conn.execute(
                text("UPDATE audit_events SET hash = :h WHERE seq = 2"),
                {"h": audit.chain_hash(prev_hash, expected)},
            )
            conn.execute(text("UPDATE audit_head SET seq = 2, hash = :h"),
                         {"h": audit.chain_hash(prev_hash, expected)})  # fmt: skip
    with db.transaction() as session:
        report = audit.verify(session, {})
    if isinstance(expected, Exception):
        assert (report.first_bad_seq, report.ok) == (2, False), report
    else:
        assert report == audit.VerifyReport(2, 0)


@pytest.mark.parametrize(
    "text_",
    [
        '{"a": 1}',
        '{"a": 1}\n',
        '  {"a": 1}',
        '{"a": 1}  \r\n',
        '\ufeff{"a": 1}',
        '{"a": 1}{"b": 2}',
        '{"a": 1',
        '"text"',
        "[1, 2.50, NaN]",
        "",
        "\n",
    ],
)
def test_load_json_is_json_loads(text_: str) -> None:
    try:
        expected: Any = json.loads(text_)
    except ValueError:
        with pytest.raises(ValueError):
            audit.load_json(text_)
    else:
        assert json.dumps(audit.load_json(text_)) == json.dumps(expected)


@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
@pytest.mark.parametrize("batch", [1, 2, 3, 4096])
def test_verification_reads_in_batches_and_still_names_the_first_bad_event(
    db: Database, monkeypatch: pytest.MonkeyPatch, batch: int, chain_hash: str
) -> None:
    monkeypatch.setattr(audit, "_READ_BATCH", batch)
    _fill(db, 7, chain_hash)
    with db.transaction() as session:
        assert audit.verify(session, {}) == audit.VerifyReport(7, 0)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE audit_events SET prev_hash = hash WHERE seq = 4"))
    with db.transaction() as session:
        report = audit.verify(session, {})
    assert (report.first_bad_seq, report.problem) == (4, "event 4 was altered or moved")


@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
@pytest.mark.parametrize(
    ("statement", "first_bad"),
    [
        ("UPDATE audit_events SET details = 'not json' WHERE seq = 3", 3),
        ("UPDATE audit_events SET details = 'not json' WHERE seq = 4", 4),
        ("UPDATE audit_events SET at = '2026-02-30 08:00:00.000000' WHERE seq = 2", 2),
        ("UPDATE audit_events SET seq = 0 WHERE seq = 1", 1),
    ],
)
def test_an_unreadable_or_misplaced_event_is_reported_not_raised(
    db: Database, statement: str, first_bad: int, chain_hash: str
) -> None:
    _fill(db, 4, chain_hash)
    with db.engine.begin() as conn:
        conn.execute(text(statement))
    with db.transaction() as session:
        report = audit.verify(session, {})
    assert not report.ok and report.first_bad_seq == first_bad, report


def test_verification_needs_no_write_lock(db: Database) -> None:
    """A plain (deferred) read transaction is enough: writers carry on meanwhile, and the
    reader keeps verifying the snapshot it started with."""
    _fill(db, 3)
    reader = create_engine(db.url)  # no BEGIN IMMEDIATE: SQLite's default deferred reads
    try:
        with reader.connect() as conn:
            conn.exec_driver_sql("BEGIN")
            assert audit.verify(conn, {}) == audit.VerifyReport(3, 0)
            _fill(db, 2)  # a writer commits while the read transaction is open
            assert audit.verify(conn, {}) == audit.VerifyReport(3, 0)
            conn.rollback()
            assert audit.verify(conn, {}) == audit.VerifyReport(5, 0)
    finally:
        reader.dispose()
