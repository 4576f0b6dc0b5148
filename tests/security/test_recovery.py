"""Recovery: what must hold after a crash or a key-server outage (``reliability/`` runs the
long versions of these against a real server process)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from keys import KeyServerUnavailable, LocalKeyServer
from policies.audit import AuditEvent
from sandbox.runtime.veil import Veil
from sandbox.service import bootstrap_operator, open_veil
from tests.sandbox.conftest import settings_for

pytestmark = pytest.mark.integration


def _outage_events(veil: Veil, timeout_s: float = 10.0) -> list[AuditEvent]:
    deadline = time.monotonic() + timeout_s
    while True:
        with veil.db.read() as session:
            events = list(
                session.scalars(
                    select(AuditEvent).where(AuditEvent.action == "key_server.unavailable")
                )
            )
        if events or time.monotonic() > deadline:
            return events
        time.sleep(0.05)


def test_key_server_failures_are_audited(tmp_path: Path, own_key_server: LocalKeyServer) -> None:
    """A request that fails because the key server is down leaves an audit event — also when
    the key call fails inside a write transaction (signing a checkpoint), without a deadlock."""
    with open_veil(settings_for(tmp_path, own_key_server), worker=False) as veil:
        assert bootstrap_operator(veil) is not None  # an event for the checkpoint to sign
        own_key_server.stop()
        with pytest.raises(KeyServerUnavailable, match="cannot reach the key server"):
            veil.keys.check()
        started = time.monotonic()
        with pytest.raises(KeyServerUnavailable):
            veil.checkpoint()
        assert time.monotonic() - started < 10  # the audit write did not wait for it
        events = _outage_events(veil)
    actions = {e.details["action"] for e in events}
    assert "check its health" in actions, actions
    assert all(e.outcome == "failed" and e.details["failures"] >= 1 for e in events)
