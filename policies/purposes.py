"""The city's purpose vocabulary: the purposes a grant may name, each with a code and names.

A city programme keeps one list of the purposes for which enterprises may let providers
use their data (process optimisation, predictive maintenance, ...).  A new grant names
purposes by their codes, and only codes of the list that are not retired; grants made
before a purpose was retired, or before the list existed, keep their purposes and keep
working (nothing here reads them again).  The list is maintained by principals holding
``MANAGE_PURPOSES`` (``sandbox.grants.purposes``); migration 0019 seeds it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from sqlalchemy import String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from i18n import Msg
from policies.db import Base, UTCDateTime, utcnow
from policies.errors import InvalidRequest

#: A code: lower-case ASCII letters, digits and single hyphens, 2-64 characters.
CODE: Final = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
CODE_MAX: Final = 64
NAME_MAX: Final = 100

#: The list a new installation starts with (migration 0019 writes it): code, zh, en.
SEED: Final = (
    ("process-optimization", "工艺优化", "Process optimisation"),
    ("predictive-maintenance", "预测性维护", "Predictive maintenance"),
    ("quality-analysis", "质量分析", "Quality analysis"),
    ("energy-management", "能源管理", "Energy management"),
    ("production-scheduling", "生产排程", "Production scheduling"),
    ("supply-chain-collaboration", "供应链协同", "Supply-chain collaboration"),
)


class Purpose(Base):
    """One purpose of the vocabulary; retired ones stay (old grants and letters name them)."""

    __tablename__ = "purposes"

    code: Mapped[str] = mapped_column(String(CODE_MAX), primary_key=True)
    name_zh: Mapped[str] = mapped_column(String(NAME_MAX))
    name_en: Mapped[str] = mapped_column(String(NAME_MAX))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


def check_code(code: str) -> str:
    """``code`` if it is a well-formed purpose code; :class:`InvalidRequest` otherwise."""
    if not (2 <= len(code) <= CODE_MAX) or not CODE.fullmatch(code):
        raise InvalidRequest(
            Msg(
                "a purpose code is 2-64 lower-case letters, digits and single hyphens, "
                "e.g. 'energy-management'"
            )
        )
    return code


def _name(value: str, field: str) -> str:
    name = value.strip()
    if not name or len(name) > NAME_MAX or not name.isprintable():
        raise InvalidRequest(
            Msg("{field} must be 1-100 printable characters", field=field),
        )
    return name


def set_purpose(
    session: Session, code: str, name_zh: str, name_en: str, *, retired: bool, now: datetime
) -> tuple[Purpose, dict[str, Any]]:
    """Add a purpose, or rename, retire or restore one; the purpose and what changed
    (``{field: {before, after}}``; every field for a new one)."""
    purpose = session.get(Purpose, check_code(code))
    zh, en = _name(name_zh, "name_zh"), _name(name_en, "name_en")
    before = describe(purpose) if purpose is not None else {}
    if purpose is None:
        purpose = Purpose(code=code, name_zh=zh, name_en=en, created_at=now, updated_at=now)
        session.add(purpose)
    purpose.name_zh, purpose.name_en = zh, en
    if retired and purpose.retired_at is None:
        purpose.retired_at = now
    elif not retired:
        purpose.retired_at = None
    after = describe(purpose)
    changes = {
        k: {"before": before.get(k), "after": v}
        for k, v in after.items()
        if k not in ("code", "created_at", "updated_at") and before.get(k) != v
    }
    if changes:
        purpose.updated_at = now
    session.flush()
    return purpose, changes


def list_purposes(session: Session) -> list[Purpose]:
    """The whole vocabulary, retired purposes included, by code."""
    return list(session.scalars(select(Purpose).order_by(Purpose.code)))


def require_current(session: Session, codes: Iterable[str]) -> list[Purpose]:
    """The purposes named by ``codes``, each in the vocabulary and not retired; else
    :class:`InvalidRequest` naming the codes that are not (the caller's own input)."""
    wanted = sorted({c.strip() for c in codes})
    found = {
        p.code: p
        for p in session.scalars(select(Purpose).where(Purpose.code.in_(wanted)))
        if p.retired_at is None
    }
    missing = [c for c in wanted if c not in found]
    if missing:
        raise InvalidRequest(
            Msg(
                "purposes {purposes} are not in the city's purpose vocabulary (or are "
                "retired); name purposes by their codes from GET /v1/purposes "
                "('veil purposes list')",
                purposes=", ".join(repr(c) for c in missing),
            )
        )
    return [found[c] for c in wanted]


def describe(purpose: Purpose) -> dict[str, Any]:
    """A purpose as the API shows it."""
    return {
        "code": purpose.code,
        "name_zh": purpose.name_zh,
        "name_en": purpose.name_en,
        "retired": purpose.retired_at is not None,
        "retired_at": purpose.retired_at,
        "created_at": purpose.created_at,
        "updated_at": purpose.updated_at,
    }
