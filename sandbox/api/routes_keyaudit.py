"""The key server's audit log next to Veil's (operators and security officers)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from sandbox import keyaudit
from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import OptionalTime

router = APIRouter(prefix="/v1", tags=["audit"])


class ExplanationOut(BaseModel):
    """The Veil record behind a key operation: ``kind`` upload (id: dataset version), job,
    model-download (id: job) or enterprise; ``seq``: its audit event."""

    kind: str
    id: str
    seq: int | None


class KeyOperationOut(BaseModel):
    """One operation from the key server's audit log; ``object`` is Veil's tag
    (``dataset:<id>/<version>``, ``job:<id>/1``), absent when the request carried none;
    ``alarming``: it exposed key material and nothing explains it."""

    tenant_id: str
    at: datetime
    operation: str
    object: str | None
    ok: bool
    request_id: str
    remote_address: str | None
    actor: str | None
    explained_by: ExplanationOut | None
    alarming: bool


class VeilEventOut(BaseModel):
    seq: int
    at: datetime
    action: str
    outcome: str
    resource: str | None


class TenantKeyAuditOut(BaseModel):
    """A tenant's key operations (newest 1000; ``counts`` cover all) and Veil's events."""

    tenant_id: str
    slug: str
    name: str
    counts: dict[str, int]
    explained: int
    unexplained: int
    operations: list[KeyOperationOut]
    events: list[VeilEventOut]
    truncated: bool


class KeyAuditOut(BaseModel):
    """``ok`` is false when a decryption is unexplained; ``tagging`` says whether the key
    server logs Veil's ``X-Veil-Object`` header (present, hmac, absent, unknown)."""

    ok: bool
    since: datetime | None
    tagging: str
    notes: list[str]
    tenants: list[TenantKeyAuditOut]
    unexplained: list[KeyOperationOut]
    unattributed: int | None
    entries_read: int


@router.get("/audit/keys")
def key_audit(
    veil: VeilDep,
    caller: PrincipalDep,
    tenant_id: str | None = None,
    since: OptionalTime = None,
) -> KeyAuditOut:
    """Key operations per tenant from the key server's own audit log, each with the Veil
    record that explains it, and every decryption that nothing explains."""
    report = keyaudit.key_audit(veil, caller, tenant_id=tenant_id, since=since)
    return KeyAuditOut.model_validate(report, from_attributes=True)
