"""The append-only audit log: a hash chain in the database, with signed checkpoints.

Every event is appended in the same database transaction as the change it
records (callers pass their session; nothing here commits).  Event ``n``
stores ``hash_n = H(hash_{n-1} || canonical JSON of event n)``.  A
single-row head table holds the newest sequence number and hash, and ``H`` for
the next event; appending locks it, so concurrent writers queue up instead of
forking the chain.

``H`` is SHA-256 until the chain records a switch: an ``audit.chain_hash_switched``
event (``switch_chain_hash``) whose details name the hash in force and the next one
(``{"from": "sha256", "to": "sm3"}``).  The switch event itself is hashed with the
old function; every event after it with the new one.  So the hash of every position
is written in the chain, and verifiers follow the switch events, never a setting.

Checkpoints sign ``"veil/audit\\n<seq>\\n<hash hex>\\n"`` with the Ed25519 key
held in the key server, so that a database administrator who rewrites
history (and recomputes every hash) is still caught by the signatures.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import re
from _json import make_encoder
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from json.scanner import make_scanner
from typing import Any, NamedTuple, Protocol

from sqlalchemy import (
    JSON,
    Connection,
    Dialect,
    Integer,
    Row,
    Select,
    String,
    TypeDecorator,
    bindparam,
    column,
    select,
    table,
)
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.orm.util import identity_key

from keys import CryptoProfile, InvalidSignature, Signature, SigningPublicKey, verify_signature
from keys.gm import sm3
from policies.db import Base, UTCDateTime, utcnow
from policies.principals import Principal

GENESIS = "0" * 64
CHECKPOINT_ORIGIN = "veil/audit"

#: The chain's hash functions, by the name switch events and ``audit_head.hash_alg`` give.
SHA256 = "sha256"
SM3 = "sm3"
CHAIN_HASHES = (SHA256, SM3)
#: The hash each crypto profile chains new events with.
PROFILE_CHAIN_HASH = {CryptoProfile.STANDARD: SHA256, CryptoProfile.GM: SM3}
#: The action of the event that switches the chain to another hash function.
SWITCH_ACTION = "audit.chain_hash_switched"


class Outcome(enum.StrEnum):
    OK = "ok"
    DENIED = "denied"
    FAILED = "failed"


class CanonicalJSON(TypeDecorator[Any]):
    """JSON, written on SQLite as its canonical encoding (``encode_canonical``: sorted keys,
    no spaces, ASCII), the very text the event's hash covers; read back as JSON is.

    Verification can then hash the stored text as it is (``row_canonicalizer(...,
    stored_details=True)``) instead of parsing and re-encoding it.  Other databases (and
    rows written before this) keep what their JSON type writes; they are verified through
    the parse, as before."""

    impl = JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: Any) -> str:
            # As JSON's own processor: JSON.NULL and None are the JSON value null.
            return encode_canonical(None if value is JSON.NULL else value)

        return process


#: An event's fields that are hashed: every one but the hashes.
HASHED_FIELDS = (
    "seq",
    "at",
    "actor_id",
    "actor_role",
    "tenant_id",
    "action",
    "outcome",
    "resource",
    "details",
)


def canonical_event(event: Mapping[str, Any]) -> bytes:
    """The bytes of an event that are hashed (its ``HASHED_FIELDS`` by name), in a fixed
    encoding."""
    body = {name: event[name] for name in HASHED_FIELDS}
    body["at"] = body["at"].isoformat(timespec="microseconds")
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


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
    details: Mapped[dict[str, Any]] = mapped_column(CanonicalJSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    def canonical(self) -> bytes:
        """The bytes that are hashed: every field but the hashes, in a fixed encoding."""
        return canonical_event({name: getattr(self, name) for name in HASHED_FIELDS})

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.canonical())
        return body | {"prev_hash": self.prev_hash, "hash": self.hash}


class AuditHead(Base):
    """One row: the newest event's sequence number and hash (the lock for appends)."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    #: The hash the next event is chained with (migration 0023); it changes only with a
    #: switch event in the chain, which is what verifiers read.
    hash_alg: Mapped[str] = mapped_column(String(16), default=SHA256, server_default=SHA256)


