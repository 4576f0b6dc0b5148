"""The node reports its equipment online rate to the control plane: each finished day's counts
of devices configured and online, signed by the node's key server, audited on both sides,
never a device's name (node.catalog.liveness, sandbox.nodes.liveness; docs/sources.md)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from keys.node_auth import NodeIdentity, canonical_json
from node.catalog.liveness import PATH
from node.protocol.client import ControlPlane, ControlPlaneRefused
from node.protocol.signing import sign
from policies.audit import AuditEvent
from sandbox.data.liveness import record_read
from sandbox.programme.service import load_facts
from sandbox.store.source_models import DeviceDay, LivenessDay, SourceDeclaration, SourceState
from tests.nodes.conftest import NodeWorld


def _machine_source(world: NodeWorld) -> str:
    """A machine source on the node's dataset (its rows are not what this test is about)."""
    with world.node.db.transaction() as session:
        session.add(
            SourceDeclaration(
                id="src_liveness",
                dataset_id=world.dataset_id,
                enterprise_id=world.config.enterprise_id,
                kind="opcua",
                config={},
                secrets_version=0,
                credential_names=[],
            )
        )
        session.add(SourceState(source_id="src_liveness", failures=0))
    return "src_liveness"


def _read(world: NodeWorld, source_id: str, devices: dict[str, bool], moment: datetime) -> None:
    with world.node.db.transaction() as session:
        record_read(session, source_id, world.config.enterprise_id, devices, moment)


def _events(veil: Any, action: str) -> list[AuditEvent]:
    with veil.db.read() as session:
        found = list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))
        session.expunge_all()
        return found


def test_finished_days_reach_the_control_plane_as_counts_only(node_world: NodeWorld) -> None:
    world = node_world
    source = _machine_source(world)
    now = datetime.now(UTC)
    two_ago, yesterday = now - timedelta(days=2), now - timedelta(days=1)
    _read(world, source, {"press-1": True, "press-2": False, "mill-1": True}, two_ago)
    _read(world, source, {"press-1": False, "press-2": True, "mill-1": True}, two_ago)
    _read(world, source, {"press-1": True, "press-2": False, "mill-1": False}, yesterday)
    _read(world, source, {"press-1": True, "press-2": True, "mill-1": True}, now)  # under way

    world.link.publisher.liveness._read_at = None  # read every minute; the fixture's rounds did
    world.sync()
    with world.cp.db.read() as session:
        held = {r.day: (r.configured, r.online, r.node_id) for r in session.scalars(
            select(LivenessDay))}  # fmt: skip
        facts = load_facts(session, now)
    node_id = world.config.node_id
    assert held == {
        two_ago.date().isoformat(): (3, 3, node_id),
        yesterday.date().isoformat(): (3, 1, node_id),
    }  # today's, still under way, is not sent
    # The bureau's table reads them under the node's enterprise (a month's mean per day).
    months = {(e, m): f for (e, m), f in facts.equipment.items()}
    assert sum(c for (e, _), (c, _) in months.items() if e == world.config.enterprise_id) > 0

    # Audited on both sides: the control plane's chain, and the node's (with its signature).
    [received] = _events(world.cp, "node.liveness_reported")
    assert received.tenant_id == world.config.enterprise_id and received.details["days"] == 2
    [sent] = _events(world.node, "node.liveness_reported")
    assert sent.details["days"] == 2
    assert any(
        "equipment_liveness" in (e.resource or "") for e in _events(world.node, "node.signed")
    )
    # No device's name leaves the node: not in the control plane's rows, not in its log.
    with world.cp.db.read() as session:
        assert session.scalars(select(DeviceDay)).first() is None
        events = session.scalars(select(AuditEvent)).all()
        text = json.dumps([e.details for e in events], default=str)
    assert "press-1" not in text and "mill-1" not in text

    # Nothing new: nothing is sent again (the reporter reads every minute; forced here).
    world.link.publisher.liveness._read_at = None
    world.sync()
    assert len(_events(world.cp, "node.liveness_reported")) == 1


