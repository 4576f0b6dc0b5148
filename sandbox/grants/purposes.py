"""The city's purpose vocabulary as its users reach it: everyone reads it, principals with
``MANAGE_PURPOSES`` (the operator; the bureau) add, rename, retire and restore purposes.

Every change is audited (``purpose.set``) in the transaction that makes it.
"""

from __future__ import annotations

from typing import Any

from i18n import Msg
from policies import audit
from policies.capabilities import Capability, require
from policies.errors import InvalidRequest
from policies.principals import Principal
from policies.purposes import Purpose, list_purposes, set_purpose
from sandbox.runtime.veil import Veil


def _jsonable(changes: dict[str, Any]) -> dict[str, Any]:
    return {
        k: {side: v.isoformat() if hasattr(v, "isoformat") else v for side, v in d.items()}
        for k, d in changes.items()
    }


def purposes(veil: Veil, principal: Principal) -> list[Purpose]:
    """The whole vocabulary (any authenticated principal: it is the programme's, not data)."""
    _ = principal  # authenticated by the caller; no capability is needed to read it
    with veil.db.read() as session:
        return list_purposes(session)


def set_one(
    veil: Veil,
    principal: Principal,
    code: str,
    name_zh: str,
    name_en: str,
    *,
    retired: bool = False,
) -> Purpose:
    """Add ``code``, or change its names or whether it is retired (audited)."""
    require(principal, Capability.MANAGE_PURPOSES)
    with veil.db.transaction() as session:
        purpose, changes = set_purpose(
            session, code, name_zh, name_en, retired=retired, now=veil.clock()
        )
        if not changes:
            raise InvalidRequest(Msg("nothing to change: the purpose already reads so"))
        audit.record(
            session,
            "purpose.set",
            actor=principal,
            resource=f"purpose:{purpose.code}",
            details={"changes": _jsonable(changes)},
        )
    return purpose
