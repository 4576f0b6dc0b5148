"""Benchmark of the audit log: appending events, and verifying a log of 1M events.

* **Append**: ``policies.audit.record`` on a real SQLite database migrated with
  ``sandbox.store.database.migrate`` (WAL, ``synchronous=FULL``), one event per transaction
  (as most requests do) and 1 000 events in one transaction.
* **Verify**: ``policies.audit.verify``, the code behind ``veil audit verify``, the API
  and the console, over a database of ``--events`` events with a signed checkpoint every
  100 events (the default ``VEIL_AUDIT_CHECKPOINT_EVERY``), signed with a local Ed25519
  key; and ``policies.audit_export.verify_export`` over a signed export of the same events
  written to a file (``veil audit verify --offline``).

The baseline, measured in the same run, is raw hashing: SHA-256 over the same canonical
bytes, chained one event at a time as the log is (``sha256(previous digest + event)``).

* **SM3** (issue 23, ``VEIL_CRYPTO_PROFILE=gm``): full verification of a second database
  whose chain switched to SM3 at event 1 (an ``audit.chain_hash_switched`` event) and then
  holds the same events, against the SHA-256 chain's; and the raw SM3 chain against the
  raw SHA-256 chain over the same bytes.  Each pair takes turns, ``--repeats`` times.

The 1M-event database is filled fast: the chain is computed here and bulk-inserted, not
appended with ``record`` a million times.  The first events are also appended with
``record`` into a second database, and the two must hold exactly the same rows.

Run alone: ``.venv/bin/python bench/audit_bench.py [--events 1000000] [--repeats 5] [--quick]``
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.dialects import sqlite

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import REPEATS, Row, interleaved, row, series_row
from keys import Signature, SigningPublicKey
from policies import audit, audit_export
from policies.audit import GENESIS, Outcome, checkpoint_body
from policies.principals import Principal
from sandbox.store.database import Database, migrate

CHECKPOINT_EVERY = 100  # the default VEIL_AUDIT_CHECKPOINT_EVERY
NEW_EVENTS = 1_000  # logged since the last recorded full verification (routine check)
SAMPLE = 2_000  # events appended with record() too, and compared row for row
CHUNK = 50_000  # events built and inserted at a time while filling

# A fixed stand-in for the key server's signing key, so that a kept database verifies later.
_KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"veil audit bench").digest())
PUBLIC = {
    1: SigningPublicKey(
        1,
        _KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    )
}


def sign(message: bytes) -> Signature:
    """A stand-in for the key server's Ed25519 key (same algorithm, same text format)."""
    return Signature(1, _KEY.sign(message))


# -- a realistic stream of events -----------------------------------------------------------------

Event = dict[str, Any]
_NAMES = ["Globex Parts", "Müller Präzisionsteile GmbH", "上海精密制造有限公司", "Ōsaka Seiki ✓"]
_PURPOSES = ["process-optimization", "predictive-maintenance", "quality-analytics"]
_COLUMNS = ["cycle_time_s", "defects", "machine", "shift", "temperature_c", "yield_pct"]