def _report(world: NodeWorld, days: list[dict[str, Any]], node_id: str | None = None) -> Any:
    doc = {"kind": "equipment_liveness", "days": days}
    return sign(world.node, node_id or world.config.node_id, doc)


def _client(world: NodeWorld) -> ControlPlane:
    return ControlPlane(world.cp_url, world.link.control.identity)


YESTERDAY = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()


def test_a_report_from_another_node_or_not_signed_by_the_node_is_refused(
    node_world: NodeWorld, tmp_path: Path
) -> None:
    world = node_world
    good = [{"day": YESTERDAY, "configured": 4, "online": 3}]
    # The request unsigned, or signed with another identity key: 401.
    unsigned = httpx.put(world.cp_url + PATH, json=_report(world, good))
    assert unsigned.status_code == 401
    stranger = NodeIdentity(world.config.node_id, NodeIdentity.generate_key(tmp_path / "other.key"))
    with pytest.raises(ControlPlaneRefused) as forged:
        ControlPlane(world.cp_url, stranger).call("PUT", PATH, _report(world, good))
    assert forged.value.status == 401
    # The document naming another node (signed by this node's key server): 403.
    with pytest.raises(ControlPlaneRefused) as other:
        _client(world).call("PUT", PATH, _report(world, good, node_id="nod_someoneelse"))
    assert other.value.status == 403
    # The document not signed by the node's key server (the control plane's key, altered).
    doc = {"kind": "equipment_liveness", "days": good, "node_id": world.config.node_id}
    wrong_key = world.cp.keys.sign(canonical_json(doc)).to_text()
    for signed in (
        {"document": doc, "signature": wrong_key},
        {**_report(world, good), "document": {**doc, "days": [{**good[0], "online": 4}]}},
    ):
        with pytest.raises(ControlPlaneRefused) as bad:
            _client(world).call("PUT", PATH, signed)
        assert bad.value.status == 403
    with world.cp.db.read() as session:
        assert session.scalars(select(LivenessDay)).first() is None
    assert _events(world.cp, "node.liveness_reported") == []


@pytest.mark.parametrize(
    "days",
    [
        [{"day": datetime.now(UTC).date().isoformat(), "configured": 2, "online": 1}],
        [{"day": YESTERDAY, "configured": 2, "online": 3}],
        [{"day": YESTERDAY, "configured": -1, "online": 0}],
        [{"day": YESTERDAY, "configured": 2.5, "online": 1}],
        [{"day": YESTERDAY, "configured": 2, "online": 1, "devices": ["press-1"]}],
        [{"day": "yesterday", "configured": 2, "online": 1}],
    ],
    ids=["today", "more-online", "negative", "fraction", "names", "not-a-day"],
)
def test_a_malformed_report_is_refused(node_world: NodeWorld, days: list[Any]) -> None:
    with pytest.raises(ControlPlaneRefused) as refused:
        _client(node_world).call("PUT", PATH, _report(node_world, days))
    assert refused.value.status == 422


def test_a_day_sent_again_is_kept_once_and_a_later_report_replaces_it(
    node_world: NodeWorld,
) -> None:
    world = node_world
    first = [{"day": YESTERDAY, "configured": 4, "online": 3}]
    assert _client(world).call("PUT", PATH, _report(world, first)) == {"changed": 1}
    assert _client(world).call("PUT", PATH, _report(world, first)) == {"changed": 0}
    time.sleep(0.01)
    later = [{"day": YESTERDAY, "configured": 4, "online": 4}]
    assert _client(world).call("PUT", PATH, _report(world, later)) == {"changed": 1}
    with world.cp.db.read() as session:
        [row] = session.scalars(select(LivenessDay)).all()
    assert (row.configured, row.online, row.enterprise_id) == (4, 4, world.config.enterprise_id)
