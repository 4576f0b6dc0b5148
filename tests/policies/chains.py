"""Audit chains under either hash: the tamper tests of the chain run over a SHA-256 chain
and over one that switched to SM3 early (issue 23), at the same positions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.orm import Session

from policies import audit

#: Every hash a chain may use: tamper tests are parametrized over these.
CHAIN_HASHES = [audit.SHA256, audit.SM3]
#: Where a chain meant for another hash than SHA-256 switches: events 1-2 and the switch
#: event itself are SHA-256, every later one is hashed with the other hash.
SWITCH_AT = 3


def append(session: Session, chain_hash: str, action: str = "test.event", **fields: Any) -> None:
    """``audit.record`` the event; in a chain meant for ``chain_hash`` (not SHA-256), the
    event at ``SWITCH_AT`` is the switch to it instead, so that positions stay the same."""
    head = session.get(audit.AuditHead, 1)
    if chain_hash != audit.SHA256 and (head.seq if head else 0) + 1 == SWITCH_AT:
        assert audit.switch_chain_hash(session, chain_hash)
    else:
        audit.record(session, action, **fields)


def rehash(events: Iterable[audit.AuditEvent], prev: str = audit.GENESIS) -> str:
    """What a careful forger does after editing: recompute every event's links and hash,
    each with the hash its position uses (following the switch events); the last hash."""
    algorithm = audit.SHA256
    for event in events:
        event.prev_hash = prev
        event.hash = prev = audit.chain_hash(prev, event.canonical(), algorithm)
        if event.action == audit.SWITCH_ACTION and event.details["to"] in audit.CHAIN_HASHES:
            algorithm = event.details["to"]
    return prev