class AuditCheckpoint(Base):
    __tablename__ = "audit_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    seq: Mapped[int] = mapped_column(Integer, index=True)
    head_hash: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Digest(Protocol):
    """What a ``hashlib`` hash object gives once fed: the digest, as bytes or hex."""

    def digest(self) -> bytes: ...

    def hexdigest(self) -> str: ...


class _Sm3:
    """``keys.gm.sm3`` shaped as a ``hashlib`` object, for a Python whose OpenSSL lacks SM3."""

    __slots__ = ("_digest",)

    def __init__(self, data: bytes) -> None:
        self._digest = sm3(data)

    def digest(self) -> bytes:
        return self._digest

    def hexdigest(self) -> str:
        return self._digest.hex()


def _sm3_hasher() -> Callable[[bytes], Digest]:
    """``hashlib``'s SM3 where Python's OpenSSL has it (a third faster); ``keys.gm``'s else."""
    try:
        hashlib.new(SM3)
    except ValueError:
        return _Sm3
    return functools.partial(hashlib.new, SM3)


#: One call from bytes to a ``hashlib``-like object, per chain hash (tests/keys/test_gm.py's
#: vectors and tests/policies/test_audit_chain_hash.py hold SM3 here to ``keys.gm.sm3``).
HASHERS: dict[str, Callable[[bytes], Digest]] = {SHA256: hashlib.sha256, SM3: _sm3_hasher()}


def chain_hash(prev_hash: str, canonical: bytes, algorithm: str = SHA256) -> str:
    """The next link: ``algorithm`` (a name in ``CHAIN_HASHES``) of the previous hash's
    bytes and the event's canonical bytes, as lower-case hex."""
    return HASHERS[algorithm](bytes.fromhex(prev_hash) + canonical).hexdigest()


def switch_target(details: Any, in_force: str | None) -> str | None:
    """The hash a switch event's ``details`` put in force, or None if they are not a valid
    switch away from ``in_force`` (None: from whatever was in force)."""
    if not isinstance(details, dict):
        return None
    source, target = details.get("from"), details.get("to")
    if target not in CHAIN_HASHES or source not in CHAIN_HASHES or source == target:
        return None
    if in_force is not None and source != in_force:
        return None
    return str(target)


def checkpoint_body(seq: int, head_hash: str) -> bytes:
    return f"{CHECKPOINT_ORIGIN}\n{seq}\n{head_hash}\n".encode()


#: What a full verification's record signs (``sandbox.oversight.audit_log``): its own
#: origin, so that no checkpoint signature can stand in for it, nor it for one.
VERIFIED_ORIGIN = "veil/audit-verified"
VERIFIED_FIELDS = ("id", "at", "events", "anchor_seq", "anchor_hash", "ok", "first_bad_seq",
                   "problem")  # fmt: skip


def verified_body(details: Mapping[str, Any]) -> bytes:
    """The signed part of an ``audit.verified`` event's details (canonical JSON)."""
    return (
        f"{VERIFIED_ORIGIN}\n".encode()
        + encode_canonical({k: details.get(k) for k in VERIFIED_FIELDS}).encode()
    )


