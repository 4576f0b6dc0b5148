"""Exports of the audit log, and their verification offline with the public key alone.

An export is JSON Lines (format ``veil-audit-export/1``):

* line 1, the **manifest**: the range (``from_seq``..``to_seq``), the hash the range
  starts from (``first_prev_hash``) and ends at (``last_hash``), the hash function its
  first event is chained with (``chain_hash``: ``sha256`` or ``sm3``; absent in exports
  made before issue 23, which are all SHA-256), how many events it shows, the
  positions of the stored checkpoints it carries and of the elided events, who
  exported it and when, and an Ed25519 signature by the key server over all of that
  (``"veil/audit-export\\n" + canonical JSON``);
* one line per position of the range, in order: an ``event`` (every field, so its
  hash can be recomputed) or, for an event outside a scoped officer's tenants, an
  ``elided`` entry carrying only its position and hashes (the chain still links
  through it, so nothing visible can be changed without breaking a hash).  A switch
  of the chain's hash (``audit.chain_hash_switched``, no tenant's) is always shown:
  the verifier follows it to hash the events after it;
* one ``checkpoint`` line per signed checkpoint stored in the range.

The verifier needs nothing but the file and the public key(s).  It reports the
first bad event, whether an event was edited, deleted, inserted, moved, or cut off
the end, or the manifest or a checkpoint was changed or removed.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keys import InvalidSignature, Signature, SigningPublicKey, verify_signature
from policies.audit import (
    CHAIN_HASHES,
    GENESIS,
    SHA256,
    SWITCH_ACTION,
    AuditCheckpoint,
    AuditEvent,
    chain_hash,
    chain_hash_after,
    checkpoint_body,
    encode_canonical,
    event_rows,
    load_json,
    row_canonicalizer,
    switch_target,
)

FORMAT = "veil-audit-export/1"
EXPORT_ORIGIN = b"veil/audit-export\n"
_BATCH = 2_000


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """``json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)``."""
    return encode_canonical(value).encode()


def event_line(canonical: bytes, prev_hash: str, hash_: str) -> bytes:
    """``canonical_json({"type": "event"} | event.to_dict())`` from the event's canonical bytes.

    The line is the canonical JSON with three more keys in their sorted places: ``hash``
    just before ``outcome``, ``prev_hash`` just before ``resource``, ``type`` at the end.
    After ``details``, the canonical bytes hold only ``outcome``, ``resource``, ``seq`` and
    ``tenant_id``, whose values are a number, null or JSON strings, in which a quote is
    always escaped; so the last ``,"outcome":`` and ``,"resource":`` are those keys, never
    text inside ``details``.
    """
    i, j = canonical.rindex(b',"outcome":'), canonical.rindex(b',"resource":')
    hashes = encode_canonical(hash_).encode(), encode_canonical(prev_hash).encode()
    return b"".join(
        (
            canonical[:i],
            b',"hash":',
            hashes[0],
            canonical[i:j],
            b',"prev_hash":',
            hashes[1],
            canonical[j:-1],
            b',"type":"event"}',
        )
    )


def as_ranges(seqs: Iterable[int]) -> list[list[int]]:
    """Sorted positions as ``[first, last]`` runs: ``1,2,3,7`` -> ``[[1, 3], [7, 7]]``."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and runs[-1][1] == seq - 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return runs


def in_ranges(seq: int, runs: list[list[int]]) -> bool:
    index = bisect.bisect_right(runs, [seq, float("inf")]) - 1
    return index >= 0 and runs[index][0] <= seq <= runs[index][1]


def manifest_body(manifest: Mapping[str, Any]) -> bytes:
    """The signed bytes: every manifest field but the signature."""
    return EXPORT_ORIGIN + canonical_json({k: v for k, v in manifest.items() if k != "signature"})


@dataclass(frozen=True)
class ExportPlan:
    """What an export will hold, decided (and signed) before its lines are streamed."""

    manifest: dict[str, Any]
    visible: frozenset[int] | None  # None: every event is shown


