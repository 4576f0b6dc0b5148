"""The control plane's records of enterprise nodes (migration 0011)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from i18n import Msg
from policies.db import Base, UTCDateTime, utcnow
from policies.errors import Conflict


class NodeStatus(enum.StrEnum):
    PENDING = "pending"  # created with a one-time enrolment code, not yet enrolled
    ACTIVE = "active"
    RETIRED = "retired"


class Node(Base):
    """One enterprise's node: where its data and keys live."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    enterprise_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), unique=True)
    status: Mapped[str] = mapped_column(String(12))
    #: PEM of the Ed25519 key the node signs its requests with (``keys.node_auth``).
    identity_key: Mapped[str | None] = mapped_column(Text, default=None)
    #: PEM of the node key server's signing keys, every version the node published (grants
    #: and releases, ``keys.signing``); only ever extended (``registry.publish_signing_keys``).
    signing_key: Mapped[str | None] = mapped_column(Text, default=None)
    enrolment_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    enrolment_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    def summary(self) -> dict[str, object]:
        seen = self.last_seen_at.isoformat() if self.last_seen_at else None
        return {
            "id": self.id,
            "enterprise_id": self.enterprise_id,
            "status": self.status,
            "enrolled_at": self.enrolled_at.isoformat() if self.enrolled_at else None,
            "last_seen_at": seen,
        }


class NodeNonce(Base):
    """A request nonce a node used, kept for the clock window (a replay is refused)."""

    __tablename__ = "node_nonces"

    node_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(32), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


def node_of(session: Session, enterprise_id: str | None) -> Node | None:
    """The node that holds ``enterprise_id``'s data, if it has one (pending or enrolled)."""
    if enterprise_id is None:
        return None
    return session.scalar(select(Node).where(Node.enterprise_id == enterprise_id))


def refuse_if_on_node(session: Session, enterprise_id: str | None) -> None:
    """409 ``data_on_node`` for an action on data that lives on the enterprise's node."""
    if node_of(session, enterprise_id) is not None:
        raise Conflict(
            Msg(
                "this enterprise keeps its data and grants on its own node: do this on the "
                "node (its console, or `veil` pointed at the node), not on the control plane"
            ),
            code="data_on_node",
        )
