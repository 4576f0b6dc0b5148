"""Usage receipts: what one provider did with one enterprise's data in a period, signed.

A receipt lists, from the database, the provider's jobs on the enterprise's datasets
submitted in ``[since, until)`` (purpose, tier, status, the ε and δ the ledger charged,
the hashes of released results), the budget of each grant and the datasets'
enterprise-wide caps, and the approvals the enterprise gave that provider in the period
(grants, code reviews, held outputs), each with the sequence number of its audit event.
It names the audit chain's head when it was issued, so it can be checked against an
exported log.  The key server's Ed25519 audit key signs
``b"veil/receipt\\n" + canonical JSON`` of every field but ``signature`` and
``key_version``; :func:`verify_receipt` checks that offline with the public key alone.
Reading the data, signing, and auditing the issue (``receipt.issued``, with the
receipt's SHA-256) happen in one transaction, so the receipt matches the anchor.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from i18n import Msg
from keys import key_operation
from policies import audit
from policies.budget import ZERO, Budget
from policies.capabilities import Capability, may, require
from policies.db import new_id
from policies.errors import Forbidden, InvalidRequest, NotFound
from policies.grants import BudgetDebit, Grant
from policies.principals import Principal, Role
from sandbox.oversight.receipt_format import (
    FORMAT,
    InvalidReceipt,
    dumps,
    load_public_keys,
    load_receipt,
    receipt_sha256,
    render_html,
    sign_receipt,
    verify_receipt,
)
from sandbox.runtime.veil import Veil
from sandbox.store.models import CodeRequest, Dataset, Job, JobStatus

SIGNING_KEY_NAME: Final = "veil-platform/audit-signing"  # keys.tenancy's platform signing key
DEFAULT_PERIOD: Final = timedelta(days=30)
MAX_PERIOD: Final = timedelta(days=366)
JOB_ACTIONS: Final = ("job.submitted", "job.denied", "job.released", "job.refunded")
APPROVAL_ACTIONS: Final = (
    "grant.created",
    "grant.changed",
    "grant.revoked",
    "code.approved",
    "code.denied",
    "job.released",  # by hand only: the worker's releases have no actor
    "job.rejected",
)
_CHUNK: Final = 500
_NOTHING: Final = (ZERO, ZERO)
_SEQ_OF: Final = {"job.released": "released_seq", "job.refunded": "refunded_seq"}
T = TypeVar("T", str, int)


# ---------------------------------------------------------------- who may ask, and for what


def resolve_period(
    now: datetime, since: datetime | None, until: datetime | None
) -> tuple[datetime, datetime]:
    """``[since, until)``: until defaults to now, since to 30 days before until."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidRequest(
                Msg(
                    "{name} needs a time zone, e.g. '2026-01-31T00:00:00Z'",
                    name=name,
                )
            )
    end = until or now
    start = since or end - DEFAULT_PERIOD
    if end > now:
        raise InvalidRequest(Msg("until lies in the future; leave it out to mean now"))
    if start >= end:
        raise InvalidRequest(Msg("since must be before until"))
    if end - start > MAX_PERIOD:
        raise InvalidRequest(
            Msg(
                "the period may be at most {days} days; ask for several receipts",
                days=MAX_PERIOD.days,
            )
        )
    return start, end


def _enterprise_for(session: Session, caller: Principal, enterprise_id: str | None) -> Principal:
    """The enterprise the caller may receive a receipt about (role and scope checked)."""
    require(caller, Capability.READ_RECEIPTS)
    if may(caller, Capability.OWN_DATA):  # the data holder asks about itself
        if enterprise_id not in (None, caller.id):
            raise Forbidden(
                Msg("an enterprise receives receipts on its own data only; leave enterprise_id out")
            )
        return caller
    if enterprise_id is None:
        raise InvalidRequest(Msg("operators and security officers must name the enterprise_id"))
    in_scope = may(caller, Capability.READ_RECEIPTS, enterprise_id)
    enterprise = session.get(Principal, enterprise_id)
    if not in_scope or enterprise is None or enterprise.role != Role.ENTERPRISE:
        raise NotFound("enterprise", enterprise_id)  # out of scope answers like missing
    return enterprise


def _provider(session: Session, provider_id: str) -> Principal:
    provider = session.get(Principal, provider_id)
    if provider is None or provider.role != Role.PROVIDER:
        raise NotFound("provider", provider_id)
    return provider


