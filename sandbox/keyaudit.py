"""The key server's own audit log, per tenant, next to Veil's audit events.

Veil tags each data-key request with the object it serves (header
``X-Veil-Object: <object id>/<version>``, which the key server audits in clear;
see ``keys.key_operation``).  This module reads OpenBao's file audit log (JSON
lines), gives each key operation to its tenant (by namespace, or by transit
mount) and looks for the reason Veil recorded for it: the upload of a dataset
version (data key issued), a job running on it (data key decrypted), a job
storing its model or a download of a released model, the enterprise's
creation (namespace and key made).  A decryption that nothing explains is
*unexplained*.  How and why: ``docs/key-server-audit.md``.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from keys import OBJECT_HEADER, LocalKeyServer, Tenancy
from keys.auditlog import AuditEntry, parse_label, read_entries, transit_operation
from policies import audit
from policies.errors import Conflict, InvalidRequest, NotFound
from policies.principals import Principal, Role
from sandbox.core import Veil
from sandbox.models import Dataset, DatasetVersion, Job, JobStatus
from sandbox.settings import Settings
from sandbox.tenants import require_role

#: How far the key server's clock and Veil's may disagree.
CLOCK_SLACK = timedelta(seconds=2)
#: Operations that hand key material (or what it protects) to the caller: each needs a reason.
ALARMING = frozenset({"decrypt", "key.export", "key.backup"})
#: Most operations and events listed per tenant (the newest); counts cover everything.
LIST_LIMIT = 1000
_PROVISIONING = frozenset({"tenant.create", "key.create", "key.config"})
_MODEL_VERSION = 1  # sandbox.artifacts.ARTIFACT_VERSION
#: (label kind, operation) that a job's run explains: decrypting the dataset's version, and
#: making or unwrapping its cell-key secret for a tier-2 or tier-5 job (sandbox.cell_secrets).
_RUN_OPERATIONS = frozenset(
    {("dataset", "decrypt"), ("cellkey", "datakey.generate"), ("cellkey", "decrypt")}
)
_REASON_ACTIONS = ("enterprise.created", "dataset.uploaded", "job.submitted", "job.released",
                   "job.failed", "job.held")  # fmt: skip


@dataclass(frozen=True)
class Explanation:
    """The Veil record that explains a key operation: its kind, id, and audit event."""

    kind: str  # upload, job, model-download, enterprise
    id: str
    seq: int | None


@dataclass(frozen=True)
class KeyOperation:
    """One key operation of one tenant, from the key server's audit log."""

    tenant_id: str
    at: datetime
    operation: str  # datakey.generate, decrypt, rewrap, key.rotate, tenant.create, ...
    object: str | None  # the X-Veil-Object label, as sent
    ok: bool
    request_id: str
    remote_address: str | None
    actor: str | None  # the key server's display name of the token
    explained_by: Explanation | None

    @property
    def alarming(self) -> bool:
        """A successful operation that exposes key material and that nothing explains."""
        return self.ok and self.operation in ALARMING and self.explained_by is None


@dataclass
class TenantKeyAudit:
    """One tenant's key operations (the newest :data:`LIST_LIMIT`) and Veil's events."""

    tenant_id: str
    slug: str
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    explained: int = 0
    unexplained: int = 0
    operations: list[KeyOperation] = field(default_factory=list)
    events: list[audit.AuditEvent] = field(default_factory=list)
    truncated: bool = False


@dataclass
class KeyAuditReport:
    """``tagging``: whether the log carries Veil's object header (present, hmac, absent,
    unknown); ``unattributed``: data-key operations of no known tenant (None when the
    view was narrowed to some tenants)."""

    since: datetime | None
    tagging: str
    notes: list[str]
    tenants: list[TenantKeyAudit]
    unexplained: list[KeyOperation]
    unattributed: int | None
    entries_read: int

    @property
    def ok(self) -> bool:
        return not self.unexplained


def audit_log_path(settings: Settings) -> Path:
    """The key server's audit log that Veil reads, or Conflict saying what to configure."""
    path = settings.keyserver_audit_log
    if path is None and settings.embedded_key_server:
        path = LocalKeyServer(settings.keyserver_home).audit_log
    if path is None:
        raise Conflict(
            "the external key server's audit log is not available to Veil: set "
            "VEIL_KEYSERVER_AUDIT_LOG to the file of its file audit device "
            "(docs/key-server-audit.md)"
        )
    if not path.is_file():
        raise Conflict(
            "the key server's audit log cannot be read: check VEIL_KEYSERVER_AUDIT_LOG (or, "
            "for the embedded server, that it has started once)"
        )
    return path


