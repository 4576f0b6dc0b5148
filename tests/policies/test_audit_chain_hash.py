"""The audit chain's hash (issue 23): a switch is an event in the chain, the next appends
in every process use the new hash, and every verifier follows the switch events.  Each
way of forging around a switch is caught: the switch removed, its target altered, a fake
switch inserted, an SM3 tail rewritten as SHA-256 (the hashes recomputed, the signed
checkpoints catch it), the head's hash flipped without a switch.

(Every older tamper test of the chain also runs over a chain switched to SM3:
tests/policies/test_audit.py, test_audit_export.py, tests/sandbox/test_routine_verification.py.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from keys import CryptoProfile, Signature, SigningPublicKey
from keys.gm import sm3, sm3_chain_hash
from policies import audit
from policies.audit_export import canonical_json, export_lines, plan_export, verify_export
from sandbox.store.database import Database, migrate
from tests.policies.chains import rehash

_PRIVATE = Ed25519PrivateKey.generate()
PUBLIC = {
    1: SigningPublicKey(
        1,
        _PRIVATE.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        ),
    )
}


def sign(message: bytes) -> Signature:
    """A stand-in for the key server's Ed25519 key (same algorithm, same text format)."""
    return Signature(1, _PRIVATE.sign(message))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    migrate(url)
    database = Database(url)
    yield database
    database.dispose()


def _log(db: Database, count: int, checkpoint: bool = False) -> None:
    with db.transaction() as session:
        for _ in range(count):
            head = session.get(audit.AuditHead, 1)
            audit.record(session, "test.event", details={"i": (head.seq if head else 0) + 1})
        if checkpoint:
            audit.checkpoint(session, sign)


def _switch(db: Database, target: str) -> bool:
    with db.transaction() as session:
        return audit.switch_chain_hash(session, target)


def _switched(db: Database) -> None:
    """Events 1-4, a checkpoint, the switch to SM3 at 5, events 6-10, a checkpoint."""
    _log(db, 4, checkpoint=True)
    assert _switch(db, audit.SM3)
    _log(db, 5, checkpoint=True)


def _events(session: Session) -> list[audit.AuditEvent]:
    return list(session.scalars(select(audit.AuditEvent).order_by(audit.AuditEvent.seq)))


def _verify(db: Database, since: int | None = None) -> audit.VerifyReport:
    with db.transaction() as session:
        anchor = None
        if since is not None:
            event = session.get(audit.AuditEvent, since)
            assert event is not None
            anchor = (since, event.hash)
        return audit.verify(session, PUBLIC, since=anchor)


def _sql(db: Database, *statements: str) -> None:
    with db.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


# -- the switch ----------------------------------------------------------------------------------


def test_sm3_in_the_chain_is_keys_gm_sm3() -> None:
    prev, body = hashlib.sha256(b"prev").hexdigest(), b'{"seq":1}'
    assert audit.chain_hash(prev, body, audit.SM3) == sm3_chain_hash(prev, body)
    assert audit.chain_hash(prev, body) == audit.chain_hash(prev, body, audit.SHA256)
    fallback = audit._Sm3(b"abc")  # where Python's OpenSSL has no SM3
    assert fallback.digest() == sm3(b"abc") == audit.HASHERS[audit.SM3](b"abc").digest()
    assert fallback.hexdigest() == sm3(b"abc").hex()