def events(count: int, seed: int = 7) -> Iterator[Event]:
    """``count`` varied events like Veil's own (ids, nulls, floats, unicode, nested details)."""
    rng = random.Random(seed)

    def ident(prefix: str) -> str:
        return f"{prefix}_{rng.getrandbits(128):032x}"

    tenants = [ident("ent") for _ in range(20)]
    providers = [ident("prv") for _ in range(50)]
    datasets = {tenant: ident("ds") for tenant in tenants}
    grants = {provider: ident("gr") for provider in providers}
    at = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    for _ in range(count):
        bits = rng.getrandbits(64)  # one draw, cut into the choices below (cheaper)
        at += timedelta(microseconds=1 + (bits & 0xFFF))
        tenant, provider = tenants[(bits >> 12) % 20], providers[(bits >> 20) % 50]
        dataset, grant, job = datasets[tenant], grants[provider], ident("job")
        eps = (0.05, 0.1, 0.25, 0.5)[(bits >> 28) & 3]
        kind = ((bits >> 32) & 0xFFFF) / 0x10000
        event: Event = {"at": at, "tenant_id": tenant, "outcome": Outcome.OK}
        if kind < 0.30:
            event |= {
                "action": "job.submitted",
                "actor": (provider, "provider"),
                "resource": f"job:{job}",
                "details": {
                    "dataset_id": dataset,
                    "purpose": _PURPOSES[(bits >> 50) % 3],
                    "tier": (bits >> 52) % 6,
                    "epsilon": eps,
                    "delta": 0.0 if (bits >> 48) & 3 else 1e-06,
                    "grant_id": grant,
                },
            }
        elif kind < 0.55:
            event |= {
                "action": "budget.debited",
                "actor": (provider, "provider"),
                "resource": f"grant:{grant}",
                "details": {"job_id": job, "dataset_id": dataset, "epsilon": eps, "delta": 0.0},
            }
        elif kind < 0.80:
            event |= {
                "action": "job.released",
                "actor": None,
                "resource": f"job:{job}",
                "details": {
                    "result_sha256": f"{rng.getrandbits(256):064x}",
                    "epsilon_spent": eps,
                    "delta_spent": 0.0,
                },
            }
        elif kind < 0.90:
            event |= {
                "action": "job.denied",
                "actor": (provider, "provider"),
                "outcome": Outcome.DENIED,
                "resource": f"job:{job}",
                "details": {
                    "dataset_id": dataset,
                    "purpose": "marketing",
                    "reasons": ["purpose not granted", f"budget left: ε={eps / 3:.4f}"],
                },
            }
        elif kind < 0.96:
            event |= {
                "action": "auth.failed",
                "actor": None,
                "tenant_id": None,
                "outcome": Outcome.DENIED,
                "resource": None,
                "details": {"reason": "unknown token", "client": f"10.0.{rng.randrange(256)}.7"},
            }
        elif kind < 0.99:
            event |= {
                "action": "dataset.uploaded",
                "actor": (tenant, "enterprise"),
                "resource": f"dataset:{dataset}",
                "details": {
                    "version": rng.randrange(1, 9),
                    "format": "csv",
                    "ciphertext_sha256": f"{rng.getrandbits(256):064x}",
                    "size_bytes": rng.randrange(10**3, 10**10),
                },
            }
        else:
            event |= {
                "action": "grant.created",
                "actor": (tenant, "enterprise"),
                "resource": f"grant:{grant}",
                "details": {
                    "provider_id": provider,
                    "enterprise": {"name": rng.choice(_NAMES), "id": tenant},
                    "columns": rng.sample(_COLUMNS, 3),
                    "tiers": [0, 1, 2, 3],
                    "revoked_at": None,
                    "budget": {"epsilon": 1.0, "delta": 1e-05, "spent": {"epsilon": 0.0}},
                },
            }
        yield event


def record(session: Any, event: Event) -> audit.AuditEvent:
    actor = event["actor"]
    return audit.record(
        session,
        event["action"],
        actor=Principal(id=actor[0], role=actor[1]) if actor else None,
        outcome=event["outcome"],
        tenant_id=event["tenant_id"],
        resource=event["resource"],
        details=event["details"],
        at=event["at"],
    )


def raw_row(seq: int, event: Event) -> tuple[Any, ...]:
    """The event's columns as ``record`` stores them in SQLite (before the two hashes)."""
    actor = event["actor"] or (None, None)
    return (
        seq,
        event["at"].astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds"),
        actor[0],
        actor[1],
        event["tenant_id"],
        event["action"],
        str(event["outcome"]),
        event["resource"],
        audit.encode_canonical(event["details"]),  # as audit.CanonicalJSON writes them
    )


# -- filling a database fast ----------------------------------------------------------------------


def switched(count: int, algorithm: str) -> Iterator[Event]:
    """The switch of the chain to ``algorithm`` (as ``audit.switch_chain_hash`` writes it),
    then ``count`` events."""
    yield {"at": datetime(2026, 1, 5, 8, 0, tzinfo=UTC), "actor": None, "tenant_id": None,
           "action": audit.SWITCH_ACTION, "outcome": Outcome.OK, "resource": None,
           "details": {"from": audit.SHA256, "to": algorithm}}  # fmt: skip
    yield from events(count)