def plan_export(
    session: Session,
    from_seq: int,
    to_seq: int,
    *,
    scope: list[str] | None,
    exported_by: str,
    exported_at: datetime,
    sign: Callable[[bytes], Signature],
) -> ExportPlan:
    """Read the range's hashes (not its bodies) and sign the manifest that covers it.

    The caller checks the range exists and the chain verifies before calling.
    """
    rows = session.execute(
        select(
            AuditEvent.seq,
            AuditEvent.tenant_id,
            AuditEvent.action,
            AuditEvent.prev_hash,
            AuditEvent.hash,
        )
        .where(AuditEvent.seq.between(from_seq, to_seq))
        .order_by(AuditEvent.seq)
    ).all()
    allowed = set(scope) if scope is not None else None

    def shown(r: Any) -> bool:
        return allowed is None or r.tenant_id in allowed or r.action == SWITCH_ACTION

    visible = [r.seq for r in rows if shown(r)]
    elided = [r.seq for r in rows if not shown(r)]
    checkpoints = session.scalars(
        select(AuditCheckpoint.seq)
        .where(AuditCheckpoint.seq.between(from_seq - 1, to_seq))
        .order_by(AuditCheckpoint.seq)
        .distinct()
    ).all()
    manifest: dict[str, Any] = {
        "type": "manifest",
        "format": FORMAT,
        "from_seq": from_seq,
        "to_seq": to_seq,
        "first_prev_hash": rows[0].prev_hash,
        "last_hash": rows[-1].hash,
        "chain_hash": chain_hash_after(session, from_seq - 1),
        "events": len(visible),
        "elided": len(elided),
        "elided_ranges": as_ranges(elided),
        "checkpoints": list(checkpoints),
        "scope": sorted(allowed) if allowed is not None else None,
        "exported_by": exported_by,
        "exported_at": exported_at.isoformat(timespec="microseconds"),
    }
    manifest["signature"] = sign(manifest_body(manifest)).to_text()
    return ExportPlan(manifest, frozenset(visible) if allowed is not None else None)


def export_lines(
    transaction: Callable[[], AbstractContextManager[Session]], plan: ExportPlan
) -> Iterator[bytes]:
    """The export's lines (each ending in a newline), read in batches, each in a short
    transaction of its own so that a long export never holds up writers."""
    manifest = plan.manifest
    yield canonical_json(manifest) + b"\n"
    low, high = manifest["from_seq"], manifest["to_seq"]
    while low <= high:
        with transaction() as session:
            connection = session.connection()
            canonical = row_canonicalizer(connection.dialect)
            between = (low, min(high, low + _BATCH - 1))
            batch = [row for rows in event_rows(connection, between) for row in rows]
        for row in batch:
            seq, prev_hash, hash_ = row[0], row[9], row[10]
            if plan.visible is None or seq in plan.visible:
                yield event_line(canonical(row), prev_hash, hash_) + b"\n"
            else:
                line = {"type": "elided", "seq": seq, "prev_hash": prev_hash, "hash": hash_}
                yield canonical_json(line) + b"\n"
        low += _BATCH
    with transaction() as session:
        stored = session.scalars(
            select(AuditCheckpoint)
            .where(AuditCheckpoint.seq.in_(manifest["checkpoints"]))
            .order_by(AuditCheckpoint.seq, AuditCheckpoint.id)
        ).all()
    seen: set[int] = set()
    for cp in stored:
        if cp.seq in seen:
            continue
        seen.add(cp.seq)
        line = {
            "type": "checkpoint",
            "seq": cp.seq,
            "head_hash": cp.head_hash,
            "signature": cp.signature,
            "created_at": cp.created_at.isoformat(timespec="microseconds"),
        }
        yield canonical_json(line) + b"\n"


# -- offline verification ------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportReport:
    """The verdict on an export; ``problem`` is None when everything holds."""

    from_seq: int | None = None
    to_seq: int | None = None
    events: int = 0
    elided: int = 0
    checkpoints: int = 0
    first_bad_seq: int | None = None
    problem: str | None = None
    scope: list[str] | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.problem is None