# ---------------------------------------------------------------- issuing


def build_receipt(
    veil: Veil,
    caller: Principal,
    provider_id: str,
    since: datetime | None = None,
    until: datetime | None = None,
    enterprise_id: str | None = None,
) -> dict[str, Any]:
    """Read, sign and audit a receipt in one transaction; return it (a JSON-able dict)."""
    now = veil.clock()
    start, end = resolve_period(now, since, until)
    with veil.db.transaction() as session:
        head = session.get(audit.AuditHead, 1, with_for_update=True)  # writers wait for us
        anchor_seq, anchor_hash = (head.seq, head.hash) if head else (0, audit.GENESIS)
        enterprise = _enterprise_for(session, caller, enterprise_id)
        provider = _provider(session, provider_id)
        body: dict[str, Any] = {
            "format": FORMAT,
            "id": new_id("rcpt"),
            "issuer": {"name": "Veil", "signing_key": SIGNING_KEY_NAME},
            "issued_at": _time(now),
            "issued_to": {"id": caller.id, "role": caller.role, "name": caller.name},
            "enterprise": {"id": enterprise.id, "name": enterprise.name},
            "provider": {"id": provider.id, "name": provider.name},
            "period": {"since": _time(start), "until": _time(end)},
            **_contents(session, enterprise.id, provider.id, start, end),
            "audit_anchor": {
                "seq": anchor_seq,
                "hash": anchor_hash,
                "receipt_event_seq": anchor_seq + 1,
            },
        }
        with key_operation(f"receipt:{body['id']}/1"):  # named in the key server's log
            receipt = sign_receipt(body, veil.keys.sign)
        event = audit.record(
            session,
            "receipt.issued",
            actor=caller,
            tenant_id=enterprise.id,
            resource=f"receipt:{receipt['id']}",
            details={
                "provider_id": provider.id,
                "since": body["period"]["since"],
                "until": body["period"]["until"],
                "jobs": len(body["jobs"]),
                "receipt_sha256": receipt_sha256(receipt),
            },
        )
        if event.seq != anchor_seq + 1:  # pragma: no cover - the head lock forbids it
            raise RuntimeError("the audit chain moved while a receipt was issued")
    return receipt


def _contents(
    session: Session, enterprise_id: str, provider_id: str, since: datetime, until: datetime
) -> dict[str, Any]:
    jobs = list(
        session.scalars(
            select(Job)
            .where(
                Job.provider_id == provider_id,
                Job.enterprise_id == enterprise_id,
                Job.created_at >= since,
                Job.created_at < until,
            )
            .order_by(Job.created_at, Job.id)
        )
    )
    charged = _charges(session, [j.id for j in jobs])
    seqs = _job_events(session, enterprise_id, [j.id for j in jobs])
    all_grants = session.scalars(
        select(Grant).where(Grant.enterprise_id == enterprise_id, Grant.provider_id == provider_id)
    )
    used = {j.grant_id for j in jobs}
    grants = [g for g in all_grants if g.id in used or _overlaps(g, since, until)]
    dataset_ids = {j.dataset_id for j in jobs} | {d for g in grants for d in g.dataset_ids}
    datasets = {
        d.id: d
        for d in session.scalars(
            select(Dataset).where(
                Dataset.id.in_(dataset_ids), Dataset.enterprise_id == enterprise_id
            )
        )
    }
    entries = [_job_entry(j, datasets, charged.get(j.id, _NOTHING), seqs[j.id]) for j in jobs]
    approvals = _approvals(session, enterprise_id, provider_id, grants, since, until)
    return {
        "totals": _totals(entries, approvals),
        "purposes": _purposes(entries),
        "jobs": entries,
        "grants": [_grant_entry(g, entries) for g in grants],
        "datasets": [
            _dataset_entry(d, entries) for d in sorted(datasets.values(), key=lambda d: d.id)
        ],
        "results_released": [
            {k: e[k] for k in ("job_id", "result_sha256", "artifact_sha256", "released_seq")}
            for e in entries
            if e["status"] == JobStatus.RELEASED
        ],
        "approvals": approvals,
    }


