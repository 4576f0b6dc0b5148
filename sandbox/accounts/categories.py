"""An enterprise's public categories: industry, district and size band (migration 0016).

The bureau's programme tables (``sandbox.programme``) break their figures down by one of
them at a time.  They are public facts about an enterprise, set by the operator when it
creates the enterprise or later; unset ones are null, and such an enterprise is counted
under "not set" in a breakdown by that category.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from i18n import Msg
from policies import audit
from policies.capabilities import Capability, require
from policies.errors import InvalidRequest, NotFound
from policies.principals import Principal, Role
from sandbox.runtime.veil import Veil


class Category(enum.StrEnum):
    """A public category of enterprises; its value is the principal's attribute of that name."""

    INDUSTRY = "industry"
    DISTRICT = "district"
    SIZE_BAND = "size_band"


class SizeBand(enum.StrEnum):
    """Size bands of the national classification of enterprises (大中小微企业划型)."""

    MICRO = "micro"
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"


#: Longest industry or district name.
MAX_LENGTH = 64
#: First characters a spreadsheet reads as a formula (CSV/XLSX exports show categories).
_FORMULA_STARTS = ("=", "+", "-", "@")


def validate(category: Category, value: str | None) -> str | None:
    """``value`` stripped and checked for ``category`` (None, or empty: unset), or
    :class:`InvalidRequest` saying what is allowed."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if category is Category.SIZE_BAND:
        if text not in set(SizeBand):
            raise InvalidRequest(
                Msg(
                    "size_band must be one of {allowed}",
                    allowed=", ".join(band.value for band in SizeBand),
                )
            )
        return text
    if len(text) > MAX_LENGTH or not text.isprintable() or text.startswith(_FORMULA_STARTS):
        raise InvalidRequest(
            Msg(
                "{category} must be 1-{limit} printable characters not starting with "
                "=, +, - or @, for example 'machinery' or 'Jiangbei'",
                category=category.value,
                limit=MAX_LENGTH,
            )
        )
    return text


def apply(enterprise: Principal, given: Mapping[Category, str | None]) -> dict[str, str | None]:
    """Set the categories ``given`` on ``enterprise`` (validated first, all or none); what
    they are now, for the audit log."""
    checked = {category: validate(category, value) for category, value in given.items()}
    for category, value in checked.items():
        setattr(enterprise, category.value, value)
    return {category.value: value for category, value in checked.items()}


def current(enterprise: Principal) -> dict[str, str | None]:
    """Every category of ``enterprise`` (None: not set)."""
    return {category.value: getattr(enterprise, category.value) for category in Category}


def set_categories(
    veil: Veil, operator: Principal, enterprise_id: str, given: Mapping[Category, str | None]
) -> Principal:
    """Change some of an enterprise's categories (operator); audited with the change."""
    require(operator, Capability.MANAGE_PRINCIPALS)
    with veil.db.transaction() as session:
        enterprise = session.get(Principal, enterprise_id)
        if enterprise is None or enterprise.role != Role.ENTERPRISE:
            raise NotFound("enterprise", enterprise_id)
        before = current(enterprise)
        after = apply(enterprise, given)
        audit.record(
            session,
            "enterprise.categorised",
            actor=operator,
            tenant_id=enterprise.id,
            resource=f"principal:{enterprise.id}",
            details={"before": {k: before[k] for k in after}, "after": after},
        )
    return enterprise