def fill(path: Path, count: int, algorithm: str = audit.SHA256) -> list[bytes]:
    """Write ``count`` chained events and a signed checkpoint every ``CHECKPOINT_EVERY``;
    return every event's canonical bytes, which the baseline hashes.

    The canonical bytes come from ``audit.row_canonicalizer`` on the very row stored; the
    sample check in ``check_sample`` holds them to what ``record`` writes.  Another
    ``algorithm`` than SHA-256: the first event is the switch to it (``count`` + 1 events).
    """
    canonical = audit.row_canonicalizer(sqlite.dialect())  # type: ignore[no-untyped-call]
    hasher = audit.HASHERS[audit.SHA256]
    prev, every = GENESIS, []
    con = sqlite3.connect(path, isolation_level=None)
    # Only while filling (the benchmark then opens it as Veil does): no fsync, and a page
    # cache large enough for the four indexes, which random ids otherwise keep re-reading.
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA cache_size=-524288")  # 512 MiB
    con.execute("BEGIN")
    stream = events(count) if algorithm == audit.SHA256 else switched(count, algorithm)
    count += algorithm != audit.SHA256
    for low in range(1, count + 1, CHUNK):
        rows, checkpoints, bodies = [], [], []
        for seq in range(low, min(low + CHUNK, count + 1)):
            row = raw_row(seq, next(stream))
            body = canonical(row)
            digest = hasher(bytes.fromhex(prev) + body).hexdigest()
            rows.append((*row, prev, digest))
            bodies.append(body)
            prev = digest
            if seq == 1 and algorithm != audit.SHA256:
                hasher = audit.HASHERS[algorithm]  # every event after the switch
            if seq % CHECKPOINT_EVERY == 0 or seq == count:
                created = row[1]
                checkpoints.append((seq, prev, sign(checkpoint_body(seq, prev)).to_text(), created))
        every += bodies
        con.executemany("INSERT INTO audit_events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        con.executemany(
            "INSERT INTO audit_checkpoints (seq, head_hash, signature, created_at) "
            "VALUES (?, ?, ?, ?)",
            checkpoints,
        )
    con.execute(
        "INSERT INTO audit_head (id, seq, hash, hash_alg) VALUES (1, ?, ?, ?)",
        (count, prev, algorithm),
    )
    con.execute("COMMIT")
    con.close()
    return every


def chain_seconds(bodies: list[bytes], algorithm: str = audit.SHA256) -> float:
    """The baseline: SHA-256 (or ``algorithm``) over each event's canonical bytes, chained
    as the log is."""
    hasher, digest = audit.HASHERS[algorithm], bytes(32)
    t0 = time.perf_counter()
    for body in bodies:
        h = hasher(digest + body)
        h.hexdigest()  # verification compares the hex text stored
        digest = h.digest()
    return time.perf_counter() - t0


def check_sample(path: Path, directory: Path, count: int) -> None:
    """The first events appended with ``record`` must be the very rows the fill wrote."""
    sample = directory / "sample.db"
    sample.unlink(missing_ok=True)
    url = f"sqlite:///{sample}"
    migrate(url)
    db = Database(url)
    try:
        with db.transaction() as session:
            for event in events(count):
                record(session, event)
        with db.transaction() as session:
            report = audit.verify(session, {})
        assert report.ok and report.events == count, report
    finally:
        db.dispose()
    query = "SELECT * FROM audit_events WHERE seq <= ? ORDER BY seq"
    written = sqlite3.connect(sample).execute(query, (count,)).fetchall()
    filled = sqlite3.connect(path).execute(query, (count,)).fetchall()
    assert written == filled, "the fill does not write what record() writes"


# -- measuring ------------------------------------------------------------------------------------


def append_rates(directory: Path, repeats: int, seconds: float, batch: int) -> dict[str, float]:
    """Events/s appended with ``record``: one per transaction, and ``batch`` per transaction;
    and the baseline, chained SHA-256 of the same events' canonical bytes."""
    url = f"sqlite:///{directory / 'append.db'}"
    migrate(url)
    db = Database(url)
    stream = events(10**7, seed=11)
    try:
        single = []
        for _ in range(repeats):
            count, t0 = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - t0) < seconds:
                with db.transaction() as session:
                    record(session, next(stream))
                count += 1
            single.append(count / elapsed)
        batched = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            with db.transaction() as session:
                for _ in range(batch):
                    record(session, next(stream))
            batched.append(batch / (time.perf_counter() - t0))
        with db.transaction() as session:
            bodies = [e.canonical() for e in session.query(audit.AuditEvent)]
        hashing = statistics.median(chain_seconds(bodies) for _ in range(repeats))
    finally:
        db.dispose()
    return {
        "single": statistics.median(single),
        "batched": statistics.median(batched),
        "sha": len(bodies) / hashing,
    }