def test_a_switch_is_an_event_and_the_events_after_it_use_the_new_hash(db: Database) -> None:
    _log(db, 2)
    assert _switch(db, audit.SM3)
    assert not _switch(db, audit.SM3)  # the hash in force: nothing recorded
    _log(db, 2)
    assert _switch(db, audit.SHA256)  # and back
    _log(db, 1)
    with db.transaction() as session:
        events = _events(session)
        head = session.get(audit.AuditHead, 1)
        assert head is not None and head.hash_alg == audit.SHA256
    switches = [(e.seq, e.details) for e in events if e.action == audit.SWITCH_ACTION]
    assert switches == [(3, {"from": "sha256", "to": "sm3"}), (6, {"from": "sm3", "to": "sha256"})]
    # The switch event is hashed with the old hash; every event after it with the new one.
    used = ["sha256"] * 3 + ["sm3"] * 3 + ["sha256"]
    for event, algorithm in zip(events, used, strict=True):
        assert event.hash == audit.chain_hash(event.prev_hash, event.canonical(), algorithm)
    assert _verify(db).ok and _verify(db).events == 7
    for anchor in range(1, 8):  # from every position: the hash in force there is found
        assert _verify(db, since=anchor).ok, anchor


def test_a_profile_names_its_hash_and_an_unknown_hash_is_refused(db: Database) -> None:
    with db.transaction() as session:
        assert audit.switch_chain_hash(session, CryptoProfile.GM)
        assert not audit.switch_chain_hash(session, audit.SM3)
        assert audit.chain_hash_after(session, 1) == audit.SM3
        assert audit.chain_hash_after(session, 0) == audit.SHA256
        with pytest.raises(ValueError, match="unknown audit chain hash"):
            audit.switch_chain_hash(session, "md5")
        assert audit.switch_chain_hash(session, CryptoProfile.STANDARD)


def test_a_switch_made_by_another_process_is_used_by_the_next_append(db: Database) -> None:
    """The hash in force is read with the head, under its lock, on every append."""
    other = Database(db.url)  # another process's engine and sessions
    try:
        _log(db, 1)
        with other.transaction() as session:
            audit.record(session, "elsewhere")
        _switch(db, audit.SM3)
        with other.transaction() as session:
            appended = audit.record(session, "elsewhere")
            assert appended.hash == audit.chain_hash(
                appended.prev_hash, appended.canonical(), audit.SM3
            )
    finally:
        other.dispose()
    assert _verify(db).ok


# -- attacks --------------------------------------------------------------------------------------


def test_the_switch_event_removed_is_caught(db: Database) -> None:
    _switched(db)
    _sql(db, "DELETE FROM audit_events WHERE seq = 5")
    report = _verify(db)
    assert not report.ok and report.first_bad_seq == 5


def test_the_switch_removed_and_every_hash_recomputed_is_caught_by_the_signature(
    db: Database,
) -> None:
    """A chain that never switched: the switch deleted, the later events moved down and
    rehashed with SHA-256, the head mended; only the signed checkpoint at 10 tells."""
    _switched(db)
    with db.transaction() as session:
        switch = session.get(audit.AuditEvent, 5)
        session.delete(switch)
        session.flush()
        events = _events(session)
        for event in events[4:]:
            event.seq -= 1
            session.flush()
        head = session.get(audit.AuditHead, 1)
        assert head is not None
        head.seq, head.hash, head.hash_alg = 9, rehash(events), audit.SHA256
    report = _verify(db)
    assert not report.ok and report.first_bad_seq == 10
    assert "checkpoint" in (report.problem or "")


def test_the_switch_target_altered_is_caught(db: Database) -> None:
    _switched(db)
    _sql(db, """UPDATE audit_events SET details = '{"from": "sha256", "to": "sha256"}'
                WHERE seq = 5""")  # fmt: skip
    report = _verify(db)
    assert not report.ok and report.first_bad_seq == 5


@pytest.mark.parametrize("target", [audit.SHA256, "md5"])
def test_the_switch_target_altered_with_every_hash_recomputed_is_caught(
    db: Database, target: str
) -> None:
    """The switch now names SHA-256 (or a hash Veil does not know), every hash recomputed as
    the altered chain would have them: the checkpoint after it, or the switch, tells."""
    _switched(db)
    with db.transaction() as session:
        events = _events(session)
        events[4].details = {"from": audit.SHA256, "to": target}
        if target == audit.SHA256:  # a valid-looking switch: then nothing switches at all
            events[4].action = "test.event"
        head = session.get(audit.AuditHead, 1)
        assert head is not None
        head.hash, head.hash_alg = rehash(events), audit.SHA256
    report = _verify(db)
    assert not report.ok
    if target == audit.SHA256:
        assert report.first_bad_seq == 10 and "checkpoint" in (report.problem or "")
    else:
        assert report.first_bad_seq == 5 and "not a valid switch" in (report.problem or "")