def _head(session: Session) -> AuditHead:
    head = session.get(AuditHead, 1, with_for_update=True)
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS, hash_alg=SHA256)
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
    when = at or utcnow()
    if when.tzinfo is not None:
        # Stored in UTC: hash it in UTC too, or the event would not verify once read back.
        when = when.astimezone(UTC)
    event = AuditEvent(
        seq=head.seq + 1,
        at=when,
        actor_id=actor.id if actor else None,
        actor_role=actor.role if actor else None,
        tenant_id=tenant_id,
        action=action,
        outcome=outcome,
        resource=resource,
        details=dict(details or {}),
        prev_hash=head.hash,
    )
    # The hash in force is read under the head's lock: a switch committed by any process
    # is used by the next append everywhere.
    event.hash = chain_hash(event.prev_hash, event.canonical(), head.hash_alg)
    session.add(event)
    head.seq, head.hash = event.seq, event.hash
    session.flush()
    return event


@dataclass(frozen=True)
class Entry:
    """One event to :func:`append`: what :func:`record` takes, as a value."""

    action: str
    actor: Principal | None = None
    outcome: Outcome = Outcome.OK
    tenant_id: str | None = None
    resource: str | None = None
    details: Mapping[str, Any] | None = None


_event_table: Any = AuditEvent.__table__
_head_table: Any = AuditHead.__table__
# Built once, Core statements (no ORM unit of work): the head locked, the events inserted,
# the head moved.
_LOCK_HEAD = (
    select(_head_table.c.seq, _head_table.c.hash, _head_table.c.hash_alg)
    .where(_head_table.c.id == 1)
    .with_for_update()
)
_INSERT_EVENTS = _event_table.insert()
_MOVE_HEAD = (
    _head_table.update()
    .where(_head_table.c.id == 1)
    .values(seq=bindparam("new_seq"), hash=bindparam("new_hash"))
)


class Appended(NamedTuple):
    """An event :func:`append` wrote: its place in the chain."""

    seq: int
    hash: str


def append(
    session: Session, entries: Sequence[Entry], at: datetime | None = None
) -> list[Appended]:
    """Append ``entries`` in order, chained as :func:`record` chains one, under one lock of
    the head; they commit or roll back with ``session``'s transaction.

    The session's pending changes are flushed first, so that the head is locked only for
    hashing and inserting these events (and then the commit): call it last in a
    transaction.  The events are written as rows, past the session (no ORM objects: many
    at once, under the write lock); read them back as :class:`AuditEvent`.  (A switch of
    the chain's hash goes through :func:`switch_chain_hash`.)"""
    if any(entry.action == SWITCH_ACTION for entry in entries):
        raise ValueError("a switch of the chain hash goes through switch_chain_hash")
    if not entries:
        return []
    session.flush()
    connection = session.connection()
    locked = connection.execute(_LOCK_HEAD).first()
    if locked is None:  # an empty log: the head is made (and locked) as record() makes it
        _head(session)
        locked = connection.execute(_LOCK_HEAD).first()
        assert locked is not None
    seq, prev_hash, algorithm = locked
    when = at or utcnow()
    if when.tzinfo is not None:
        when = when.astimezone(UTC)  # stored in UTC: hashed in UTC (see record)
    rows: list[dict[str, Any]] = []
    for entry in entries:
        seq += 1
        actor = entry.actor
        row = {
            "seq": seq,
            "at": when,
            "actor_id": actor.id if actor else None,
            "actor_role": actor.role if actor else None,
            "tenant_id": entry.tenant_id,
            "action": entry.action,
            "outcome": entry.outcome,
            "resource": entry.resource,
            "details": dict(entry.details or {}),
            "prev_hash": prev_hash,
        }
        row["hash"] = prev_hash = chain_hash(prev_hash, canonical_event(row), algorithm)
        rows.append(row)
    connection.execute(_INSERT_EVENTS, rows)
    connection.execute(_MOVE_HEAD, {"new_seq": seq, "new_hash": prev_hash})
    cached = session.identity_map.get(identity_key(AuditHead, 1))
    if cached is not None:  # record() in this session reads the head afresh
        session.expire(cached)
    return [Appended(row["seq"], row["hash"]) for row in rows]