class _Broken(Exception):
    def __init__(self, seq: int | None, problem: str) -> None:
        super().__init__(problem)
        self.seq = seq
        self.problem = problem


def verify_export(
    lines: Iterable[bytes | str], public_keys: Mapping[int, SigningPublicKey]
) -> ExportReport:
    """Check an export with the public keys alone; the report names the first bad event."""
    walk = _Walk(public_keys)
    try:
        for number, raw in enumerate(lines, start=1):
            text = raw.decode() if isinstance(raw, bytes) else raw
            if text.strip():
                walk.line(number, _parse(number, text))
        return walk.finish()
    except _Broken as broken:
        return walk.report(broken.seq, broken.problem)
    except UnicodeDecodeError:
        return walk.report(None, "the file is not UTF-8 text: it is not an audit export")


def _parse(number: int, text: str) -> dict[str, Any]:
    try:
        value = load_json(text)
    except ValueError:
        raise _Broken(None, f"line {number} is not valid JSON") from None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise _Broken(None, f"line {number} is not an audit export entry")
    return value


def _check_signature(
    keys: Mapping[int, SigningPublicKey], message: bytes, text: object, what: str, seq: int | None
) -> None:
    try:
        signature = Signature.from_text(str(text))
        verify_signature(keys[signature.key_version], message, signature)
    except (InvalidSignature, KeyError):
        raise _Broken(seq, f"{what} does not verify with the public key given") from None