def test_a_fake_switch_inserted_with_every_hash_recomputed_is_caught_by_the_signature(
    db: Database,
) -> None:
    """In a SHA-256 chain, a switch to SM3 slipped in at 3 and the tail rehashed with SM3."""
    _log(db, 6, checkpoint=True)
    with db.transaction() as session:
        events = _events(session)
        for event in reversed(events[2:]):
            event.seq += 1
            session.flush()
        fake = audit.AuditEvent(seq=3, at=events[1].at, action=audit.SWITCH_ACTION,
                                outcome="ok", details={"from": "sha256", "to": "sm3"},
                                prev_hash="", hash="")  # fmt: skip
        session.add(fake)
        events.insert(2, fake)
        head = session.get(audit.AuditHead, 1)
        assert head is not None
        head.seq, head.hash, head.hash_alg = 7, rehash(events), audit.SM3
    report = _verify(db)
    assert not report.ok and report.first_bad_seq == 6
    assert "checkpoint" in (report.problem or "")


def test_a_switch_from_a_hash_not_in_force_is_refused(db: Database) -> None:
    """A forged switch hashed correctly but naming the wrong hash in force."""
    _log(db, 2)
    with db.transaction() as session:
        forged = audit.record(session, audit.SWITCH_ACTION, details={"from": "sm3", "to": "sha256"})
        assert forged.seq == 3
    report = _verify(db)
    assert not report.ok and report.first_bad_seq == 3
    assert report.problem == "event 3 is not a valid switch from sha256"


def test_an_sm3_tail_rewritten_as_sha256_is_caught(db: Database) -> None:
    """A downgrade: the switch kept, the events after it rehashed with SHA-256."""
    _switched(db)
    with db.transaction() as session:
        events = _events(session)
        prev = events[4].hash
        for event in events[5:]:
            event.prev_hash = prev
            event.hash = prev = audit.chain_hash(prev, event.canonical(), audit.SHA256)
        head = session.get(audit.AuditHead, 1)
        assert head is not None
        head.hash = prev
    report = _verify(db)
    assert not report.ok and report.first_bad_seq == 6


def test_the_heads_hash_flipped_without_a_switch_is_caught(db: Database) -> None:
    _switched(db)
    _sql(db, "UPDATE audit_head SET hash_alg = 'sha256'")
    report = _verify(db)
    assert not report.ok and report.first_bad_seq == 11
    assert "switch events put sm3 in force" in (report.problem or "")
    _log(db, 1)  # appended with SHA-256 where SM3 is in force: that event is wrong
    _sql(db, "UPDATE audit_head SET hash_alg = 'sm3'")
    assert _verify(db).first_bad_seq == 11


def test_verifying_since_an_anchor_uses_the_hash_in_force_there(db: Database) -> None:
    """From an anchor after the switch, the events are SM3; if the switch before the anchor
    is altered to name SHA-256 (the hashes up to the anchor left alone, as routine
    verification takes them on trust), the first event after the anchor fails."""
    _switched(db)
    assert _verify(db, since=7).ok
    assert _verify(db, since=5).ok and _verify(db, since=4).ok
    _sql(db, """UPDATE audit_events SET details = '{"from": "sm3", "to": "sha256"}'
                WHERE seq = 5""")  # fmt: skip
    assert _verify(db, since=7).first_bad_seq == 8
    _sql(db, """UPDATE audit_events SET details = '{"to": "md5"}' WHERE seq = 5""")
    report = _verify(db, since=7)
    assert not report.ok and report.first_bad_seq == 5