# -- tenants and their reasons ----------------------------------------------------------------
class _Directory:
    """Which tenant a key-server request belongs to, from its namespace and path."""

    def __init__(self, veil: Veil, tenants: list[Principal]) -> None:
        self._mounts: dict[tuple[str, str], Principal] = {}
        self._admin: dict[tuple[str, str], Principal] = {}
        base = veil.keys.base_namespace
        for tenant in tenants:
            assert tenant.slug is not None
            loc = veil.keys.tenant_location(tenant.slug)
            self._mounts[(loc.namespace, loc.transit_mount)] = tenant
            if veil.keys.tenancy is Tenancy.NAMESPACE:
                self._admin[(base, f"sys/namespaces/{tenant.slug}")] = tenant
            else:
                self._admin[(base, f"sys/mounts/{loc.transit_mount}")] = tenant

    def attribute(self, entry: AuditEntry) -> tuple[Principal, str | None] | None:
        """(tenant, operation) for a request of a known tenant, else None."""
        parts = entry.path.split("/")
        for depth in (1, 2):  # "transit/..." (namespaces) or "veil-tenants/<t>/..." (mounts)
            tenant = self._mounts.get((entry.namespace, "/".join(parts[:depth])))
            if tenant is not None:
                return tenant, transit_operation("/".join(parts[depth:]), entry.how)
        tenant = self._admin.get((entry.namespace, entry.path))
        if tenant is None:
            return None
        if entry.how == "delete":
            return tenant, "tenant.destroy"
        return tenant, "tenant.create" if entry.how in ("create", "update") else None


@dataclass(frozen=True)
class _Run:
    """A job's run on a dataset version, and the audit event that closed it."""

    id: str
    dataset: tuple[str, int | None]
    started: datetime
    finished: datetime | None
    released_model: bool
    seq: int | None


@dataclass
class Reasons:
    """What Veil recorded for one tenant that can explain its key operations."""

    tenant_id: str
    created: tuple[datetime, int] | None = None
    uploads: dict[tuple[str, int], tuple[str, datetime, int]] = field(default_factory=dict)
    runs: dict[str, _Run] = field(default_factory=dict)


def load_reasons(veil: Veil, tenant_id: str) -> Reasons:
    """The tenant's creation, uploads (by dataset and version) and job runs, with events."""
    reasons, job_seq = Reasons(tenant_id), dict[str, int]()
    with veil.db.transaction() as session:
        versions = {
            (v.dataset_id, v.version): v.id
            for v in session.scalars(
                select(DatasetVersion)
                .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
                .where(Dataset.enterprise_id == tenant_id)
            )
        }
        for e in session.scalars(
            select(audit.AuditEvent)
            .where(audit.AuditEvent.tenant_id == tenant_id)
            .where(audit.AuditEvent.action.in_(_REASON_ACTIONS))
            .order_by(audit.AuditEvent.seq)
        ):
            kind, _, ident = (e.resource or "").partition(":")
            version = e.details.get("version")
            if e.action == "enterprise.created":
                reasons.created = (e.at, e.seq)
            elif e.action == "dataset.uploaded" and isinstance(version, int):
                if (ident, version) in versions:
                    reasons.uploads[(ident, version)] = (versions[ident, version], e.at, e.seq)
            elif kind == "job":
                job_seq[ident] = e.seq  # the event that closed the run, else the submission
        for job in session.scalars(
            select(Job).where(Job.enterprise_id == tenant_id, Job.started_at.is_not(None))
        ):
            assert job.started_at is not None
            model = job.status == JobStatus.RELEASED and job.artifact_path is not None
            reasons.runs[job.id] = _Run(
                job.id, (job.dataset_id, job.dataset_version), job.started_at, job.finished_at,
                model, job_seq.get(job.id),
            )  # fmt: skip
    return reasons


def explain(
    reasons: Reasons, operation: str, label: str | None, at: datetime, now: datetime
) -> Explanation | None:
    """The Veil record that explains ``operation`` on ``label`` at ``at``, if any."""
    if operation in _PROVISIONING:
        if reasons.created is not None and at <= reasons.created[0] + CLOCK_SLACK:
            return Explanation("enterprise", reasons.tenant_id, reasons.created[1])
        return None
    parsed = parse_label(label)
    if parsed is None:
        return None
    kind, _, ident = parsed[0].partition(":")
    version = parsed[1]
    if kind == "dataset" and operation == "datakey.generate":
        upload = reasons.uploads.get((ident, version))
        if upload is not None and at <= upload[1] + CLOCK_SLACK:
            return Explanation("upload", upload[0], upload[2])
    elif (kind, operation) in _RUN_OPERATIONS:  # a job's run on the dataset's version
        for run in reasons.runs.values():
            if run.dataset == (ident, version) and _during(run, at, now):
                return Explanation("job", run.id, run.seq)
    elif kind == "job" and version == _MODEL_VERSION and ident in reasons.runs:
        run = reasons.runs[ident]
        if operation == "datakey.generate" and _during(run, at, now):
            return Explanation("job", run.id, run.seq)
        released = run.finished if run.released_model else None
        if operation == "decrypt" and released is not None and at >= released - CLOCK_SLACK:
            return Explanation("model-download", run.id, run.seq)
    return None


def _during(run: _Run, at: datetime, now: datetime) -> bool:
    return run.started - CLOCK_SLACK <= at <= (run.finished or now) + CLOCK_SLACK


