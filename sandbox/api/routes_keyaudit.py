"""The key server's audit log next to Veil's (operators and security officers)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel

from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import OptionalTime
from sandbox.oversight import keyaudit

router = APIRouter(prefix="/v1", tags=["audit"])


class ExplanationOut(BaseModel):
    """The Veil record behind a key operation: ``kind`` upload (id: dataset version), job,
    model-download (id: job), enterprise, rotation, checkpoint (id: the event signed),
    receipt, export, signing-key (reading its public half) or setup (before Veil's first
    event); ``seq``: its audit event."""

    kind: str
    id: str
    seq: int | None


class KeyOperationOut(BaseModel):
    """One operation on keys, policies or authentication from the key server's audit log
    (``tenant_id`` null: the platform's); ``object`` is Veil's tag (``dataset:<id>/<version>``,
    ``job:<id>/1``, ``rotation:<id>/1``, ...), absent when the request carried none;
    ``path``: namespace and path; ``alarming``: it succeeded and nothing explains it."""

    tenant_id: str | None
    at: datetime
    operation: str
    object: str | None
    ok: bool
    request_id: str
    remote_address: str | None
    actor: str | None
    explained_by: ExplanationOut | None
    path: str
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


class PlatformKeyAuditOut(BaseModel):
    """Operations outside every enterprise: Veil's base namespace and those above it."""

    counts: dict[str, int]
    explained: int
    unexplained: int
    operations: list[KeyOperationOut]
    truncated: bool


class KeyAuditOut(BaseModel):
    """``ok`` is false when an operation on keys, policies or authentication is unexplained;
    ``tagging`` says whether the key server logs Veil's ``X-Veil-Object`` header (present,
    hmac, absent, unknown); ``platform`` and ``unattributed``: null in a view narrowed to
    some tenants."""

    ok: bool
    since: datetime | None
    tagging: str
    notes: list[str]
    tenants: list[TenantKeyAuditOut]
    platform: PlatformKeyAuditOut | None
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
    """Operations on keys, policies and authentication per tenant (and the platform's) from
    the key server's own audit log, each with the Veil record that explains it, and every
    one that nothing explains."""
    report = keyaudit.key_audit(veil, caller, tenant_id=tenant_id, since=since)
    return KeyAuditOut.model_validate(report, from_attributes=True)
