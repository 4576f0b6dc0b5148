"""The append-only audit log: a hash chain in the database, with signed checkpoints.

Every event is appended in the same database transaction as the change it
records (callers pass their session; nothing here commits).  Event ``n``
stores ``hash_n = SHA-256(hash_{n-1} || canonical JSON of event n)``.  A
single-row head table holds the newest sequence number and hash; appending
locks it, so concurrent writers queue up instead of forking the chain.

Checkpoints sign ``"veil/audit\\n<seq>\\n<hash hex>\\n"`` with the Ed25519 key
held in the key server, so that a database administrator who rewrites
history (and recomputes every hash) is still caught by the signatures.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Integer, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from keys import InvalidSignature, Signature, SigningPublicKey, verify_signature
from policies.db import Base, UTCDateTime, utcnow
from policies.principals import Principal

GENESIS = "0" * 64
CHECKPOINT_ORIGIN = "veil/audit"


class Outcome(enum.StrEnum):
    OK = "ok"
    DENIED = "denied"
    FAILED = "failed"


class AuditEvent(Base):
    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor_id: Mapped[str | None] = mapped_column(String(40), index=True)
    actor_role: Mapped[str | None] = mapped_column(String(20))
    tenant_id: Mapped[str | None] = mapped_column(String(40), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(12))
    resource: Mapped[str | None] = mapped_column(String(120))
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    def canonical(self) -> bytes:
        """The bytes that are hashed: every field but the hashes, in a fixed encoding."""
        body = {
            "seq": self.seq,
            "at": self.at.isoformat(timespec="microseconds"),
            "actor_id": self.actor_id,
            "actor_role": self.actor_role,
            "tenant_id": self.tenant_id,
            "action": self.action,
            "outcome": self.outcome,
            "resource": self.resource,
            "details": self.details,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.canonical())
        return body | {"prev_hash": self.prev_hash, "hash": self.hash}


class AuditHead(Base):
    """One row: the newest event's sequence number and hash (the lock for appends)."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(Integer, index=True)
    head_hash: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


def chain_hash(prev_hash: str, canonical: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev_hash) + canonical).hexdigest()


def checkpoint_body(seq: int, head_hash: str) -> bytes:
    return f"{CHECKPOINT_ORIGIN}\n{seq}\n{head_hash}\n".encode()


def _head(session: Session) -> AuditHead:
    head = session.get(AuditHead, 1, with_for_update=True)
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS)
        session.add(head)
        session.flush()
    return head


def record(
    session: Session,
    action: str,
    *,
    actor: Principal | None = None,
    outcome: Outcome = Outcome.OK,
    tenant_id: str | None = None,
    resource: str | None = None,
    details: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Append one event in ``session``'s transaction; it commits or rolls back with the change."""
    head = _head(session)
    event = AuditEvent(
        seq=head.seq + 1,
        at=at or utcnow(),
        actor_id=actor.id if actor else None,
        actor_role=actor.role if actor else None,
        tenant_id=tenant_id,
        action=action,
        outcome=outcome,
        resource=resource,
        details=dict(details or {}),
        prev_hash=head.hash,
    )
    event.hash = chain_hash(event.prev_hash, event.canonical())
    session.add(event)
    head.seq, head.hash = event.seq, event.hash
    session.flush()
    return event


def checkpoint(session: Session, sign: Callable[[bytes], Signature]) -> AuditCheckpoint | None:
    """Sign the current chain head (None when the log is empty or already checkpointed)."""
    head = _head(session)
    if head.seq == 0:
        return None
    latest = session.scalars(
        select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()).limit(1)
    ).first()
    if latest is not None and latest.seq == head.seq:
        return latest
    signature = sign(checkpoint_body(head.seq, head.hash))
    row = AuditCheckpoint(
        seq=head.seq, head_hash=head.hash, signature=signature.to_text(), created_at=utcnow()
    )
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class VerifyReport:
    """The result of verifying the chain; ``first_bad_seq`` is None when everything holds."""

    events: int
    checkpoints: int
    first_bad_seq: int | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(session: Session, public_keys: Mapping[int, SigningPublicKey]) -> VerifyReport:
    """Recompute the chain and check every checkpoint's signature and position."""
    checkpoints = list(session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.id)))
    wanted = {cp.seq for cp in checkpoints}
    hashes: dict[int, str] = {}  # only at checkpointed positions, so memory stays small
    prev, expected_seq, count = GENESIS, 1, 0
    for event in session.scalars(select(AuditEvent).order_by(AuditEvent.seq)):
        count += 1
        if event.seq != expected_seq:
            return VerifyReport(count, 0, expected_seq, f"event {expected_seq} is missing")
        if event.prev_hash != prev or chain_hash(prev, event.canonical()) != event.hash:
            return VerifyReport(count, 0, event.seq, f"event {event.seq} was altered or moved")
        prev = event.hash
        if event.seq in wanted:
            hashes[event.seq] = prev
        expected_seq += 1
    last = expected_seq - 1
    head = session.get(AuditHead, 1)
    if head is not None and (head.seq != last or head.hash != prev):
        return VerifyReport(count, 0, last + 1, f"events after {last} were deleted")
    return _verify_checkpoints(checkpoints, public_keys, hashes, count)


def _verify_checkpoints(
    checkpoints: list[AuditCheckpoint],
    public_keys: Mapping[int, SigningPublicKey],
    hashes: Mapping[int, str],
    count: int,
) -> VerifyReport:
    checked = 0
    for cp in checkpoints:
        if hashes.get(cp.seq) != cp.head_hash:
            return VerifyReport(
                count, checked, cp.seq, f"signed checkpoint at event {cp.seq} does not match"
            )
        try:
            signature = Signature.from_text(cp.signature)
            key = public_keys[signature.key_version]
            verify_signature(key, checkpoint_body(cp.seq, cp.head_hash), signature)
        except (InvalidSignature, KeyError):
            return VerifyReport(
                count, checked, cp.seq, f"checkpoint at event {cp.seq} has a bad signature"
            )
        checked += 1
    return VerifyReport(count, checked)