# -- exports (verified offline) -------------------------------------------------------------------


def _export(
    db: Database, first: int = 1, last: int = 10, scope: list[str] | None = None
) -> list[dict[str, Any]]:
    with db.transaction() as session:
        plan = plan_export(session, first, last, scope=scope, exported_by="so_test",
                           exported_at=datetime.now(UTC), sign=sign)  # fmt: skip
    return [json.loads(line) for line in export_lines(db.transaction, plan)]


def _check(entries: list[dict[str, Any]]) -> Any:
    return verify_export((json.dumps(e) for e in entries), PUBLIC)


def _resign(manifest: dict[str, Any]) -> None:
    from policies.audit_export import manifest_body

    manifest["signature"] = sign(manifest_body(manifest)).to_text()


def test_an_export_across_the_switch_verifies_offline(db: Database) -> None:
    _switched(db)
    whole = _export(db)
    assert whole[0]["chain_hash"] == audit.SHA256 and _check(whole).ok
    after = _export(db, 7, 10)  # starting after the switch: the manifest says SM3
    assert after[0]["chain_hash"] == audit.SM3 and _check(after).ok
    scoped = _export(db, scope=["ent_x"])  # no event of that tenant: only the switch shown
    assert [e["seq"] for e in scoped if e["type"] == "event"] == [5]
    assert _check(scoped).ok


def test_an_export_made_before_the_chain_hash_was_named_verifies_as_sha256(db: Database) -> None:
    _log(db, 3, checkpoint=True)
    entries = _export(db, 1, 3)
    del entries[0]["chain_hash"]
    _resign(entries[0])
    assert _check(entries).ok


def _rehash_export(entries: list[dict[str, Any]], algorithm: str) -> None:
    prev = entries[0]["first_prev_hash"]
    for entry in entries[1:]:
        if entry["type"] == "event":
            entry["prev_hash"] = prev
            body = {k: v for k, v in entry.items() if k not in ("type", "prev_hash", "hash")}
            entry["hash"] = prev = audit.chain_hash(prev, canonical_json(body), algorithm)


def test_tampering_around_the_switch_in_an_export_is_caught(db: Database) -> None:
    _switched(db)
    entries = _export(db)
    # The manifest's hash changed: its signature breaks.
    changed = json.loads(json.dumps(entries))
    changed[0]["chain_hash"] = audit.SM3
    assert "manifest does not verify" in (_check(changed).problem or "")
    # The switch's target altered: its hash breaks.
    changed = json.loads(json.dumps(entries))
    changed[5]["details"]["to"] = audit.SHA256
    assert _check(changed).first_bad_seq == 5
    # The switch removed and the rest rehashed as SHA-256 (a downgrade): the checkpoint.
    changed = json.loads(json.dumps(entries))
    del changed[5]
    for entry in changed[5:10]:
        entry["seq"] -= 1
    _rehash_export(changed, audit.SHA256)
    assert not _check(changed).ok
    # The SM3 tail rehashed as SHA-256, the switch kept: the first event after it.
    changed = json.loads(json.dumps(entries))
    prev = changed[5]["hash"]
    for entry in changed[6:11]:
        entry["prev_hash"] = prev
        body = {k: v for k, v in entry.items() if k not in ("type", "prev_hash", "hash")}
        entry["hash"] = prev = audit.chain_hash(prev, canonical_json(body), audit.SHA256)
    assert _check(changed).first_bad_seq == 6
    # A scoped export eliding the switch (the server never does): the signed manifest
    # says it is shown.
    scoped = _export(db, scope=["ent_x"])
    switch = scoped[5]
    scoped[5] = {"type": "elided", "seq": 5, "prev_hash": switch["prev_hash"],
                 "hash": switch["hash"]}  # fmt: skip
    assert not _check(scoped).ok
