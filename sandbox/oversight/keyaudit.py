"""The key server's own audit log, per tenant, next to Veil's audit events.

Veil tags its key-server requests with what they serve (header ``X-Veil-Object``, which the
key server audits in clear; see ``keys.key_operation``).  This module reads OpenBao's file
audit log (JSON lines), names what each request did to keys, policies or authentication
(reads included: a key's configuration, an export, a backup, a role id; ``keys.auditlog``),
gives it to its tenant (by namespace, or by transit mount, policy and role) or to Veil's
platform (its base namespace and those above it), and looks for the Veil record that
explains it (``sandbox.oversight.keyaudit_reasons``, an allow-list of what Veil itself does).  Every
successful operation that nothing explains is *unexplained* and flagged.  How and why:
``docs/key-server-audit.md``.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

from sqlalchemy import select

from i18n import Msg
from keys import OBJECT_HEADER, LocalKeyServer, Tenancy
from keys.auditlog import AuditEntry, read_entries
from policies import audit
from policies.capabilities import ALL_TENANTS, Capability, require, tenants_in_scope
from policies.errors import Conflict, InvalidRequest, NotFound
from policies.principals import Principal, Role
from sandbox.config.settings import Settings
from sandbox.oversight.keyaudit_reasons import (
    CLOCK_SLACK,
    Explanation,
    PlatformReasons,
    Reasons,
    explain,
    explain_platform,
    load_platform_reasons,
    load_reasons,
)
from sandbox.runtime.veil import Veil

#: Most operations and events listed per tenant (the newest); counts cover everything.
LIST_LIMIT = 1000
#: Where an operation outside every enterprise belongs.
PLATFORM: Final = "platform"


@dataclass(frozen=True)
class KeyOperation:
    """One key operation from the key server's audit log, of a tenant (or of the platform:
    ``tenant_id`` None)."""

    tenant_id: str | None
    at: datetime
    operation: str  # datakey.generate, decrypt, key.read, key.export, policy.write, ...
    object: str | None  # the X-Veil-Object label, as sent
    ok: bool
    request_id: str
    remote_address: str | None
    actor: str | None  # the key server's display name of the token
    explained_by: Explanation | None
    path: str = ""  # namespace and path of the request

    @property
    def alarming(self) -> bool:
        """A successful operation on keys, policies or authentication that nothing explains
        (a refused one changed and handed out nothing: listed, not flagged)."""
        return self.ok and self.explained_by is None


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
class PlatformKeyAudit:
    """Operations outside every enterprise: Veil's base namespace (and namespaces in it that
    are no enterprise's) and the namespaces above it."""

    counts: dict[str, int] = field(default_factory=dict)
    explained: int = 0
    unexplained: int = 0
    operations: list[KeyOperation] = field(default_factory=list)
    truncated: bool = False


@dataclass
class KeyAuditReport:
    """``tagging``: whether the log carries Veil's object header (present, hmac, absent,
    unknown); ``platform`` and ``unattributed`` (data-key operations of no known tenant):
    None when the view was narrowed to some tenants."""

    since: datetime | None
    tagging: str
    notes: list[str]
    tenants: list[TenantKeyAudit]
    unexplained: list[KeyOperation]
    unattributed: int | None
    entries_read: int
    platform: PlatformKeyAudit | None = None

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
            Msg(
                "the external key server's audit log is not available to Veil: "
                "set VEIL_KEYSERVER_AUDIT_LOG to the file of its file audit "
                "device (docs/key-server-audit.md)"
            )
        )
    if not path.is_file():
        raise Conflict(
            Msg(
                "the key server's audit log cannot be read: check "
                "VEIL_KEYSERVER_AUDIT_LOG (or, for the embedded server, that it "
                "has started once)"
            )
        )
    return path