def _chunks(ids: Iterable[T]) -> Iterable[list[T]]:
    """Sorted, distinct items in lists short enough for any database's IN clause."""
    items = sorted(set(ids))
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def _charges(session: Session, job_ids: list[str]) -> dict[str, tuple[Budget, Budget]]:
    """Per job, exactly: what the ledger charged in the end (its debits less any refund)
    and what it gave back (denied jobs: nothing)."""
    debited: dict[str, Budget] = defaultdict(Budget)
    refunded: dict[str, Budget] = defaultdict(Budget)
    for chunk in _chunks(job_ids):
        for entry in session.scalars(select(BudgetDebit).where(BudgetDebit.job_id.in_(chunk))):
            book = refunded if entry.is_refund else debited
            book[entry.job_id] += entry.amount
    return {
        job_id: (debited[job_id] - refunded[job_id], refunded[job_id])
        for job_id in debited.keys() | refunded.keys()
    }


def _job_events(
    session: Session, enterprise_id: str, job_ids: list[str]
) -> dict[str, dict[str, int | None]]:
    """Per job: the seq of its submission (or denial), budget debit, release and refund
    events."""
    seqs: dict[str, dict[str, int | None]] = defaultdict(
        lambda: {
            "submitted_seq": None,
            "debited_seq": None,
            "released_seq": None,
            "refunded_seq": None,
        }
    )
    submitted: dict[int, str] = {}
    for chunk in _chunks(job_ids):
        events = session.scalars(
            select(audit.AuditEvent).where(
                audit.AuditEvent.tenant_id == enterprise_id,
                audit.AuditEvent.action.in_(JOB_ACTIONS),
                audit.AuditEvent.resource.in_([f"job:{i}" for i in chunk]),
            )
        )
        for event in events:
            job_id = (event.resource or "").removeprefix("job:")
            seqs[job_id][_SEQ_OF.get(event.action, "submitted_seq")] = event.seq
            if event.action == "job.submitted":
                submitted[event.seq + 1] = job_id  # the debit is logged right after it
    for seq_chunk in _chunks(submitted):
        debits = session.scalars(
            select(audit.AuditEvent).where(
                audit.AuditEvent.seq.in_(seq_chunk),
                audit.AuditEvent.action == "budget.debited",
            )
        )
        for event in debits:
            if event.details.get("job_id") == submitted[event.seq]:
                seqs[submitted[event.seq]]["debited_seq"] = event.seq
    return seqs


def _approvals(
    session: Session,
    enterprise_id: str,
    provider_id: str,
    grants: list[Grant],
    since: datetime,
    until: datetime,
) -> list[dict[str, Any]]:
    """The enterprise's own decisions about this provider in the period, from the audit log."""
    events = list(
        session.scalars(
            select(audit.AuditEvent)
            .where(
                audit.AuditEvent.tenant_id == enterprise_id,
                audit.AuditEvent.actor_id == enterprise_id,
                audit.AuditEvent.action.in_(APPROVAL_ACTIONS),
                audit.AuditEvent.at >= since,
                audit.AuditEvent.at < until,
            )
            .order_by(audit.AuditEvent.seq)
        )
    )
    refs = [(e.resource or "").partition(":")[::2] for e in events]
    owned = {
        kind: _of_provider(session, model, {i for k, i in refs if k == kind}, provider_id)
        for kind, model in (("grant", Grant), ("code", CodeRequest), ("job", Job))
    }
    owned["grant"] |= {g.id for g in grants}
    return [
        {
            "seq": e.seq,
            "at": _time(e.at),
            "action": e.action,
            "resource": e.resource,
            "details": e.details,
            "event_hash": e.hash,
        }
        for e, (kind, ident) in zip(events, refs, strict=True)
        if ident in owned.get(kind, set())
    ]


def _of_provider(
    session: Session, model: type[Grant | CodeRequest | Job], ids: set[str], provider_id: str
) -> set[str]:
    """Those of ``ids`` (grants, code requests or jobs) that concern ``provider_id``."""
    found: set[str] = set()
    for chunk in _chunks(ids):
        query = select(model.id).where(model.id.in_(chunk), model.provider_id == provider_id)
        found |= set(session.scalars(query))
    return found


# ---------------------------------------------------------------- entries


def _time(value: datetime | None) -> str | None:
    return value.isoformat(timespec="microseconds") if value is not None else None


