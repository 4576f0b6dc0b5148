"""Audit exports verify offline with the public key alone; every kind of tampering is named."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys import Signature, SigningPublicKey
from keys.signing import public_keys_from_pem
from policies import audit
from policies.audit_export import (
    as_ranges,
    canonical_json,
    export_lines,
    in_ranges,
    plan_export,
    verify_export,
)
from sandbox.store.database import Database, migrate
from tests.policies.chains import CHAIN_HASHES, append

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


@pytest.fixture(params=CHAIN_HASHES)
def db(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Database]:
    """Twenty events, signed checkpoints at 6 and 12; SHA-256, or switched to SM3 at event
    3 (every test here runs over both)."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    migrate(url)
    database = Database(url)
    for i in range(1, 21):
        with database.transaction() as session:
            append(
                session,
                request.param,
                tenant_id="ent_a" if i % 3 else "ent_b",
                resource=f"thing:{i}",
                details={"i": i, "text": "é ✓"},
            )
            if i in (6, 12):
                audit.checkpoint(session, sign)
    yield database
    database.dispose()


def export(
    db: Database, first: int = 1, last: int = 20, scope: list[str] | None = None
) -> list[dict[str, Any]]:
    with db.transaction() as session:
        plan = plan_export(
            session,
            first,
            last,
            scope=scope,
            exported_by="so_test",
            exported_at=datetime.now(UTC),
            sign=sign,
        )
    return [json.loads(line) for line in export_lines(db.transaction, plan)]


def check(entries: list[dict[str, Any]]) -> Any:
    return verify_export((json.dumps(e) for e in entries), PUBLIC)


def index_of(entries: list[dict[str, Any]], seq: int) -> int:
    return next(i for i, e in enumerate(entries) if e["type"] != "manifest" and e["seq"] == seq)


def test_a_whole_export_verifies(db: Database) -> None:
    entries = export(db)
    report = check(entries)
    assert report.ok, report.problem
    assert (report.from_seq, report.to_seq, report.events, report.checkpoints) == (1, 20, 20, 2)
    assert [e["type"] for e in entries].count("checkpoint") == 2


def test_a_range_verifies_and_carries_the_checkpoint_before_it(db: Database) -> None:
    entries = export(db, 7, 15)
    report = check(entries)
    assert report.ok, report.problem
    assert report.events == 9
    assert entries[0]["checkpoints"] == [6, 12]  # 6 anchors where the range starts


def recompute_from(entries: list[dict[str, Any]], start: int) -> None:
    """What a careful forger does: fix every hash from ``start`` on, each with the hash its
    position uses (the manifest's, then each switch event's)."""
    algorithm = entries[0].get("chain_hash", audit.SHA256)
    prev = None
    for i, entry in enumerate(entries[1:], start=1):
        if entry["type"] != "event":
            continue
        if i >= start:
            if prev is not None:
                entry["prev_hash"] = prev
            body = {k: v for k, v in entry.items() if k not in ("type", "prev_hash", "hash")}
            entry["hash"] = audit.chain_hash(entry["prev_hash"], canonical_json(body), algorithm)
            prev = entry["hash"]
        if entry["action"] == audit.SWITCH_ACTION:
            algorithm = entry["details"]["to"]


def edit(entries: list[dict[str, Any]]) -> None:
    entries[index_of(entries, 9)]["details"]["i"] = 99


def edit_time(entries: list[dict[str, Any]]) -> None:
    entries[index_of(entries, 9)]["at"] = "2020-01-01T00:00:00.000000+00:00"


def delete(entries: list[dict[str, Any]]) -> None:
    del entries[index_of(entries, 9)]


def insert(entries: list[dict[str, Any]]) -> None:
    entries.insert(index_of(entries, 9), dict(entries[index_of(entries, 8)]))


def reorder(entries: list[dict[str, Any]]) -> None:
    i = index_of(entries, 9)
    entries[i], entries[i + 1] = entries[i + 1], entries[i]


def truncate(entries: list[dict[str, Any]]) -> None:
    del entries[index_of(entries, 18) : index_of(entries, 20) + 1]


def forge(entries: list[dict[str, Any]]) -> None:
    i = index_of(entries, 9)
    entries[i]["details"]["i"] = 99
    recompute_from(entries, i)


