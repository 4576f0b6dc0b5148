"""The node's equipment online rate, reported: each finished day's counts of devices
configured and online (``sandbox.data.liveness``), signed by the node's key server.

Only the two counts per day leave the node: never a device's name, a source or a value.
The days finished in the last :data:`REPORT_DAYS` are sent together when they changed since
last sent (a new day finished, a late read recorded); the control plane keeps the last
report of each day, so sending a day again changes nothing. A day still under way is not
sent: its counts may grow until midnight (UTC).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from node.protocol.client import ControlPlane, ControlPlaneRefused
from node.protocol.signing import sign
from policies import audit
from sandbox.data.liveness import daily_counts
from sandbox.runtime.veil import Veil

#: How many finished days each report covers (a node away longer loses the oldest).
REPORT_DAYS = 400
#: How often the counts are read again.
EVERY_S = 60.0
PATH = "/node/v1/liveness"

log = logging.getLogger(__name__)


def document(veil: Veil) -> dict[str, Any]:
    """The report: the finished days' counts, oldest first (the node's one enterprise)."""
    today = veil.clock().date()
    with veil.db.read() as session:
        counts = daily_counts(session, before=today, since=today - timedelta(days=REPORT_DAYS))
    return {
        "kind": "equipment_liveness",
        "days": [{"day": c.day, "configured": c.configured, "online": c.online} for c in counts],
    }


class LivenessReporter:
    """Sends the report when it changed; remembers (in memory) what was last sent."""

    def __init__(self, veil: Veil, control: ControlPlane, node_id: str) -> None:
        self.veil, self.control, self.node_id = veil, control, node_id
        self._sent: list[dict[str, Any]] | None = None
        self._read_at: float | None = None

    def report(self) -> int:
        """Send the finished days if they changed (read every ``EVERY_S``); 1 if sent."""
        now = time.monotonic()
        if self._read_at is not None and now - self._read_at < EVERY_S:
            return 0
        self._read_at = now
        doc = document(self.veil)
        if not doc["days"] or doc["days"] == self._sent:
            return 0
        try:
            self.control.call("PUT", PATH, sign(self.veil, self.node_id, doc))
        except ControlPlaneRefused as exc:
            if exc.status >= 500:
                raise
            # Not sent again until the counts change: a refusal is for the operators to look
            # at, and must not stop the node's jobs (a control plane without the route).
            log.error("the control plane refused this node's equipment counts: %s", exc)
            self._sent = doc["days"]
            return 0
        self._sent = doc["days"]
        with self.veil.db.transaction() as session:
            audit.record(
                session,
                "node.liveness_reported",
                resource="liveness",
                details={
                    "days": len(doc["days"]),
                    "first": doc["days"][0]["day"],
                    "last": doc["days"][-1]["day"],
                },
            )
        return 1