# -- where a request belongs ------------------------------------------------------------------
class _Directory:
    """Which tenant (or Veil's platform) a key-server request belongs to."""

    def __init__(self, veil: Veil, tenants: list[Principal]) -> None:
        self.base = veil.keys.base_namespace
        self._namespaces: dict[str, Principal] = {}
        self._mounts: dict[tuple[str, str], Principal] = {}
        self._admin: dict[str, Principal] = {}  # paths in the base namespace
        self._roots: dict[str, Principal] = {}  # where a tenant's namespace or mount is made
        by_namespace = veil.keys.tenancy is Tenancy.NAMESPACE
        for tenant in tenants:
            assert tenant.slug is not None
            loc = veil.keys.tenant_location(tenant.slug)
            self._mounts[(loc.namespace, f"{loc.transit_mount}/")] = tenant
            if by_namespace:
                self._namespaces[loc.namespace] = tenant
                self._roots[f"sys/namespaces/{tenant.slug}"] = tenant
                continue
            self._roots[f"sys/mounts/{loc.transit_mount}"] = tenant
            self._mounts[(loc.namespace, f"{loc.kek_mount}/")] = tenant
            for path in (
                f"sys/mounts/{loc.kek_mount}",  # the GM profile's KEK: mount.enable
                f"sys/policies/acl/{loc.policy}",
                f"sys/policy/{loc.policy}",
                f"auth/{loc.approle_mount}/role/{loc.role}",
            ):
                self._admin[path] = tenant

    def place(self, entry: AuditEntry) -> Principal | str | None:
        """The tenant, :data:`PLATFORM`, or None for a request that is not Veil's concern
        (another namespace beside Veil's, or another application's keys above it)."""
        ns = entry.namespace
        for prefix in _ancestors_and_self(ns):
            if prefix in self._namespaces:
                return self._namespaces[prefix]
        tenant = self._mounts.get((ns, entry.mount))
        if tenant is not None:
            return tenant
        if ns == self.base:
            for path, owner in (*self._admin.items(), *self._roots.items()):
                if entry.path == path or entry.path.startswith(f"{path}/"):
                    return owner
        if not self.base or ns == self.base or ns.startswith(f"{self.base}/"):
            return PLATFORM
        above = not ns or self.base.startswith(f"{ns}/")
        return PLATFORM if above and not entry.transit else None

    def tenant_operation(self, entry: AuditEntry, operation: str) -> str:
        """A tenant's namespace (or mount) made or removed reads ``tenant.create`` /
        ``tenant.destroy``."""
        if entry.namespace != self.base or entry.path not in self._roots:
            return operation
        if operation in ("namespace.create", "mount.enable"):
            return "tenant.create"
        if operation in ("namespace.delete", "mount.disable"):
            return "tenant.destroy"
        return operation


def _ancestors_and_self(namespace: str) -> list[str]:
    parts = namespace.split("/") if namespace else []
    return ["/".join(parts[:n]) for n in range(len(parts), 0, -1)]


# -- the report -----------------------------------------------------------------------------
def key_audit(
    veil: Veil,
    principal: Principal | None,
    *,
    tenant_id: str | None = None,
    since: datetime | None = None,
) -> KeyAuditReport:
    """Read the key server's audit log and explain each tenant's key operations (and, for an
    unnarrowed view, the platform's).

    ``principal`` None means the caller has this machine (the local CLI): every tenant.
    """
    if since is not None and since.tzinfo is None:
        raise InvalidRequest(Msg("since needs a time zone, e.g. 2026-11-01T00:00:00Z"))
    tenants, everyone = _visible_tenants(veil, principal, tenant_id)
    scan = _Scan(veil, tenants, load_platform_reasons(veil) if everyone else None)
    for entry in read_entries(audit_log_path(veil.settings), since):
        scan.add(entry)
    for tenant in scan.audits.values():
        tenant.operations = list(scan.listed[tenant.tenant_id])
        tenant.truncated = sum(tenant.counts.values()) > LIST_LIMIT
        tenant.events = _events(veil, tenant.tenant_id, since)
    if scan.platform is not None:
        scan.platform.operations = list(scan.listed[PLATFORM])
        scan.platform.truncated = sum(scan.platform.counts.values()) > LIST_LIMIT
    tagging = next((s for s in ("present", "hmac", "absent") if scan.tags[s]), "unknown")
    return KeyAuditReport(
        since=since,
        tagging=tagging,
        notes=_notes(tagging),
        tenants=list(scan.audits.values()),
        unexplained=scan.unexplained,
        unattributed=scan.unattributed if everyone else None,
        entries_read=scan.read,
        platform=scan.platform,
    )