def switch_chain_hash(
    session: Session, target: str | CryptoProfile, *, actor: Principal | None = None
) -> bool:
    """Chain every event after this one with ``target`` (a name in ``CHAIN_HASHES``, or a
    crypto profile: its hash); whether it switched (False: ``target`` is already in force).

    The switch is an ``audit.chain_hash_switched`` event naming the old and new hash,
    hashed with the old one, appended in ``session``'s transaction under the head's lock.
    """
    if isinstance(target, CryptoProfile):
        target = PROFILE_CHAIN_HASH[target]
    if target not in CHAIN_HASHES:
        raise ValueError(f"unknown audit chain hash {target!r}: one of {', '.join(CHAIN_HASHES)}")
    head = _head(session)
    if head.hash_alg == target:
        return False
    record(session, SWITCH_ACTION, actor=actor, details={"from": head.hash_alg, "to": target})
    head.hash_alg = target
    session.flush()
    return True


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


# -- the canonical form, fast ---------------------------------------------------------------------

# Verification and exports read plain rows, not ORM objects, and build each event's canonical
# bytes directly: ``canonical_event`` stays the definition, and ``row_canonicalizer``
# must give the very same bytes (tests/policies/test_audit.py holds it to that).

EVENT_COLUMNS = (*HASHED_FIELDS, "prev_hash", "hash")
# Untyped columns, so that SQLAlchemy converts nothing: the raw values come back.
_EVENTS = select(*(column(name) for name in EVENT_COLUMNS)).select_from(table("audit_events"))
_READ_BATCH = 4096
# How SQLAlchemy stores a datetime in SQLite (UTC, microseconds always written).
_SQLITE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}")
# What loading a tampered row can raise: the event is then reported as altered.
UNREADABLE = (ValueError, TypeError, AttributeError, RecursionError)
# json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=True) without building an
# encoder per call.  check_circular is off: it only matters for values that contain
# themselves, and values parsed from JSON text never do.
_encode_json = make_encoder(
    None, json.JSONEncoder().default, encode_basestring_ascii, None, ":", ",", True, False, True
)
_scan_json = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # json.loads' scanner


