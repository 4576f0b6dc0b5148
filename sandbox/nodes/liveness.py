"""A node's report of its equipment online rate: each finished day's counts of devices
configured and online, signed by the node's key server (``node.catalog.liveness``).

The control plane keeps the counts under the node's own enterprise (``liveness_days``),
the last report of each day winning; it never receives a device's name. The bureau sees
them only through the ``equipment`` programme table (``sandbox.programme``).
"""

from __future__ import annotations

from datetime import date
from typing import Any, Final

from i18n import Msg
from policies import audit
from policies.errors import InvalidRequest
from sandbox.nodes.mirror import verify_node_document
from sandbox.runtime.veil import Veil
from sandbox.store.node_models import Node
from sandbox.store.source_models import LivenessDay

KIND: Final = "equipment_liveness"
#: At most this many days in one report (a node sends its last 400 finished ones).
MAX_DAYS: Final = 400
#: A count of devices above this is refused as a mistake (an SME's plant has fewer).
MAX_DEVICES: Final = 10_000_000


def _day(entry: Any, today: date) -> tuple[str, int, int]:
    """One day's (day, configured, online), checked."""
    if not isinstance(entry, dict) or set(entry) != {"day", "configured", "online"}:
        raise InvalidRequest(Msg("each day is {day, configured, online}"))
    try:
        day = date.fromisoformat(str(entry["day"]))
    except ValueError:
        raise InvalidRequest(Msg("a day is a date, YYYY-MM-DD")) from None
    if day >= today:
        raise InvalidRequest(Msg("only finished days are reported: a day before today (UTC)"))
    configured, online = entry["configured"], entry["online"]
    counts = (configured, online)
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts):
        raise InvalidRequest(Msg("configured and online are whole numbers"))
    if not 0 <= online <= configured <= MAX_DEVICES:
        raise InvalidRequest(
            Msg("a day's counts need 0 <= online <= configured <= {most}", most=MAX_DEVICES)
        )
    return day.isoformat(), configured, online


def accept_report(veil: Veil, node: Node, signed: dict[str, Any]) -> int:
    """Store a node's signed daily counts for its enterprise; how many days were new or
    changed. 403 if the node's key server did not sign it or it names another node."""
    document = verify_node_document(node, signed)
    if document.get("kind") != KIND:
        raise InvalidRequest(Msg("the document is not an equipment liveness report"))
    days = document.get("days")
    if not isinstance(days, list) or len(days) > MAX_DAYS:
        raise InvalidRequest(Msg("'days' is a list of at most {most} days", most=MAX_DAYS))
    now = veil.clock()
    checked = {day: (c, o) for day, c, o in (_day(entry, now.date()) for entry in days)}
    changed = []
    with veil.db.transaction() as session:
        for day, (configured, online) in sorted(checked.items()):
            row = session.get(LivenessDay, (node.enterprise_id, day))
            if row is not None and (row.configured, row.online) == (configured, online):
                continue
            if row is None:
                row = LivenessDay(enterprise_id=node.enterprise_id, day=day)
                session.add(row)
            row.configured, row.online = configured, online
            row.node_id, row.received_at = node.id, now
            changed.append(day)
        if changed:
            audit.record(
                session,
                "node.liveness_reported",
                tenant_id=node.enterprise_id,
                resource=f"node:{node.id}",
                details={"days": len(changed), "first": changed[0], "last": changed[-1]},
            )
    return len(changed)