def _visible_tenants(
    veil: Veil, principal: Principal | None, tenant_id: str | None
) -> tuple[list[Principal], bool]:
    """The enterprises the caller may see (and whether that is all of them)."""
    if principal is not None:
        require(principal, Capability.READ_KEY_AUDIT)
    scope = tenants_in_scope(principal) if principal is not None else ALL_TENANTS
    with veil.db.read() as session:
        query = select(Principal).where(Principal.role == Role.ENTERPRISE)
        tenants = [p for p in session.scalars(query.order_by(Principal.created_at)) if p.slug]
    tenants = [t for t in tenants if t.id in scope]
    if tenant_id is None:
        return tenants, scope.everything
    chosen = [t for t in tenants if t.id == tenant_id]
    if not chosen:
        raise NotFound("enterprise", tenant_id)  # unknown, or outside the officer's scope
    return chosen, False


class _Scan:
    """One pass over the key server's log: place, name, explain, count."""

    def __init__(
        self, veil: Veil, tenants: list[Principal], platform: PlatformReasons | None
    ) -> None:
        self.directory = _Directory(veil, tenants)
        self.reasons = {t.id: load_reasons(veil, t.id, t.slug or "") for t in tenants}
        self.platform_reasons = platform
        self.audits = {t.id: TenantKeyAudit(t.id, t.slug or "", t.name) for t in tenants}
        self.platform = PlatformKeyAudit() if platform is not None else None
        self.listed = {t.id: deque[KeyOperation](maxlen=LIST_LIMIT) for t in tenants}
        self.listed[PLATFORM] = deque(maxlen=LIST_LIMIT)
        self.tags: Counter[str] = Counter()  # data-key entries by state of Veil's header
        self.unexplained: list[KeyOperation] = []
        self.unattributed = self.read = 0
        self.now = veil.clock()

    def add(self, entry: AuditEntry) -> None:
        self.read += 1
        if entry.data_key:
            hmac = entry.header is not None and entry.label is None
            self.tags["absent" if entry.header is None else "hmac" if hmac else "present"] += 1
        operation = entry.operation
        place = self.directory.place(entry) if operation is not None else None
        if operation is None or place is None:
            return
        if isinstance(place, Principal):
            operation = self.directory.tenant_operation(entry, operation)
            why = explain(self.reasons[place.id], operation, entry.label, entry.at, self.now)
            self._count(self.audits[place.id], place.id, entry, operation, why)
            return
        self.unattributed += entry.data_key
        if self.platform is not None and self.platform_reasons is not None:
            why = explain_platform(self.platform_reasons, operation, entry)
            self._count(self.platform, None, entry, operation, why)

    def _count(
        self,
        counted: TenantKeyAudit | PlatformKeyAudit,
        tenant_id: str | None,
        entry: AuditEntry,
        operation: str,
        why: Explanation | None,
    ) -> None:
        where = f"{entry.namespace}/{entry.path}" if entry.namespace else entry.path
        op = KeyOperation(
            tenant_id, entry.at, operation, entry.header, entry.ok, entry.request_id,
            entry.remote_address, entry.actor, why, where,
        )  # fmt: skip
        counted.counts[operation] = counted.counts.get(operation, 0) + 1
        counted.explained += why is not None
        counted.unexplained += op.alarming
        self.listed[tenant_id or PLATFORM].append(op)
        if op.alarming:
            self.unexplained.append(op)


def _events(veil: Veil, tenant_id: str, since: datetime | None) -> list[audit.AuditEvent]:
    """The tenant's newest Veil audit events since ``since``, oldest first."""
    event = audit.AuditEvent
    query = select(event).where(event.tenant_id == tenant_id)
    if since is not None:
        query = query.where(event.at >= since)
    with veil.db.read() as session:
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
            f"key operation can be tied to its reason; {fix}"
        ]
    if tagging == "hmac":
        return [f"the key server HMACs Veil's {OBJECT_HEADER} header, so it cannot be read; {fix}"]
    return []


__all__ = [
    "CLOCK_SLACK",
    "LIST_LIMIT",
    "Explanation",
    "KeyAuditReport",
    "KeyOperation",
    "PlatformKeyAudit",
    "Reasons",
    "TenantKeyAudit",
    "audit_log_path",
    "explain",
    "key_audit",
]
