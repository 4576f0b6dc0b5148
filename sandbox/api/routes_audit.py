"""The audit log: search, export (verifiable offline), public key, checkpoints, verification."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import StreamingResponse

from sandbox.api.deps import PrincipalDep, VeilDep
from sandbox.api.schemas import AuditEventOut, CheckpointOut, OptionalTime, VerifyOut
from sandbox.oversight import audit_log as oversight
from sandbox.runtime import verification

router = APIRouter(prefix="/v1/audit", tags=["audit"])
MAX_SEQ = 2**63 - 1  # the largest integer the database stores


@router.get("/events")
def audit_events(
    veil: VeilDep,
    caller: PrincipalDep,
    before_seq: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    since: OptionalTime = None,
    until: OptionalTime = None,
    tenant_id: str | None = None,
    actor_id: str | None = None,
    role: str | None = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    outcome: str | None = None,
    resource: Annotated[str | None, Query(max_length=120)] = None,
) -> list[AuditEventOut]:
    """Events newest first, filtered (a trailing ``*`` on action or resource matches a
    prefix); page on with ``before_seq`` = the last ``seq`` received."""
    where = oversight.EventFilter(
        since=since,
        until=until,
        tenant_id=tenant_id,
        actor_id=actor_id,
        role=role,
        action=action,
        outcome=outcome,
        resource=resource,
    )
    events = oversight.list_events(veil, caller, where=where, before_seq=before_seq, limit=limit)
    return [AuditEventOut.model_validate(e, from_attributes=True) for e in events]


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
def audit_export(
    veil: VeilDep,
    caller: PrincipalDep,
    from_seq: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
    to_seq: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
    since: OptionalTime = None,
    until: OptionalTime = None,
) -> StreamingResponse:
    """A range as JSON Lines: a signed manifest, the events, and the signed checkpoints in
    it; check it with ``veil audit verify --offline FILE --public-key KEY``."""
    lines = oversight.export(
        veil, caller, from_seq=from_seq, to_seq=to_seq, since=since, until=until
    )
    return StreamingResponse(
        lines,
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="veil-audit.jsonl"'},
    )


@router.get("/public-key", response_class=Response)
def audit_public_key(veil: VeilDep, caller: PrincipalDep) -> Response:
    """Every version of the signing key's public half (PEM), to verify exports and
    receipts offline; any principal may fetch it."""
    return Response(oversight.public_keys_pem(veil), media_type="application/x-pem-file")


@router.post("/checkpoints", status_code=status.HTTP_201_CREATED)
def audit_checkpoint(veil: VeilDep, caller: PrincipalDep) -> CheckpointOut | None:
    """Sign the chain head now with the key server's Ed25519 key."""
    cp = oversight.sign_checkpoint(veil, caller)
    return CheckpointOut.model_validate(cp, from_attributes=True) if cp else None


@router.get("/verify")
def audit_verify(veil: VeilDep, caller: PrincipalDep, full: bool = False) -> VerifyOut:
    """Verify the chain: by default from the newest recorded full verification (the events
    after its signed checkpoint; docs/oversight.md), every event with ``full=true``."""
    verify = oversight.verify_chain if full else verification.routine
    return VerifyOut.of(verify(veil, caller))


@router.post("/verifications", status_code=status.HTTP_201_CREATED)
def audit_record_verification(veil: VeilDep, caller: PrincipalDep) -> VerifyOut:
    """Verify every event now and record the result, signed, in the chain: routine
    verifications start from it."""
    return VerifyOut.of(verification.record_full(veil, caller))