# -- the report -----------------------------------------------------------------------------
def key_audit(
    veil: Veil,
    principal: Principal | None,
    *,
    tenant_id: str | None = None,
    since: datetime | None = None,
) -> KeyAuditReport:
    """Read the key server's audit log and explain each tenant's key operations.

    ``principal`` None means the caller has this machine (the local CLI): every tenant.
    """
    if since is not None and since.tzinfo is None:
        raise InvalidRequest("since needs a time zone, e.g. 2026-11-01T00:00:00Z")
    tenants, everyone = _visible_tenants(veil, principal, tenant_id)
    scan = _Scan(veil, tenants)
    for entry in read_entries(audit_log_path(veil.settings), since):
        scan.add(entry)
    for tenant in scan.audits.values():
        tenant.operations = list(scan.listed[tenant.tenant_id])
        tenant.truncated = sum(tenant.counts.values()) > LIST_LIMIT
        tenant.events = _events(veil, tenant.tenant_id, since)
    tagging = next((s for s in ("present", "hmac", "absent") if scan.tags[s]), "unknown")
    return KeyAuditReport(
        since=since,
        tagging=tagging,
        notes=_notes(tagging),
        tenants=list(scan.audits.values()),
        unexplained=scan.unexplained,
        unattributed=scan.unattributed if everyone else None,
        entries_read=scan.read,
    )


def _visible_tenants(
    veil: Veil, principal: Principal | None, tenant_id: str | None
) -> tuple[list[Principal], bool]:
    """The enterprises the caller may see (and whether that is all of them)."""
    if principal is not None:
        require_role(principal, Role.OPERATOR, Role.SECURITY_OFFICER)
    scope = principal.scope if principal and principal.role == Role.SECURITY_OFFICER else None
    with veil.db.transaction() as session:
        query = select(Principal).where(Principal.role == Role.ENTERPRISE)
        tenants = [p for p in session.scalars(query.order_by(Principal.created_at)) if p.slug]
    if scope is not None:
        tenants = [t for t in tenants if t.id in scope]
    if tenant_id is None:
        return tenants, scope is None
    chosen = [t for t in tenants if t.id == tenant_id]
    if not chosen:
        raise NotFound("enterprise", tenant_id)  # unknown, or outside the officer's scope
    return chosen, False


class _Scan:
    """One pass over the key server's log: attribute, explain, count."""

    def __init__(self, veil: Veil, tenants: list[Principal]) -> None:
        self.directory = _Directory(veil, tenants)
        self.reasons = {t.id: load_reasons(veil, t.id) for t in tenants}
        self.audits = {t.id: TenantKeyAudit(t.id, t.slug or "", t.name) for t in tenants}
        self.listed = {t.id: deque[KeyOperation](maxlen=LIST_LIMIT) for t in tenants}
        self.tags: Counter[str] = Counter()  # data-key entries by state of Veil's header
        self.unexplained: list[KeyOperation] = []
        self.unattributed = self.read = 0
        self.now = veil.clock()

    def add(self, entry: AuditEntry) -> None:
        self.read += 1
        if entry.data_key:
            hmac = entry.header is not None and entry.label is None
            self.tags["absent" if entry.header is None else "hmac" if hmac else "present"] += 1
        hit = self.directory.attribute(entry)
        if hit is None or hit[1] is None:
            self.unattributed += hit is None and entry.data_key
            return
        tenant, operation = hit[0], hit[1]
        why = explain(self.reasons[tenant.id], operation, entry.label, entry.at, self.now)
        op = KeyOperation(
            tenant.id, entry.at, operation, entry.header, entry.ok, entry.request_id,
            entry.remote_address, entry.actor, why,
        )  # fmt: skip
        counted = self.audits[tenant.id]
        counted.counts[operation] = counted.counts.get(operation, 0) + 1
        counted.explained += why is not None
        counted.unexplained += op.alarming
        self.listed[tenant.id].append(op)
        if op.alarming:
            self.unexplained.append(op)


def _events(veil: Veil, tenant_id: str, since: datetime | None) -> list[audit.AuditEvent]:
    """The tenant's newest Veil audit events since ``since``, oldest first."""
    event = audit.AuditEvent
    query = select(event).where(event.tenant_id == tenant_id)
    if since is not None:
        query = query.where(event.at >= since)
    with veil.db.transaction() as session:
        rows = session.scalars(query.order_by(event.seq.desc()).limit(LIST_LIMIT)).all()
    return list(reversed(rows))


def _notes(tagging: str) -> list[str]:
    """What to do when Veil's header does not reach the log in clear."""
    fix = (
        "on the key server, in the root namespace with sudo: bao write "
        f"sys/config/auditing/request-headers/{OBJECT_HEADER} hmac=false "
        "(docs/key-server-audit.md)"
    )
    if tagging == "absent":
        return [
            f"the key server's audit log does not record Veil's {OBJECT_HEADER} header, so no "
            f"decryption can be tied to its reason; {fix}"
        ]
    if tagging == "hmac":
        return [f"the key server HMACs Veil's {OBJECT_HEADER} header, so it cannot be read; {fix}"]
    return []