def forge_after_last_checkpoint(entries: list[dict[str, Any]]) -> None:
    i = index_of(entries, 15)
    entries[i]["outcome"] = "denied"
    recompute_from(entries, i)


def edit_manifest(entries: list[dict[str, Any]]) -> None:
    entries[0]["to_seq"] = 17


def drop_checkpoint(entries: list[dict[str, Any]]) -> None:
    entries[:] = [e for e in entries if not (e["type"] == "checkpoint" and e["seq"] == 12)]


def bad_checkpoint(entries: list[dict[str, Any]]) -> None:
    cp = next(e for e in entries if e["type"] == "checkpoint")
    cp["head_hash"] = "0" * 64


TAMPERING: dict[str, tuple[Callable[[list[dict[str, Any]]], None], int | None, str]] = {
    "an edited field": (edit, 9, "altered"),
    "an edited time": (edit_time, 9, "altered"),
    "a deletion": (delete, 9, "missing"),
    "an insertion": (insert, 8, "appears again"),
    "a reordering": (reorder, 9, "missing"),
    "a cut-off end": (truncate, 18, "cut off"),
    "an edit with every later hash recomputed": (forge, 7, "signed checkpoint at event 12"),
    "the same after the last checkpoint": (forge_after_last_checkpoint, 13, "signed hash"),
    "an edited manifest": (edit_manifest, None, "manifest does not verify"),
    "a removed checkpoint": (drop_checkpoint, 12, "removed"),
    "a checkpoint with another hash": (bad_checkpoint, 6, "does not verify"),
}


@pytest.mark.parametrize("how", list(TAMPERING))
def test_tampering_is_reported_with_the_first_bad_event(db: Database, how: str) -> None:
    tamper, first_bad, words = TAMPERING[how]
    entries = export(db)
    tamper(entries)
    report = check(entries)
    assert not report.ok
    assert report.first_bad_seq == first_bad, report.problem
    assert words in (report.problem or "")


def test_another_public_key_does_not_verify(db: Database) -> None:
    other = Ed25519PrivateKey.generate().public_key()
    raw = other.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    report = verify_export((json.dumps(e) for e in export(db)), {1: SigningPublicKey(1, raw)})
    assert not report.ok and "manifest does not verify" in (report.problem or "")


def test_garbage_is_not_an_export() -> None:
    assert "not valid JSON" in (verify_export([b"{nope"], PUBLIC).problem or "")
    assert "empty" in (verify_export([], PUBLIC).problem or "")
    assert "not UTF-8" in (verify_export([b"\xff\xfe"], PUBLIC).problem or "")


def test_a_scoped_export_elides_other_tenants_and_still_verifies(db: Database) -> None:
    entries = export(db, scope=["ent_b"])
    shown = [e for e in entries if e["type"] == "event"]
    elided = [e for e in entries if e["type"] == "elided"]
    # A switch of the chain's hash (no tenant's) is always shown: the verifier follows it.
    switches = [e for e in shown if e["action"] == audit.SWITCH_ACTION]
    assert {e["tenant_id"] for e in shown if e not in switches} == {"ent_b"} and len(shown) == 6
    assert len(elided) == 14 and all(set(e) == {"type", "seq", "prev_hash", "hash"} for e in elided)
    report = check(entries)
    assert report.ok and report.elided == 14 and report.scope == ["ent_b"]


def test_hiding_a_shown_event_as_elided_is_reported(db: Database) -> None:
    entries = export(db, scope=["ent_b"])
    i = index_of(entries, 9)  # 9 is ent_b's
    event = entries[i]
    entries[i] = {k: event[k] for k in ("seq", "prev_hash", "hash")} | {"type": "elided"}
    report = check(entries)
    assert not report.ok and report.first_bad_seq == 9
    assert "should be shown" in (report.problem or "")


def test_ranges() -> None:
    runs = as_ranges([1, 2, 3, 7, 9, 10])
    assert runs == [[1, 3], [7, 7], [9, 10]]
    assert [s for s in range(12) if in_ranges(s, runs)] == [1, 2, 3, 7, 9, 10]


def test_a_key_file_may_hold_every_version() -> None:
    pem = "".join(SigningPublicKey(v, PUBLIC[1].raw).to_pem() for v in (1, 2))
    assert sorted(public_keys_from_pem(pem)) == [1, 2]
    with pytest.raises(ValueError, match="key version"):
        public_keys_from_pem("hello")