def encode_canonical(value: Any) -> str:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``."""
    return "".join(_encode_json(value, 0))


def load_json(text: str) -> Any:
    """``json.loads(text)``: its scanner called directly when the text is one JSON value,
    maybe followed by a newline; anything else (spaces, a BOM, extra data) goes through
    ``json.loads`` itself, so the result, or the error, is always the same."""
    try:
        value, end = _scan_json(text, 0)
    except StopIteration:
        return json.loads(text)
    if end == len(text) or text[end:] == "\n":
        return value
    return json.loads(text)


def row_canonicalizer(
    dialect: Dialect, *, stored_details: bool = False
) -> Callable[[Sequence[Any]], bytes]:
    """A function from an ``audit_events`` row (raw driver values in ``EVENT_COLUMNS`` order)
    to the event's canonical bytes: exactly ``AuditEvent.canonical()`` of the object the ORM
    would load from that row, without loading it.

    Values in the form Veil writes take a fast path: strings and None as they are, SQLite's
    time text re-cut to ISO 8601 after the same parse the ORM does, the details' JSON text
    read by json.loads' own scanner, and the keys written out in sorted order.  Any other
    time or details value is converted by the column's type, as the ORM converts it; a row
    with values of other types (bytes, a position that is not an int) is handed to
    ``AuditEvent.canonical()`` itself.  A row the ORM could not load raises one of
    ``UNREADABLE``.

    ``stored_details``: details text that may already be canonical (``CanonicalJSON`` writes
    it so; no ``": `` in it) goes in as it is stored, unparsed.  The bytes are then only a
    candidate: they are the canonical bytes when the stored text is canonical, and a caller
    must check them against the event's hash and, where they do not match, use the exact
    canonicalizer (``_walk_chain``'s ``fallback``).  Why a match is enough: every other field
    is written exactly as without this option, each as a self-delimiting JSON token between
    fixed keys, so bytes equal to what the writer hashed force the stored details text to be
    the writer's canonical text (which parses back to the same value), short of a hash
    collision.  Never use such bytes without that check (exports do not).
    """
    columns = AuditEvent.__table__.c
    load_at = columns.at.type.dialect_impl(dialect).result_processor(dialect, None)
    load_details = columns.details.type.dialect_impl(dialect).result_processor(dialect, None)

    # The scanner stands in for json.loads only where the ORM would call json.loads.
    json_text = load_details is not None and getattr(dialect, "_json_deserializer", None) in (
        None,
        json.loads,
    )

    def at_of(raw: Any) -> Any:
        return load_at(raw) if load_at is not None else raw

    def details_of(raw: Any) -> Any:
        return load_details(raw) if load_details is not None else raw

    def exact(row: Sequence[Any]) -> bytes:
        seq, at, actor_id, actor_role, tenant_id, action, outcome, resource, details = row[:9]
        event = AuditEvent(
            seq=seq,
            at=at_of(at),
            actor_id=actor_id,
            actor_role=actor_role,
            tenant_id=tenant_id,
            action=action,
            outcome=outcome,
            resource=resource,
            details=details_of(details),
        )
        return event.canonical()

    sqlite_time, from_iso, scan, encode = (
        _SQLITE_TIME.fullmatch,
        datetime.fromisoformat,
        _scan_json,
        _encode_json,
    )
    esc = encode_basestring_ascii

    def canonical(row: Sequence[Any]) -> bytes:
        seq, at, actor_id, actor_role, tenant_id, action, outcome, resource, details = row[:9]
        if type(at) is str and sqlite_time(at):
            from_iso(at)  # what the ORM parses: an impossible date raises here as it does there
            at_text = f"{at[:10]}T{at[11:]}+00:00"
        else:
            at_text = at_of(at).isoformat(timespec="microseconds")
        if type(details) is str and json_text:
            if stored_details and '": ' not in details:
                value, details_text = None, details  # a candidate: see the docstring
            else:
                details_text = None
                try:
                    value, end = scan(details, 0)
                except StopIteration:
                    end = -1
                if end != len(details):  # spaces around it, or not JSON: json.loads decides
                    value = details_of(details)
        else:
            value, details_text = details_of(details), None
        if type(seq) is not int:
            return exact(row)
        try:
            if details_text is None:
                details_text = "".join(encode(value, 0))
            # The keys in sorted order, no spaces: json.dumps' canonical output, written out.
            text = (
                f'{{"action":{esc(action)},'
                f'"actor_id":{"null" if actor_id is None else esc(actor_id)},'
                f'"actor_role":{"null" if actor_role is None else esc(actor_role)},'
                f'"at":"{at_text}",'
                f'"details":{details_text},'
                f'"outcome":{esc(outcome)},'
                f'"resource":{"null" if resource is None else esc(resource)},'
                f'"seq":{seq},'
                f'"tenant_id":{"null" if tenant_id is None else esc(tenant_id)}}}'
            )
        except TypeError:  # a value of another type than Veil writes: encode it as defined
            return exact(row)
        return text.encode()

    return canonical


def event_rows(
    connection: Connection, between: tuple[int, int] | None = None
) -> Iterator[Sequence[Sequence[Any]]]:
    """Events' raw column values (``EVENT_COLUMNS``) in order, in batches, read in the
    connection's transaction: every row of the table, or those with ``seq`` in ``between``."""
    query = _EVENTS.order_by(column("seq"))
    if between is not None:
        query = query.where(column("seq").between(int(between[0]), int(between[1])))
    if connection.dialect.name == "sqlite":
        # Plain DB-API tuples cost a third less per row than Row objects; pysqlite steps
        # through the result lazily, so memory stays at one batch.
        sql = str(query.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql)
            while batch := cursor.fetchmany(_READ_BATCH):
                yield batch
        finally:
            cursor.close()
        return
    # stream_results keeps a server-side cursor (PostgreSQL), so memory stays at one batch.
    options = {"stream_results": True, "yield_per": _READ_BATCH}
    yield from connection.execution_options(**options).execute(query).partitions()


@dataclass(frozen=True)
class VerifyReport:
    """The result of verifying the chain; ``first_bad_seq`` is None when everything holds.

    ``from_seq``: 0 when every event was read; otherwise the signed checkpoint the check
    started from (the events up to it were read by the full verification ``full_at``)."""

    events: int
    checkpoints: int
    first_bad_seq: int | None = None
    problem: str | None = None
    from_seq: int = 0
    full_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


def verify(
    source: Session | Connection,
    public_keys: Mapping[int, SigningPublicKey],
    since: tuple[int, str] | None = None,
) -> VerifyReport:
    """Recompute the chain and check every checkpoint's signature and position.

    Each event is hashed with the hash its position uses: SHA-256 from the start, then
    whatever each switch event names (checked as it is passed); the head must name the
    hash in force after the last event.

    ``since``: a signed checkpoint's (seq, head hash) to start from instead of the first
    event: the events after it are read (the first must chain on from that hash, with the
    hash the last switch event at or before it names), and the checkpoints from it on are
    checked.

    Everything is read in the caller's transaction (a session's or a connection's), so the
    checkpoints, the events and the head are one consistent snapshot.  Verification only
    reads: a caller may hand in a connection in a plain (deferred) read transaction, which
    on SQLite in WAL mode lets writers carry on while a long log is checked.
    """
    connection = source.connection() if isinstance(source, Session) else source
    start, start_hash = since or (0, GENESIS)
    in_force = SHA256
    if since is not None:
        switched_at, anchored = _hash_after(connection, start)
        if anchored is None:
            problem = f"event {switched_at} is not a valid switch of the chain's hash"
            return VerifyReport(start, 0, switched_at, problem)
        in_force = anchored
    query = select(AuditCheckpoint.seq, AuditCheckpoint.head_hash, AuditCheckpoint.signature)
    checkpoints = connection.execute(
        query.where(AuditCheckpoint.seq >= start).order_by(AuditCheckpoint.id)
    ).all()
    switches = dict(connection.execute(_SWITCHES.where(column("seq") > start)).tuples().all())
    walked = _walk_chain(
        event_rows(connection, (start + 1, 2**63 - 1) if since else None),
        row_canonicalizer(connection.dialect, stored_details=True),
        {cp.seq for cp in checkpoints},
        (start, start_hash),
        (in_force, switches),
        fallback=row_canonicalizer(connection.dialect),
    )
    if isinstance(walked, VerifyReport):
        return walked
    count, prev, hashes, in_force = walked
    if since is not None:
        hashes.setdefault(start, start_hash)
    head = connection.execute(
        select(AuditHead.seq, AuditHead.hash, AuditHead.hash_alg).where(AuditHead.id == 1)
    ).first()
    if head is not None and (head.seq != count or head.hash != prev):
        return VerifyReport(count, 0, count + 1, f"events after {count} were deleted")
    if head is not None and head.hash_alg != in_force:
        problem = (
            f"the head would chain event {count + 1} with {head.hash_alg}, but the chain's "
            f"switch events put {in_force} in force"
        )
        return VerifyReport(count, 0, count + 1, problem)
    report = _verify_checkpoints(checkpoints, public_keys, hashes, count)
    return replace(report, from_seq=start)


# The switch events' positions and raw details: few rows, found by the index on ``action``.
_SWITCHES: Select[tuple[Any, Any]] = (
    select(column("seq"), column("details"))
    .select_from(table("audit_events"))
    .where(column("action") == SWITCH_ACTION)
)


def _details(raw: Any) -> Any:
    """A switch event's details as read raw (JSON text, or parsed by the driver); None when
    unreadable (the event's own hash check reports that)."""
    if isinstance(raw, bytes | str):
        try:
            return load_json(raw.decode() if isinstance(raw, bytes) else raw)
        except UNREADABLE:
            return None
    return raw


def _hash_after(connection: Connection, seq: int) -> tuple[int, str | None]:
    """The hash chaining the events after position ``seq`` (the target of the last switch
    event at or before it; SHA-256 when there is none), and that event's position (0: none);
    None for the hash if that event is not a valid switch.  One query, by the index on
    ``action``."""
    last = connection.execute(
        _SWITCHES.where(column("seq") <= seq).order_by(column("seq").desc()).limit(1)
    ).first()
    if last is None:
        return 0, SHA256
    return int(last[0]), switch_target(_details(last[1]), None)


def chain_hash_after(source: Session | Connection, seq: int) -> str:
    """The hash the chain uses for the events after position ``seq`` (0: from the start),
    as its switch events say; ``ValueError`` if the last switch before it is not valid."""
    connection = source.connection() if isinstance(source, Session) else source
    switched_at, algorithm = _hash_after(connection, seq)
    if algorithm is None:
        raise ValueError(f"event {switched_at} of the audit chain is not a valid hash switch")
    return algorithm


def _walk_chain(
    batches: Iterable[Sequence[Sequence[Any]]],
    canonical: Callable[[Sequence[Any]], bytes],
    wanted: set[int],
    start: tuple[int, str] = (0, GENESIS),
    hashing: tuple[str, Mapping[int, Any]] = (SHA256, {}),
    fallback: Callable[[Sequence[Any]], bytes] | None = None,
) -> VerifyReport | tuple[int, str, dict[int, str], str]:
    """Check every event in order after ``start`` (a position and its hash); the first bad
    one's report, or (events, last hash, the hashes at the ``wanted`` positions, the hash
    in force after the last event) when all hold.

    ``hashing``: the hash in force after ``start``, and the switch events after it (their
    raw details by position); each switch event is checked with the hash in force, then
    the next events with the one it names.

    ``fallback``: when ``canonical`` gives only candidate bytes (``stored_details``), the
    exact canonicalizer; an event whose candidate does not match its hash is decided by it.
    """
    algorithm, switches = hashing
    hash_ = HASHERS[algorithm]
    wanted = wanted | switches.keys()  # the hot loop looks at one set, as before
    count, prev = start
    prev_digest = bytes.fromhex(prev)
    hashes: dict[int, str] = {}  # only at checkpointed positions, so memory stays small
    for batch in batches:
        for row in batch:
            count += 1
            seq = row[0]
            if seq != count:
                return VerifyReport(count, 0, count, f"event {count} is missing")
            if row[9] != prev:
                return VerifyReport(count, 0, seq, f"event {seq} was altered or moved")
            try:
                digest = hash_(prev_digest + canonical(row))
                hexed = digest.hexdigest()
                if hexed != row[10] and fallback is not None:
                    digest = hash_(prev_digest + fallback(row))
                    hexed = digest.hexdigest()
            except UNREADABLE:
                return VerifyReport(count, 0, seq, f"event {seq} was altered (it cannot be read)")
            if hexed != row[10]:
                return VerifyReport(count, 0, seq, f"event {seq} was altered or moved")
            prev, prev_digest = row[10], digest.digest()
            if seq in wanted:
                hashes[seq] = prev
                if seq in switches:
                    target = switch_target(_details(switches[seq]), algorithm)
                    if target is None:
                        problem = f"event {seq} is not a valid switch from {algorithm}"
                        return VerifyReport(count, 0, seq, problem)
                    algorithm, hash_ = target, HASHERS[target]
    return count, prev, hashes, algorithm


def _verify_checkpoints(
    checkpoints: Sequence[Row[tuple[int, str, str]]],
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
