"""Tier 5: providers submit syft functions, enterprises review them and see held outputs
(which ``sandbox.jobs.outcomes.decide_held`` releases or rejects).

A provider submits the source of one syft function for one dataset and purpose
(``analytics.syft_code`` says what the source must look like).  Veil parses it (never
runs it here), works out the columns it names, checks them against the provider's
tier-5 grant, runs it **on the mock only** inside a job sandbox, and stores it as a
pending code request with that mock output.  The enterprise sees the code, the
columns, the mock output, and approves or denies it with a reason.  The approval
pins the source's SHA-256: the source of a request cannot change, and a job runs
only the approved request's source after checking its hash again (here and inside
the sandbox).  A tier-5 job's output goes through ``analytics.output_checks`` in the
worker; an output held by the checks waits for the enterprise to release or reject
it, with a reason.  Every step is audited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from analytics.output_checks import Inspection, from_record, inspect_output, record, verdict
from analytics.schema import ColumnClass, DatasetSchema
from analytics.syft_code import (
    CodeError,
    SyftCode,
    columns_named,
    columns_read,
    parse_submission,
    source_sha256,
    string_literals,
)
from analytics.syft_dp import DpCall, DpError
from i18n import Msg
from policies import audit
from policies.capabilities import Capability, may, require
from policies.db import new_id
from policies.decisions import tier_not_granted
from policies.errors import Conflict, Forbidden, InvalidRequest, NotFound
from policies.grants import Grant
from policies.grants import grants_for as provider_grants
from policies.principals import Principal
from policies.tiers import CODE_TIER
from sandbox.accounts.tenants import require_reason
from sandbox.data.datasets import schema_from_json
from sandbox.isolation.child import Task, decode_value
from sandbox.isolation.pool import SandboxError, SandboxPool
from sandbox.jobs.held_outputs import load_held
from sandbox.runtime.veil import Veil
from sandbox.store.models import CodeRequest, CodeStatus, Dataset, Job, JobStatus
from sandbox.store.node_models import refuse_if_on_node

#: Rows of the mock a function is run on for its reviewer.
MOCK_ROWS: Final = 200
#: A budget for the DP helpers on the mock only: nothing real is spent there.
MOCK_EPSILON: Final = 10.0


@dataclass(frozen=True)
class CodeJob:
    """A tier-5 job's query: the approved code request it runs (resolved from the DB)."""

    code_request_id: str
    columns: tuple[str, ...] = ()


def parse_code_job(document: dict[str, Any]) -> CodeJob:
    keys = set(document)
    if keys != {"code_request_id"} or not isinstance(document["code_request_id"], str):
        raise InvalidRequest(
            Msg('a tier-5 job\'s query is {"code_request_id": "<id>"}, the approved code request')
        )
    return CodeJob(document["code_request_id"])


def resolve_code_job(
    session: Session, provider_id: str, dataset_id: str, job: CodeJob
) -> tuple[CodeJob, CodeRequest | None, str | None]:
    """The job with its columns, its code request, and why it may not run (or None)."""
    code = session.get(CodeRequest, job.code_request_id)
    if code is None or code.provider_id != provider_id or code.dataset_id != dataset_id:
        refused = Msg("code request '{id}' is not yours for this dataset", id=job.code_request_id)
        return job, None, refused
    resolved = CodeJob(code.id, tuple(code.columns))
    if code.status != CodeStatus.APPROVED:
        return (
            resolved,
            code,
            Msg("code request '{id}' is {status}, not approved", id=code.id, status=code.status),
        )
    if source_sha256(code.source) != code.sha256:
        return resolved, code, Msg("code request '{id}' changed after its approval", id=code.id)
    return resolved, code, None


def dp_required(schema: DatasetSchema, columns: tuple[str, ...]) -> bool:
    """Reviewed code given a confidential column must release DP values only."""
    return any(
        c.name in columns and c.column_class == ColumnClass.CONFIDENTIAL for c in schema.columns
    )


# ---------------------------------------------------------------- submission and review


def _tier5_grant(
    session: Session, veil: Veil, provider: Principal, dataset_id: str, purpose: str
) -> tuple[Dataset, Grant]:
    dataset = session.get(Dataset, dataset_id)
    now = veil.clock()
    grants = [g for g in provider_grants(session, provider.id, dataset_id) if g.active_at(now)]
    if dataset is None or not grants:
        raise NotFound("dataset", dataset_id)
    for grant in grants:
        if CODE_TIER in grant.tiers and purpose in grant.purposes:
            return dataset, grant
    if not any(CODE_TIER in grant.tiers for grant in grants):
        raise Forbidden(tier_not_granted(CODE_TIER), code="tier_not_granted")
    raise InvalidRequest(
        Msg(
            "no grant of yours allows tier 5 (reviewed code) for purpose "
            "'{purpose}' on this dataset",
            purpose=purpose,
        )
    )