class _Walk:
    """State of one pass over an export: the chain so far, the manifest's promises."""

    def __init__(self, public_keys: Mapping[int, SigningPublicKey]) -> None:
        self.keys = public_keys
        self.manifest: dict[str, Any] | None = None
        self.expected = 0
        self.prev = GENESIS
        self.algorithm = SHA256  # the hash of the next event, as the switch events say
        self.events = 0
        self.elided: list[int] = []
        self.hashes: dict[int, str] = {}  # at checkpointed positions only
        self.checkpoints: set[int] = set()
        self.last_good_checkpoint = 0
        self.pending: list[dict[str, Any]] = []  # checkpoints seen before their event
        self.manifest_elided: list[list[int]] = []
        self.promised: set[int] = set()  # the manifest's checkpoints

    def report(self, seq: int | None, problem: str | None) -> ExportReport:
        m = self.manifest or {}
        return ExportReport(
            from_seq=m.get("from_seq"),
            to_seq=m.get("to_seq"),
            events=self.events,
            elided=len(self.elided),
            checkpoints=len(self.checkpoints),
            first_bad_seq=seq,
            problem=problem,
            scope=m.get("scope"),
        )

    def line(self, number: int, entry: dict[str, Any]) -> None:
        kind = entry["type"]
        if self.manifest is None:
            if kind != "manifest" or number != 1:
                raise _Broken(None, "the first line is not the export's manifest")
            self._start(entry)
        elif kind in ("event", "elided"):
            self._event(entry)
        elif kind == "checkpoint":
            self._checkpoint(entry)
        else:
            raise _Broken(None, f"line {number} has an unknown or repeated entry type")

    def _start(self, manifest: dict[str, Any]) -> None:
        if manifest.get("format") != FORMAT:
            raise _Broken(None, f"not a {FORMAT} file (format: {manifest.get('format')!r})")
        _check_signature(
            self.keys, manifest_body(manifest), manifest.get("signature"), "the manifest", None
        )
        algorithm = manifest.get("chain_hash", SHA256)  # exports before issue 23: SHA-256
        if algorithm not in CHAIN_HASHES:
            raise _Broken(None, f"the manifest names an unknown chain hash ({algorithm!r})")
        self.algorithm = str(algorithm)
        self.manifest = manifest
        self.expected = int(manifest["from_seq"])
        self.prev = str(manifest["first_prev_hash"])
        self.hashes[self.expected - 1] = self.prev
        self.manifest_elided = [list(r) for r in manifest.get("elided_ranges") or []]
        self.promised = set(manifest.get("checkpoints") or [])

    def _event(self, entry: dict[str, Any]) -> None:
        seq = entry.get("seq")
        if not isinstance(seq, int):
            raise _Broken(self.expected, f"the entry at event {self.expected} has no position")
        if seq < self.expected:
            raise _Broken(
                seq,
                f"event {seq} appears again after event {self.expected - 1}: "
                "an event was inserted or moved",
            )
        if seq > self.expected:
            raise _Broken(self.expected, f"event {self.expected} is missing (deleted or moved)")
        if entry.get("prev_hash") != self.prev:
            raise _Broken(
                seq,
                f"event {seq} does not link to the event before it: "
                "an event was inserted, deleted or moved here",
            )
        elided = in_ranges(seq, self.manifest_elided)
        if (entry["type"] == "elided") != elided:
            what = "elided" if elided else "shown"
            raise _Broken(seq, f"event {seq} should be {what} by the signed manifest")
        if entry["type"] == "event":
            body = {k: v for k, v in entry.items() if k not in ("type", "prev_hash", "hash")}
            if chain_hash(self.prev, canonical_json(body), self.algorithm) != entry.get("hash"):
                raise _Broken(seq, f"event {seq} was altered (its hash does not match its fields)")
            if entry.get("action") == SWITCH_ACTION:
                target = switch_target(entry.get("details"), self.algorithm)
                if target is None:
                    problem = f"event {seq} is not a valid switch from {self.algorithm}"
                    raise _Broken(seq, problem)
                self.algorithm = target
            self.events += 1
        else:
            self.elided.append(seq)
        self.prev = str(entry.get("hash"))
        if seq in self.promised:
            self.hashes[seq] = self.prev
            self._match_pending()
        self.expected += 1

    def _checkpoint(self, entry: dict[str, Any]) -> None:
        seq = entry.get("seq")
        if not isinstance(seq, int) or seq not in self.promised:
            raise _Broken(None, "the export carries a checkpoint its manifest does not list")
        if seq in self.checkpoints:
            raise _Broken(seq, f"the checkpoint at event {seq} appears twice")
        body = checkpoint_body(seq, str(entry.get("head_hash")))
        _check_signature(self.keys, body, entry.get("signature"), f"checkpoint {seq}", seq)
        self.checkpoints.add(seq)
        self.pending.append(entry)
        self._match_pending()

    def _match_pending(self) -> None:
        still = []
        for entry in self.pending:
            seq = entry["seq"]
            if seq not in self.hashes:
                still.append(entry)
            elif self.hashes[seq] != entry["head_hash"]:
                first = self.last_good_checkpoint + 1
                raise _Broken(
                    first,
                    f"the chain does not match the signed checkpoint at event {seq}: an event "
                    f"from {first} to {seq} was changed and the hashes after it recomputed",
                )
            else:
                self.last_good_checkpoint = max(self.last_good_checkpoint, seq)
        self.pending = still

    def finish(self) -> ExportReport:
        m = self.manifest
        if m is None:
            raise _Broken(None, "the file is empty: no manifest")
        last = self.expected - 1
        if last < m["to_seq"]:
            raise _Broken(
                last + 1, f"events after {last} were cut off (the export ends at {m['to_seq']})"
            )
        if self.prev != m["last_hash"]:
            first = self.last_good_checkpoint + 1
            raise _Broken(
                first,
                f"the chain does not end at the signed hash: an event from {first} to "
                f"{m['to_seq']} was changed and the hashes after it recomputed",
            )
        if self.events != m["events"] or len(self.elided) != m["elided"]:
            raise _Broken(None, "the export holds other events than its signed manifest says")
        missing = self.promised - self.checkpoints
        if missing:
            raise _Broken(
                min(missing),
                f"the signed checkpoint at event {min(missing)} was removed from the export",
            )
        return self.report(None, None)
