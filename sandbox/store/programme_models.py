"""The control plane's record of the programme's cell-key secret (migration 0016)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from policies.db import Base, UTCDateTime, utcnow


class ProgrammeSecret(Base):
    """A named random secret of the programme's tables (hex); written once, never shown.

    ``record-keys``: each enterprise's cell-key record key is derived from it
    (``sandbox.programme.protection``).  Whoever read it could recompute every cell's
    perturbation: it leaves the database through no API, export or log.
    """

    __tablename__ = "programme_secrets"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