def _columns(code: SyftCode, schema: DatasetSchema, grant: Grant) -> tuple[str, ...]:
    secret = {c.name for c in schema.columns if c.column_class == ColumnClass.SECRET}
    named_secret = sorted(secret & set(columns_named(code)))
    if named_secret:
        raise InvalidRequest(
            Msg(
                "the code names secret column(s) {columns}: secret columns can never be used",
                columns=", ".join(map(repr, named_secret)),
            )
        )
    usable = [c.name for c in schema.columns if c.column_class != ColumnClass.SECRET]
    used = columns_read(code, usable)
    outside = sorted(set(used) - set(grant.columns))
    if outside:
        raise InvalidRequest(
            Msg(
                "the code reads column(s) {columns}, which your grant does not give you",
                columns=", ".join(map(repr, outside)),
            )
        )
    if not used:
        raise InvalidRequest(
            Msg(
                'the code names no column of the dataset: name each column it reads, e.g. data["x"]'
            )
        )
    id_column = schema.privacy_unit.id_column
    if id_column is not None and id_column in grant.columns and id_column not in used:
        used = (*used, id_column)  # the DP helpers count ids, not rows
    return tuple(used)


def mock_task(schema: DatasetSchema, code: SyftCode, columns: tuple[str, ...]) -> Task:
    extra = {"columns": list(columns), "approved_sha256": code.sha256, "mock_rows": MOCK_ROWS}
    return Task("syft-mock", schema, code, epsilon=MOCK_EPSILON, extra=extra)


def _run_on_mock(
    veil: Veil, schema: DatasetSchema, code: SyftCode, columns: tuple[str, ...], min_count: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The function's output on the mock, run in a sandbox, with the checks' verdict on it
    (the mock is the private data here: the reviewer sees what the checks would say), and
    the reference a job's output is compared with (``analytics.output_checks.record``)."""
    from analytics.mock import mock_frame

    sandbox = SandboxPool(veil.settings, warm=False, code=True).take()
    try:
        answer = sandbox.run(mock_task(schema, code, columns), b"")
    except SandboxError as exc:
        raise InvalidRequest(
            Msg(
                "the function failed on the mock: {reason}",
                reason=exc.reason,
            )
        ) from None
    value = decode_value(answer.message["result"].get("output"), answer.blobs)
    mock = mock_frame(schema, MOCK_ROWS, 0).select(list(columns))
    calls = reported_calls(answer.message.get("dp_calls"))
    inspection = inspect_output(
        value, mock, schema, columns, min_count=min_count,
        dp_values=[released for _, released in calls], dp_calls=[call for call, _ in calls],
        dp_required=dp_required(schema, columns), labels=string_literals(code),
    )  # fmt: skip
    check = verdict(inspection, inspection, dp_required(schema, columns))
    preview = {
        "value": check.value,
        "checks": {"status": check.status, "reasons": list(check.reasons)},
    }
    reference = {**record(inspection), "dp_calls": [call.message() for call, _ in calls]}
    return preview, reference


def reported_calls(reported: object) -> list[tuple[DpCall, float]]:
    """The DP calls a run on the mock reports (its process held no private data: whatever
    it says is independent of the private data; malformed entries are dropped)."""
    calls = []
    for entry in reported if isinstance(reported, list) else []:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], dict)):
            continue
        try:
            call = DpCall.from_message(entry[0])
        except DpError:
            continue
        if isinstance(entry[1], int | float) and not isinstance(entry[1], bool):
            calls.append((call, float(entry[1])))
    return calls


def stored_reference(stored: dict[str, Any]) -> Inspection:
    """The reference ``Inspection`` a code request keeps (``_run_on_mock``)."""
    calls = [DpCall.from_message(message) for message in stored.get("dp_calls", [])]
    return from_record(stored, calls)