def export_file(db: Database, path: Path, count: int) -> None:
    with db.transaction() as session:
        plan = audit_export.plan_export(
            session,
            1,
            count,
            scope=None,
            exported_by="so_bench",
            exported_at=datetime.now(UTC),
            sign=sign,
        )
    with path.open("wb") as out:
        out.writelines(audit_export.export_lines(db.transaction, plan))


def verify_export_file(path: Path) -> audit_export.ExportReport:
    with path.open("rb") as lines:
        return audit_export.verify_export(lines, PUBLIC)


def cpu_rate(count: int, action: Callable[[], object]) -> Callable[[], float]:
    """A measure for ``report.interleaved``: ``count`` per CPU second of one ``action``.

    CPU time of this process (``time.process_time``): on a shared machine it swings far
    less than the wall clock, and both sides run in this process, single-threaded."""

    def measure() -> float:
        t0 = time.process_time()
        action()
        return count / (time.process_time() - t0)

    return measure


def run(
    events: int = 200_000,
    repeats: int = REPEATS,
    *,
    quick: bool = False,
    export: bool = True,
    append_seconds: float = 2.0,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> list[Row]:
    """The audit rows.  Verification and its baselines take turns (``report.interleaved``)
    ``repeats`` times; ``quick`` cuts the log to 20 000 events and the turns to 3."""
    if quick:
        events, repeats, append_seconds = min(events, 20_000), min(repeats, 3), 0.5
    count = events
    size = f"{count / 1e6:g}M" if count >= 10**6 else f"{count:,}"
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="veil-audit-bench-") as tmp:
        directory = Path(tmp)
        rates = append_rates(directory, min(repeats, 3), append_seconds, batch=1_000)
        log(f"append: {rates}")
        rows.append(
            row(
                "audit append, 1 event per transaction (record, WAL, synchronous=FULL)",
                rates["single"],
                rates["sha"],
                "events/s",
                "report",
                None,
            )
        )
        rows.append(
            row(
                "audit append, 1000 events per transaction (record)",
                rates["batched"],
                rates["sha"],
                "events/s",
                "report",
                None,
            )
        )

        path = directory / "audit.db"
        url = f"sqlite:///{path}"
        migrate(url)
        t0 = time.perf_counter()
        bodies = fill(path, count)
        megabytes = sum(map(len, bodies)) / 1e6
        filled = time.perf_counter() - t0
        log(f"filled {count:,} events ({megabytes:.0f} MB canonical bytes) in {filled:.1f} s")
        check_sample(path, directory, min(SAMPLE, count))
        # The SM3 chain: switched at event 1, then the same events (half as many).
        sm3_count = max(count // 2, 1)
        sm3_path = directory / "audit-sm3.db"
        migrate(f"sqlite:///{sm3_path}")
        bodies_sm3 = fill(sm3_path, sm3_count, audit.SM3)[1:]  # the events after the switch
        exported = directory / "export.jsonl"

        db, db_sm3 = Database(url), Database(f"sqlite:///{sm3_path}")
        try:
            if export:
                t0 = time.perf_counter()
                export_file(db, exported, count)
                log(
                    f"export written in {time.perf_counter() - t0:.1f} s "
                    f"({exported.stat().st_size / 1e6:.0f} MB)"
                )
            reports: dict[str, Any] = {}

            def verify(name: str, database: Database) -> Callable[[], None]:
                def action() -> None:
                    # As sandbox.oversight.audit_log.verify_chain does.
                    with database.read() as session:
                        reports[name] = audit.verify(session, PUBLIC)

                return action

            def offline() -> None:
                reports["export"] = verify_export_file(exported)

            # Verification and the baselines take turns, so that all see the same load.
            measures = {
                "verify": cpu_rate(count, verify("sha", db)),
                "chain": cpu_rate(count, lambda: chain_seconds(bodies)),
                "verify sm3": cpu_rate(sm3_count, verify("sm3", db_sm3)),
                "chain sm3": cpu_rate(sm3_count, lambda: chain_seconds(bodies_sm3, audit.SM3)),
            }
            if export:
                measures["verify_export"] = cpu_rate(count, offline)
            t0 = time.perf_counter()
            series = dict(zip(measures, interleaved(repeats, *measures.values()), strict=True))
            log(f"{repeats} interleaved turns in {time.perf_counter() - t0:.1f} s")
            for name, values in series.items():
                log(f"{name}: {spread(values)} events per CPU second")
            report = reports["sha"]
            assert report.ok and report.events == count, report
            assert reports["sm3"].ok and reports["sm3"].events == sm3_count + 1, reports["sm3"]
            rows.append(
                series_row(
                    f"audit verify {size} events, {report.checkpoints:,} signed checkpoints (CPU)",
                    series["verify"],
                    series["chain"],
                    "events/s",
                    ">= 0.5x SHA-256 chain",
                    lambda _median, ratio: ratio is not None and ratio >= 0.5,
                )
            )
            if export:
                result = reports["export"]
                assert result.ok and result.events == count, result
                rows.append(
                    series_row(
                        f"audit verify_export {size} events (offline, from a file; CPU)",
                        series["verify_export"],
                        series["chain"],
                        "events/s",
                        "report",
                        None,
                    )
                )
            sm3_size = f"{sm3_count:,}"
            rows.append(
                series_row(
                    f"audit verify {sm3_size} events, SM3 chain (switched at event 1) vs the "
                    "SHA-256 chain's rate (CPU)",
                    series["verify sm3"],
                    series["verify"],
                    "events/s",
                    "report",
                    None,
                )
            )
            rows.append(
                series_row(
                    "audit raw chain hash, SM3 vs SHA-256 (CPU)",
                    series["chain sm3"],
                    series["chain"],
                    "events/s",
                    "report",
                    None,
                )
            )
            bodies.clear(), bodies_sm3.clear()  # memory, before the routine turns
            rows.append(routine_row(db, count, size, series["verify"], log))
        finally:
            db.dispose()
            db_sm3.dispose()
    return rows


def routine_row(
    db: Database,
    count: int,
    size: str,
    full: list[float],
    log: Callable[[str], None],
) -> Row:
    """The routine check (sandbox.runtime.verification): from the newest signed checkpoint at
    least NEW_EVENTS before the head, as if the last recorded full verification had anchored
    there; its baseline is the full verification (events per CPU second, ``full``)."""
    with db.read() as session:
        anchor = session.execute(
            select(audit.AuditCheckpoint.seq, audit.AuditCheckpoint.head_hash)
            .where(audit.AuditCheckpoint.seq <= count - NEW_EVENTS)
            .order_by(audit.AuditCheckpoint.seq.desc())
            .limit(1)
        ).one()
    routines, checked = [], None
    for _ in full:  # as many turns as the full verification had
        t0 = time.process_time()
        with db.read() as session:
            checked = audit.verify(session, PUBLIC, since=(anchor.seq, anchor.head_hash))
        routines.append((time.process_time() - t0) * 1000)
    assert checked is not None and checked.ok and checked.from_seq == anchor.seq, checked
    log(f"routine verify from event {anchor.seq:,}: {spread(routines)} ms CPU")
    full_ms = [count / rate * 1000 for rate in full]
    # O(new events): the routine check costs per new event what the full one costs per event
    # (at most twice: its fixed part, the anchor and the head), whatever the chain's length.
    share = (count - anchor.seq) / count
    return series_row(
        f"audit routine verify, {size} events, {count - anchor.seq:,} after the anchor "
        "(ms CPU; baseline: the full verification)",
        routines,
        full_ms,
        "ms",
        f"O(new events): <= 2x the full check's share ({share:.1%})",
        lambda median, _ratio: median <= 2 * share * statistics.median(full_ms),
    )


def spread(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):,.3f} (min {min(values):,.3f}, max {max(values):,.3f})"
    )


def main() -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--quick", action="store_true", help="20 000 events, 3 turns")
    parser.add_argument("--no-export", action="store_true", help="skip verify_export")
    args = parser.parse_args()
    rows = run(args.events, args.repeats, quick=args.quick, export=not args.no_export)
    from bench.report import print_rows

    print_rows(rows)
    return rows


if __name__ == "__main__":
    main()
