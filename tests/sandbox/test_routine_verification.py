"""Routine verification of the audit chain reads only what came after the newest recorded
full verification (sandbox.runtime.verification; docs/oversight.md, "Full and routine
verification"), and never gives an all-clear the full verification would not: a change
after the anchor, a rewrite that recomputes the hashes, a forged or altered record, and a
broken chain found by the last full verification are each reported."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from keys import LocalKeyServer
from policies import audit
from policies.audit import AuditEvent
from sandbox.client import VeilClient
from sandbox.jobs.workers import Upkeep
from sandbox.oversight.audit_log import verify_chain
from sandbox.runtime import verification
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import bootstrap_operator, open_veil
from tests.policies.chains import CHAIN_HASHES, rehash
from tests.sandbox.conftest import settings_for

pytestmark = pytest.mark.integration


@pytest.fixture
def chain_hash() -> str:
    """The chain's hash from its start (the tamper tests run under each)."""
    return audit.SHA256


@pytest.fixture
def veil(tmp_path: Path, key_server: LocalKeyServer, chain_hash: str) -> Iterator[Veil]:
    settings = settings_for(tmp_path, key_server, audit_verify_interval_s=0.001)
    with open_veil(settings, worker=False) as running:
        with running.db.transaction() as session:
            switched = audit.switch_chain_hash(session, chain_hash)
        assert switched == (chain_hash != audit.SHA256)
        yield running


def _log(veil: Veil, count: int) -> None:
    with veil.db.transaction() as session:
        for i in range(count):
            audit.record(session, "test.event", details={"i": i})


def _anchored(veil: Veil) -> int:
    """Forty events, a signed checkpoint, a recorded full verification; the anchor."""
    _log(veil, 40)
    checkpoint = veil.checkpoint()
    assert checkpoint is not None
    recorded = verification.record_full(veil)
    assert recorded.ok and recorded.full_at is not None
    return checkpoint.seq


def _sql(veil: Veil, statement: str) -> None:
    with veil.db.transaction() as session:
        session.execute(text(statement))


@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
def test_routine_reads_from_the_anchor_and_reports_what_the_full_verification_finds(
    veil: Veil,
) -> None:
    assert verification.routine(veil).from_seq == 0  # no record yet: every event
    anchor = _anchored(veil)
    _log(veil, 10)
    routine = verification.routine(veil)
    assert routine.ok and routine.from_seq == anchor and routine.full_at is not None
    assert routine.events == verify_chain(veil).events  # the same chain, to its head

    # An event before the anchor altered in place (its hash left alone): the routine check
    # does not read it; the full one does, and once recorded, the routine check says so.
    _sql(veil, "UPDATE audit_events SET details = '{\"i\": 999}' WHERE seq = 3")
    assert verification.routine(veil).ok
    assert verify_chain(veil).first_bad_seq == 3
    found = verification.record_full(veil)
    assert not found.ok and found.first_bad_seq == 3
    after = verification.routine(veil)
    assert not after.ok and after.first_bad_seq == 3
    assert "full verification" in (after.problem or "")


@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
def test_a_change_after_the_anchor_is_found_at_once(veil: Veil) -> None:
    anchor = _anchored(veil)
    _log(veil, 5)
    _sql(veil, f"UPDATE audit_events SET outcome = 'denied' WHERE seq = {anchor + 2}")  # noqa: S608
    report = verification.routine(veil)
    assert not report.ok and report.first_bad_seq == anchor + 2


@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
def test_a_rewrite_that_recomputes_every_hash_breaks_the_anchor(veil: Veil) -> None:
    """Event 3 changed and every later hash recomputed (and the head): the chain links up,
    but the hash at the anchor is no longer the one its checkpoint signed."""
    _anchored(veil)
    with veil.db.transaction() as session:
        events = list(session.scalars(select(AuditEvent).order_by(AuditEvent.seq)))
        events[2].details = {"i": 999}
        head = session.get(audit.AuditHead, 1)
        assert head is not None
        head.hash = rehash(events)
    report = verification.routine(veil)
    assert not report.ok


@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
@pytest.mark.parametrize("forgery", ["unsigned", "altered"])
def test_a_forged_or_altered_record_is_reported(veil: Veil, forgery: str) -> None:
    """A record added at the head (its hash chained properly) claiming an anchor past an
    altered event, or a real record whose details were changed: neither is signed."""
    _anchored(veil)
    _log(veil, 3)
    if forgery == "unsigned":
        checkpoint = veil.checkpoint()
        assert checkpoint is not None
        details = {"id": "ver_forged", "at": "2026-12-05T00:00:00+00:00", "ok": True,
                   "events": checkpoint.seq, "anchor_seq": checkpoint.seq,
                   "anchor_hash": checkpoint.head_hash, "first_bad_seq": None,
                   "problem": None, "signature": "veil-ed25519:v1:AAAA"}  # fmt: skip
        with veil.db.transaction() as session:
            audit.record(session, verification.ACTION, details=details)
    else:
        with veil.db.transaction() as session:
            record = session.scalars(
                select(AuditEvent).where(AuditEvent.action == verification.ACTION)
            ).one()
            record.details = {**record.details, "events": record.details["events"] + 1}
            in_force = audit.chain_hash_after(session, record.seq - 1)
            record.hash = audit.chain_hash(record.prev_hash, record.canonical(), in_force)
        # (the chain after the record is now broken too; the record is what is reported)
    report = verification.routine(veil)
    assert not report.ok and "not signed" in (report.problem or "")


def test_the_upkeep_records_a_full_verification_when_something_was_logged(veil: Veil) -> None:
    upkeep = Upkeep(veil)
    _log(veil, 3)
    upkeep()
    upkeep()  # nothing logged since the record: no second one

    with veil.db.read() as session:
        records = list(
            session.scalars(select(AuditEvent).where(AuditEvent.action == verification.ACTION))
        )
    assert len(records) == 1 and records[0].details["ok"] is True
    _log(veil, 1)
    upkeep()
    with veil.db.read() as session:
        count = session.scalar(
            select(text("count(*)"))
            .select_from(AuditEvent)
            .where(AuditEvent.action == verification.ACTION)
        )
    assert count == 2


def test_the_api_records_and_reports_where_it_started(veil: Veil) -> None:
    token = bootstrap_operator(veil)
    assert token is not None
    with ApiThread(veil.settings, veil) as url, VeilClient(url, token) as operator:
        _log(veil, 20)
        operator.checkpoint()
        recorded = operator.record_audit_verification()
        assert recorded["ok"] and recorded["full_verification_at"]
        routine = operator.verify_audit()
        assert routine["ok"] and routine["verified_from_seq"] > 0
        full = operator.verify_audit(full=True)
        assert full["ok"] and full["verified_from_seq"] == 0
        assert full["events"] == routine["events"]
    with veil.db.read() as session:
        record = session.scalars(
            select(AuditEvent).where(AuditEvent.action == verification.ACTION)
        ).one()
    assert record.actor_role == "operator"
    assert json.loads(json.dumps(record.details))["anchor_seq"] == routine["verified_from_seq"]