def submit_code(
    veil: Veil,
    provider: Principal,
    dataset_id: str,
    purpose: str,
    source: str,
    request_id: str | None = None,
) -> CodeRequest:
    """Parse, check against the grant, run on the mock (sandboxed), store as pending.

    ``request_id``: the id the control plane gave the request (on an enterprise's node,
    which keeps its own copy under the same id; ``node.work.code``)."""
    require(provider, Capability.SUBMIT_CODE)
    try:
        code = parse_submission(source)
    except CodeError as exc:
        raise InvalidRequest(
            Msg(
                "code: {problem}",
                problem=exc.args[0] if exc.args else str(exc),
            )
        ) from None
    with veil.db.transaction() as session:
        dataset, grant = _tier5_grant(session, veil, provider, dataset_id, purpose)
        schema = schema_from_json(dataset.declaration)
        columns = _columns(code, schema, grant)
        enterprise_id, min_count = dataset.enterprise_id, grant.min_group_size
    mock, reference = _run_on_mock(veil, schema, code, columns, min_count)
    with veil.db.transaction() as session:
        request = CodeRequest(
            id=request_id or new_id("code"),
            provider_id=provider.id,
            enterprise_id=enterprise_id,
            dataset_id=dataset_id,
            purpose=purpose,
            function_name=code.function_name,
            source=code.source,
            sha256=code.sha256,
            columns=list(columns),
            status=CodeStatus.PENDING,
            mock_output=mock,
            reference=reference,
            created_at=veil.clock(),
        )
        session.add(request)
        audit.record(
            session,
            "code.submitted",
            actor=provider,
            tenant_id=enterprise_id,
            resource=f"code:{request.id}",
            details={
                "dataset_id": dataset_id,
                "purpose": purpose,
                "function": code.function_name,
                "code_sha256": code.sha256,
                "columns": list(columns),
                "mock_checks": mock["checks"],
            },
        )
    veil.wake_nodes()  # a node holding the dataset takes the request for its review now
    return request


def visible_code(session: Session, principal: Principal, code_id: str) -> CodeRequest:
    """The provider's own request, or one on the enterprise's data; else NotFound."""
    code = session.get(CodeRequest, code_id)
    if code is None or principal.id not in (code.provider_id, code.enterprise_id):
        raise NotFound("code request", code_id)
    return code


def list_code(veil: Veil, principal: Principal, status: str | None = None) -> list[CodeRequest]:
    require(principal, Capability.READ_CODE)
    column = (
        CodeRequest.provider_id
        if may(principal, Capability.USE_GRANTS)
        else CodeRequest.enterprise_id
    )
    query = select(CodeRequest).where(column == principal.id)
    if status is not None:
        if status not in set(CodeStatus):
            raise InvalidRequest(Msg("status: expected pending, approved or denied"))
        query = query.where(CodeRequest.status == status)
    with veil.db.transaction() as session:
        return list(session.scalars(query.order_by(CodeRequest.created_at.desc())))


def review_code(
    veil: Veil, enterprise: Principal, code_id: str, approve: bool, reason: str
) -> CodeRequest:
    """Approve (pinning the source's hash) or deny a pending request, with a reason."""
    require(enterprise, Capability.REVIEW_CODE)
    text = require_reason(reason)
    with veil.db.transaction() as session:
        code = visible_code(session, enterprise, code_id)
        if code.enterprise_id != enterprise.id:
            raise NotFound("code request", code_id)
        refuse_if_on_node(session, code.enterprise_id)  # reviewed on the node, signed there
        if code.status != CodeStatus.PENDING:
            raise Conflict(
                Msg(
                    "code request '{code_id}' was already {status}",
                    code_id=code_id,
                    status=code.status,
                )
            )
        if source_sha256(code.source) != code.sha256:  # pragma: no cover - storage tampered
            raise Conflict(
                Msg(
                    "code request '{code_id}' does not match its hash",
                    code_id=code_id,
                )
            )
        code.status = CodeStatus.APPROVED if approve else CodeStatus.DENIED
        code.reviewer_id, code.review_reason, code.decided_at = enterprise.id, text, veil.clock()
        audit.record(
            session,
            "code.approved" if approve else "code.denied",
            actor=enterprise,
            tenant_id=enterprise.id,
            resource=f"code:{code.id}",
            details={"code_sha256": code.sha256, "reason": text, "provider_id": code.provider_id},
        )
        return code


# ---------------------------------------------------------------- outputs


@dataclass(frozen=True)
class CheckedOutput:
    """A tier-5 output after the checks: its JSON, verdict and the DP spend reported."""

    status: str  # "pass", "held" or "blocked"
    reasons: tuple[str, ...]
    result: dict[str, Any]
    details: dict[str, Any]


def held_output(veil: Veil, enterprise: Principal, job_id: str) -> dict[str, Any]:
    """A held output, decrypted for its enterprise to look at: job id, output, checks, hash."""
    require(enterprise, Capability.REVIEW_CODE)
    with veil.db.read() as session:
        job = session.get(Job, job_id)
        if job is None or job.enterprise_id != enterprise.id:
            raise NotFound("job", job_id)
        refuse_if_on_node(session, job.enterprise_id)  # the held output is on the node
        if job.status != JobStatus.HELD or job.artifact_path is None:
            raise Conflict(
                Msg(
                    "job '{job_id}' has no held output (status: {status})",
                    job_id=job_id,
                    status=job.status,
                )
            )
        assert enterprise.slug is not None
        held = load_held(veil, enterprise.slug, job)
    return {
        "job_id": job_id,
        "output": held["output"],
        "checks": held["checks"],
        "code_sha256": held["code_sha256"],
    }