def _charged(entries: list[dict[str, Any]]) -> Budget:
    """What the ledger charged for ``entries`` (job entries) together."""
    return Budget(sum(e["epsilon_units"] for e in entries), sum(e["delta_units"] for e in entries))


def _overlaps(grant: Grant, since: datetime, until: datetime) -> bool:
    """Whether the grant was in force (created, valid, not revoked) at some time of the period."""
    start = max(grant.created_at, grant.valid_from)
    end = min(grant.valid_until, grant.revoked_at or grant.valid_until)
    return start < until and end > since


def _job_entry(
    job: Job,
    datasets: Mapping[str, Dataset],
    charged: tuple[Budget, Budget],
    seqs: Mapping[str, int | None],
) -> dict[str, Any]:
    released = job.status == JobStatus.RELEASED
    dataset = datasets.get(job.dataset_id)
    spent, refunded = charged
    return {
        "job_id": job.id,
        "dataset_id": job.dataset_id,
        "dataset_name": dataset.name if dataset else None,
        "grant_id": job.grant_id,
        "purpose": job.purpose,
        "tier": job.tier,
        "status": job.status,
        "reasons": list(job.reasons) if job.status == JobStatus.DENIED else [],
        "epsilon_charged": spent.epsilon,
        "delta_charged": spent.delta,
        "epsilon_units": spent.epsilon_units,
        "delta_units": spent.delta_units,
        "epsilon_refunded": refunded.epsilon,
        "delta_refunded": refunded.delta,
        "submitted_at": _time(job.created_at),
        "finished_at": _time(job.finished_at),
        "result_sha256": job.result_sha256 if released else None,
        "artifact_sha256": job.artifact_sha256 if released else None,
        **seqs,
    }


def _totals(entries: list[dict[str, Any]], approvals: list[dict[str, Any]]) -> dict[str, Any]:
    spent = _charged(entries)
    by_status = Counter(e["status"] for e in entries)
    return {
        "jobs": len(entries),
        "by_status": dict(sorted(by_status.items())),
        "epsilon_charged": spent.epsilon,
        "delta_charged": spent.delta,
        "results_released": by_status.get(JobStatus.RELEASED, 0),
        "approvals": len(approvals),
    }


def _purposes(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for e in entries:
        row = rows.setdefault(e["purpose"], {"purpose": e["purpose"], "jobs": 0, "released": 0})
        row["jobs"] += 1
        row["released"] += e["status"] == JobStatus.RELEASED
        row["epsilon_units"] = row.get("epsilon_units", 0) + e["epsilon_units"]
    for row in rows.values():
        row["epsilon_charged"] = Budget(row.pop("epsilon_units")).epsilon
    return sorted(rows.values(), key=lambda r: str(r["purpose"]))


def _grant_entry(grant: Grant, entries: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [e for e in entries if e["grant_id"] == grant.id]
    spent = _charged(mine)
    return {
        "grant_id": grant.id,
        "dataset_ids": grant.dataset_ids,
        "purposes": grant.purposes,
        "tiers": grant.tiers,
        "valid_from": _time(grant.valid_from),
        "valid_until": _time(grant.valid_until),
        "revoked_at": _time(grant.revoked_at),
        "jobs_in_period": len(mine),
        "epsilon_spent_in_period": spent.epsilon,
        "delta_spent_in_period": spent.delta,
        "epsilon_budget": grant.budget_total.epsilon,
        "delta_budget": grant.budget_total.delta,
        "epsilon_spent_total": grant.budget_spent.epsilon,
        "delta_spent_total": grant.budget_spent.delta,
    }


def _dataset_entry(dataset: Dataset, entries: list[dict[str, Any]]) -> dict[str, Any]:
    mine = [e for e in entries if e["dataset_id"] == dataset.id]
    return {
        "dataset_id": dataset.id,
        "name": dataset.name,
        "epsilon_spent_by_provider_in_period": _charged(mine).epsilon,
        "epsilon_cap": dataset.cap.epsilon,
        "delta_cap": dataset.cap.delta,
        "epsilon_spent_all_providers": dataset.cap_spent.epsilon,
        "delta_spent_all_providers": dataset.cap_spent.delta,
    }


__all__ = [
    "FORMAT",
    "InvalidReceipt",
    "build_receipt",
    "dumps",
    "load_public_keys",
    "load_receipt",
    "receipt_sha256",
    "render_html",
    "resolve_period",
    "verify_receipt",
]
