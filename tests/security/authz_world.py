"""One Veil per test module for the authorization tests: two tenants, every kind of caller.

Real OpenBao (the session's), real SQLite, real HTTP on loopback.  The job worker is
off: a queued job stays queued (so a cancel always finds one); the two released jobs
were submitted through the API and their results stored as the runner stores them.

Tenant A (``acme``) and tenant B (``globex``) each hold a dataset with data, a grant to
their own provider (tiers 1, 2, 3 and 5), a released tier-3 job, a queued job, a pending
code request, a held tier-5 output, and a suspended provider they granted.  Objects
used up by a successful call (revoked grants, suspended providers, decided code) are
made fresh for each such call by :meth:`AuthzWorld.fresh`.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select, text

from analytics.syft_code import source_sha256
from keys import LocalKeyServer
from policies.db import Base, new_id
from policies.principals import ApiToken, Principal
from sandbox.demo.data import DECLARATION, production_log
from sandbox.jobs.held_outputs import attach_held, encrypt_held
from sandbox.jobs.runner import claim_next_job
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import bootstrap_operator, open_veil
from sandbox.store.models import CodeRequest, CodeStatus, Job, JobStatus
from tests.sandbox.conftest import settings_for
from tests.security.authz_table import OTHER, OWN, Endpoint

PURPOSE = "process-optimization"
GRANTED = ["machine", "shift", "temperature_c", "cycle_time_s", "defects", "yield_pct"]
TIERS = [1, 2, 3, 5]
QUERY = {"aggregates": [{"kind": "count"}]}
#: A tier-5 function (docs/reviewed-code.md) reading one internal, granted column.
SOURCE = """import syft as sy


@sy.syft_function_single_use(data=asset)
def longest_cycle(data):
    return {"longest_cycle_s": float(data["cycle_time_s"].max())}
"""
#: Tables whose rows a refused call must leave exactly as they were: all but the audit
#: log's, which records the refusal.  Read from the models, so a new table is covered.
STATE_TABLES = tuple(t.name for t in Base.metadata.sorted_tables if not t.name.startswith("audit_"))
#: Columns left out of that comparison: (table, column).
BOOKKEEPING = {("api_tokens", "last_used_at")}


#: A benchmark proposal (a provider's; no enterprise joins it in this world).
COLLABORATION: dict[str, Any] = {
    "title": "benchmark",
    "purpose": "industry benchmark",
    "columns": [{"name": "cycle_time", "type": "float"}],
    "benchmark": {"statistics": [{"kind": "count"}], "epsilon": 1.0},
}


def kpi_contract_body(tenant: Tenant, dataset_id: str) -> dict[str, Any]:
    """A KPI contract on ``dataset_id`` between its tenant and that tenant's provider."""
    kpi = {"kpi": "lead_time", "columns": {"lead_time": "cycle_time_s"},
           "time_column": "temperature_c", "baseline": {"from": 20, "to": 60},
           "evaluation": {"from": 60, "to": 120}}  # fmt: skip
    return {"dataset_id": dataset_id, "purpose": PURPOSE, "provider_id": tenant.provider,
            "kpi": kpi, "target": 0.05, "epsilon": 0.01}  # fmt: skip


#: A commitment letter's obligations (docs/commitments.md).
LETTER = {"retention_days": 90, "insurance_reference": "PICC-TEST-1"}


def provider_key() -> str:
    """A new Ed25519 public key in PEM form (a provider's letter-signing key)."""
    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def tomorrow() -> str:
    return (datetime.now(UTC) + timedelta(days=1)).isoformat()


@dataclass
class Tenant:
    """One enterprise's side of the world: the ids a caller names as "own" or "other"."""

    enterprise: str
    enterprise_token: str
    provider: str  # holds this tenant's grant
    provider_token: str
    dataset: str
    grant: str
    job: str  # released, tier 3
    queued_job: str
    code: str  # pending
    held_job: str
    suspended_provider: str
    collaboration: str = ""  # proposed by this tenant's provider
    kpi_contract: str = ""  # proposed by this tenant's provider, not yet accepted
    scorecard: str = ""  # this tenant's provider's, of the world's closed period
    closed_period: str = ""  # the same for every tenant
    exit: str = ""  # a decided (rejected) exit proposal, the same for every tenant
    assessor: str = ""  # a registered assessor, the same for every tenant
    suspended_assessor: str = ""  # a suspended one, the same for every tenant

    def ids(self, kind: str) -> str:
        """The id of this tenant's object of ``kind`` (a row's ``target``)."""
        return {
            "principal": self.provider,
            "dataset": self.dataset,
            "grant": self.grant,
            "job": self.job,
            "queued_job": self.queued_job,
            "code": self.code,
            "held_job": self.held_job,
            "provider": self.provider,
            "suspended_provider": self.suspended_provider,
            "tenant": self.enterprise,
            "receipt": self.provider,
            "collaboration": self.collaboration,
            "programme_table": "participation",  # the same table for every tenant
            "kpi_contract": self.kpi_contract,
            "purpose": "carbon-accounting",
            "scorecard": self.scorecard,
            "closed_period": self.closed_period,
            "exit": self.exit,
            "assessor": self.assessor,
            "suspended_assessor": self.suspended_assessor,
        }[kind]


@dataclass
class AuthzWorld:
    veil: Veil
    url: str
    http: httpx.Client
    operator_token: str
    a: Tenant = field(init=False)
    b: Tenant = field(init=False)
    #: Column name (without own/other) to bearer token; None: no header.
    tokens: dict[str, str | None] = field(default_factory=dict)
    #: Column name (without own/other) to the principal id of that caller.
    principals: dict[str, str] = field(default_factory=dict)

    # -- requests -----------------------------------------------------------------------

    def call(self, token: str | None, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, url, headers=headers, **kwargs)

    def ok(self, token: str | None, method: str, url: str, **kwargs: Any) -> Any:
        """A call that must succeed (building the world); its JSON body."""
        answer = self.call(token, method, url, **kwargs)
        assert answer.status_code < 300, (method, url, answer.status_code, answer.text[:300])
        return answer.json() if answer.content else None

    def principal(self, path: str, **body: Any) -> str:
        """Create a principal as the operator (``path``: its collection); its first token."""
        created = self.ok(self.operator_token, "POST", path, json=body)
        return str(
            self.ok(self.operator_token, "POST", f"/v1/principals/{created['id']}/tokens")["token"]
        )

    # -- reading state back -------------------------------------------------------------

    def state(self) -> dict[str, list[str]]:
        """Every row of the tables a refused call must not change: not the audit log, not
        the jobs denied by policy (kept as the record of a refused submission), and not when
        a token was last used (any authenticated request may note that, refused or not)."""
        with self.veil.db.read() as session:
            return {
                table: sorted(
                    json.dumps(
                        [v for k, v in r._mapping.items() if (table, k) not in BOOKKEEPING],
                        default=str,
                    )
                    for r in session.execute(text(f"SELECT * FROM {table}"))  # noqa: S608
                    if table != "jobs" or r.status != JobStatus.DENIED
                )
                for table in STATE_TABLES
            }

    def holder(self, column: str) -> str:
        """The principal whose tokens ``column`` names (rows with target holder*): the caller
        itself (own), tenant B's principal of its role (other), else A's provider."""
        role = column.removesuffix(f"-{OWN}").removesuffix(f"-{OTHER}")
        if column.endswith(f"-{OWN}"):
            return self.principals[role]
        if column.endswith(f"-{OTHER}"):
            b = self.b
            return {"enterprise": b.enterprise, "provider": b.provider}.get(role, b.enterprise)
        return self.a.provider

    def holder_token(self, column: str, *, fresh: bool) -> str:
        """A token id of :meth:`holder`: a new one (for a call that uses it up), else its
        first (for its own column, the token the caller sends)."""
        principal_id = self.holder(column)
        if fresh:
            path = f"/v1/principals/{principal_id}/tokens"
            return str(self.ok(self.operator_token, "POST", path)["id"])
        with self.veil.db.read() as session:
            first = session.scalars(
                select(ApiToken.id)
                .where(ApiToken.principal_id == principal_id)
                .order_by(ApiToken.created_at)
            ).first()
        assert first is not None, principal_id
        return first

    def grant_as_owner(self, tenant: Tenant, grant_id: str) -> dict[str, Any]:
        """The grant read back through the API by the enterprise that gave it."""
        return dict(self.ok(tenant.enterprise_token, "GET", f"/v1/grants/{grant_id}"))

    # -- fresh objects for calls that use theirs up ---------------------------------------

    def fresh(self, kind: str, tenant: Tenant) -> str:
        """A new object of ``kind`` on ``tenant``'s side, for one successful call."""
        if kind == "dataset":
            return self._dataset(tenant)
        if kind == "grant":
            return self._grant(tenant, tenant.provider, tenant.dataset)
        if kind == "queued_job":
            return self._job(tenant)
        if kind == "code":
            return self._code(tenant, CodeStatus.PENDING)
        if kind == "held_job":
            return self._held(tenant)
        if kind in ("provider", "suspended_provider"):
            return self._granted_provider(tenant, suspended=kind == "suspended_provider")[0]
        if kind == "collaboration":
            return self._collaboration(tenant)
        if kind == "kpi_contract":
            return self._kpi_contract(tenant)
        if kind in ("assessor", "suspended_assessor"):
            return self._assessor(suspended=kind == "suspended_assessor")
        raise AssertionError(f"no fresh objects of kind {kind}")

    def _dataset(self, tenant: Tenant) -> str:
        body = {**DECLARATION, "name": f"log-{uuid.uuid4().hex[:8]}"}
        return str(self.ok(tenant.enterprise_token, "POST", "/v1/datasets", json=body)["id"])

    def _grant(self, tenant: Tenant, provider_id: str, dataset_id: str) -> str:
        body = {
            "provider_id": provider_id,
            "dataset_ids": [dataset_id],
            "columns": GRANTED,
            "tiers": TIERS,
            "purposes": [PURPOSE],
            "valid_until": tomorrow(),
            "epsilon": 5.0,
        }
        return str(self.ok(tenant.enterprise_token, "POST", "/v1/grants", json=body)["id"])

    def _collaboration(self, tenant: Tenant) -> str:
        return str(
            self.ok(tenant.provider_token, "POST", "/v1/collaborations", json=COLLABORATION)["id"]
        )

    def _kpi_contract(self, tenant: Tenant) -> str:
        body = kpi_contract_body(tenant, tenant.dataset)
        return str(self.ok(tenant.provider_token, "POST", "/v1/kpi-contracts", json=body)["id"])

    def _job(self, tenant: Tenant) -> str:
        body = {"dataset_id": tenant.dataset, "purpose": PURPOSE, "epsilon": 0.01, "query": QUERY}
        return str(self.ok(tenant.provider_token, "POST", "/v1/jobs", json=body)["id"])

    def _code(self, tenant: Tenant, status: CodeStatus) -> str:
        """A code request as submission leaves it (without running PySyft on the mock)."""
        code_id = new_id("code")
        with self.veil.db.transaction() as session:
            session.add(
                CodeRequest(
                    id=code_id,
                    provider_id=tenant.provider,
                    enterprise_id=tenant.enterprise,
                    dataset_id=tenant.dataset,
                    purpose=PURPOSE,
                    function_name="longest_cycle",
                    source=SOURCE,
                    sha256=source_sha256(SOURCE),
                    columns=["cycle_time_s"],
                    status=status,
                    mock_output={"value": {"longest_cycle_s": 1.0}, "checks": {}},
                    reviewer_id=tenant.enterprise if status != CodeStatus.PENDING else None,
                    created_at=self.veil.clock(),
                )
            )
        return code_id

    def _held(self, tenant: Tenant) -> str:
        """A tier-5 job of approved code whose output the checks held, as the runner leaves it."""
        code_id = self._code(tenant, CodeStatus.APPROVED)
        checks = {"status": "held", "reasons": ["a cell: fewer than 10 rows"]}
        result = {
            "tier": 5,
            "output": {"longest_cycle_s": 1.0},
            "checks": checks,
            "code_sha256": source_sha256(SOURCE),
            "epsilon": 0.0,
            "delta": 0.0,
        }
        job_id = new_id("job")
        with self.veil.db.read() as session:
            enterprise = session.get(Principal, tenant.enterprise)
            assert enterprise is not None and enterprise.slug is not None
            slug = enterprise.slug
        held = encrypt_held(self.veil, slug, tenant.enterprise, job_id, result)
        with self.veil.db.transaction() as session:
            job = Job(
                id=job_id,
                provider_id=tenant.provider,
                enterprise_id=tenant.enterprise,
                dataset_id=tenant.dataset,
                dataset_version=1,
                grant_id=tenant.grant,
                purpose=PURPOSE,
                tier=5,
                query={"code_request_id": code_id},
                epsilon=0,
                delta=0,
                status=JobStatus.HELD,
                reasons=[],
                output_check=checks,
                created_at=self.veil.clock(),
            )
            attach_held(job, held)
            session.add(job)
        return job_id

    def _assessor(self, *, suspended: bool) -> str:
        """A new assessor the bureau registered; suspended if asked."""
        bureau = self.tokens["bureau"]
        name = {"name": f"Assessor {uuid.uuid4().hex[:8]}"}
        assessor = str(self.ok(bureau, "POST", "/v1/assessors", json=name)["id"])
        if suspended:
            body = {"reason": "set up for a test"}
            self.ok(bureau, "POST", f"/v1/assessors/{assessor}/suspend", json=body)
        return assessor

    def _granted_provider(self, tenant: Tenant, *, suspended: bool) -> tuple[str, str]:
        """A new provider holding a grant from ``tenant``; suspended if asked.  (id, token)"""
        op = self.operator_token
        provider = self.ok(op, "POST", "/v1/providers", json={"name": "Victim Analytics"})
        token = self.ok(op, "POST", f"/v1/principals/{provider['id']}/tokens")["token"]
        self._grant(tenant, provider["id"], tenant.dataset)
        if suspended:
            body = {"reason": "set up for a test"}
            self.ok(op, "POST", f"/v1/providers/{provider['id']}/suspend", json=body)
        return str(provider["id"]), str(token)


def _tenant(world: AuthzWorld, name: str, seed: int) -> Tenant:
    op = world.operator_token
    slug = f"{name}-{uuid.uuid4().hex[:8]}"
    enterprise = world.ok(op, "POST", "/v1/enterprises", json={"name": name, "slug": slug})
    e_token = world.ok(op, "POST", f"/v1/principals/{enterprise['id']}/tokens")["token"]
    provider = world.ok(op, "POST", "/v1/providers", json={"name": f"{name} analytics"})
    p_token = world.ok(op, "POST", f"/v1/principals/{provider['id']}/tokens")["token"]
    body = {**DECLARATION, "name": f"{name}-log"}
    dataset = world.ok(e_token, "POST", "/v1/datasets", json=body)["id"]
    csv = {"content": production_log(400, seed=seed), "headers": {"content-type": "text/csv"}}
    world.ok(e_token, "POST", f"/v1/datasets/{dataset}/versions", **csv)
    tenant = Tenant(enterprise["id"], e_token, provider["id"], p_token, dataset, *[""] * 6)
    world.ok(p_token, "POST", "/v1/letters/keys", json={"public_key_pem": provider_key()})
    tenant.grant = world._grant(tenant, tenant.provider, dataset)
    world.ok(e_token, "POST", f"/v1/grants/{tenant.grant}/letter", json=LETTER)
    tenant.job = world._job(tenant)
    tenant.collaboration = world._collaboration(tenant)
    tenant.kpi_contract = world._kpi_contract(tenant)
    return tenant


def _finish(world: AuthzWorld, tenant: Tenant) -> None:
    """The objects that need the tenant's released job run first."""
    tenant.queued_job = world._job(tenant)
    tenant.code = world._code(tenant, CodeStatus.PENDING)
    tenant.held_job = world._held(tenant)
    tenant.suspended_provider, token = world._granted_provider(tenant, suspended=True)
    world.tokens.setdefault("suspended", token)


def release(veil: Veil, job_id: str) -> None:
    """Claim a submitted tier-3 job and store a released result as the runner would.

    The submission (decision, debit) was real; running the query in the sandbox is left
    out, as it takes seconds and no authorization depends on the numbers.
    """
    assert claim_next_job(veil) == job_id
    result = {
        "tier": 3,
        "rows": [{"group": None, "values": [{"aggregate": "count", "value": 400.0,
                                             "noise_scale": 100.0, "ci95": [100.0, 700.0]}]}],
        "epsilon": 0.01,
        "delta": 0.0,
        "mechanism": "laplace",
        "dataset_version": 1,
    }  # fmt: skip
    digest = hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()
    with veil.db.transaction() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == JobStatus.RUNNING
        job.status, job.result, job.result_sha256 = JobStatus.RELEASED, result, digest
        job.finished_at = veil.clock()


def build(tmp: Path, key_server: LocalKeyServer) -> Iterator[AuthzWorld]:
    """Start a Veil and its API, and build the world; yield it, then stop everything."""
    # Every refusal the matrix checks is a failed authentication from one address: the limit
    # on those (tests/security/test_limits.py) would refuse the matrix's later checks with 429
    # however fast it runs, so here it is out of the way.
    settings = settings_for(tmp, key_server, keyserver_audit_log=key_server.audit_log,
                            auth_failure_burst=1_000_000)  # fmt: skip
    with (
        open_veil(settings, worker=False) as veil,
        ApiThread(veil.settings, veil) as url,
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        operator = bootstrap_operator(veil)
        assert operator is not None
        world = AuthzWorld(veil, url, http, operator)
        world.a, world.b = _tenant(world, "acme", 11), _tenant(world, "globex", 12)
        release(veil, world.a.job)
        release(veil, world.b.job)
        _finish(world, world.a)
        _finish(world, world.b)
        world.tokens |= {
            "anonymous": None,
            "bad-token": "veil_" + hashlib.sha256(b"never issued").hexdigest(),
            "operator": operator,
            "enterprise": world.a.enterprise_token,
            "provider": world.a.provider_token,
            "officer": world.principal("/v1/security-officers", name="Olivia", scope=None),
            "officer-scoped": world.principal(
                "/v1/security-officers", name="Sam", scope=[world.a.enterprise]
            ),
            "provider-nogrant": world.principal("/v1/providers", name="Nobody Analytics"),
            "bureau": world.principal("/v1/bureau", name="Industry Bureau"),
        }
        world.tokens["assessor"] = _assessors(world)
        _periods(world)
        for role in ("enterprise", "provider", "officer-scoped"):
            world.principals[role] = world.ok(world.tokens[role], "GET", "/v1/me")["id"]
        yield world


def _assessors(world: AuthzWorld) -> str:
    """A registered assessor and a suspended one (every tenant's); the first's token, which
    the operator issues (the bureau only registers)."""
    active, suspended = world._assessor(suspended=False), world._assessor(suspended=True)
    for tenant in (world.a, world.b):
        tenant.assessor, tenant.suspended_assessor = active, suspended
    path = f"/v1/principals/{active}/tokens"
    return str(world.ok(world.operator_token, "POST", path)["token"])


def _periods(world: AuthzWorld) -> None:
    """Two closed evaluation periods (each provider's scorecards), in which A's suspended
    provider failed twice: its exit proposal, rejected; and an open period."""
    bureau = world.tokens["bureau"]
    failing = {"provider_id": world.a.suspended_provider, "score": 0, "reason": "failing"}
    for name in ("authz-first", "authz-closed"):
        closed = world.ok(bureau, "POST", "/v1/programme/periods", json={"name": name})
        world.ok(bureau, "POST", "/v1/programme/assessments", json=failing)
        cards = world.ok(bureau, "POST", f"/v1/programme/periods/{closed['id']}/close")
    by_provider = {c["provider_id"]: c["id"] for c in cards["scorecards"]}
    (proposal,) = world.ok(bureau, "GET", "/v1/exits")
    decision = {"decision": "reject", "reason": "kept for the authorization tests"}
    world.ok(bureau, "POST", f"/v1/exits/{proposal['id']}/decide", json=decision)
    for tenant in (world.a, world.b):
        tenant.scorecard, tenant.closed_period = by_provider[tenant.provider], closed["id"]
        tenant.exit = proposal["id"]
    world.ok(bureau, "POST", "/v1/programme/periods", json={"name": "authz-open"})


# -- requests: one per endpoint, as its owner would send it ---------------------------------

REASON = {"reason": "checked by the authorization tests"}
#: Reads a column no grant gives (see the row of POST /v1/code-requests).
UNGRANTED_SOURCE = SOURCE.replace("cycle_time_s", "vibration_mm_s")

Body = Callable[[Tenant, str], dict[str, Any]]


def job_body(tenant: Tenant, dataset_id: str) -> dict[str, Any]:
    return {
        "dataset_id": dataset_id,
        "purpose": PURPOSE,
        "tier": 3,
        "epsilon": 0.01,
        "query": QUERY,
    }


#: What each request carries beyond its path: a plausible body or query, one its owner's
#: role gets accepted, so that neither a 404 nor a 422 can hide a missing role check.
#: ``(tenant, target id) -> httpx keyword arguments``.
REQUESTS: dict[tuple[str, str], Body] = {
    ("POST", "/v1/enterprises"): lambda t, _: {
        "json": {"name": "Initech", "slug": f"initech-{uuid.uuid4().hex[:8]}"}
    },
    ("POST", "/v1/nodes"): lambda t, _: {
        "json": {"name": "Initech", "slug": f"initech-{uuid.uuid4().hex[:8]}"}
    },
    ("POST", "/v1/providers"): lambda t, _: {"json": {"name": "Sneaky Analytics"}},
    ("POST", "/v1/security-officers"): lambda t, _: {"json": {"name": "Eve", "scope": None}},
    ("POST", "/v1/bureau"): lambda t, _: {"json": {"name": "Another Bureau"}},
    ("PATCH", "/v1/enterprises/{enterprise_id}/categories"): lambda t, _: {
        "json": {"industry": "machinery", "size_band": "small"}
    },
    ("GET", "/v1/programme/{table}"): lambda t, _: {"params": {"by": "industry"}},
    ("POST", "/v1/programme/periods"): lambda t, _: {"json": {"name": "another"}},
    ("POST", "/v1/programme/assessments"): lambda t, _: {
        "json": {"provider_id": t.provider, "score": 70, "reason": "on plan"}
    },
    ("POST", "/v1/assessors"): lambda t, _: {
        "json": {"name": f"Quality Institute {uuid.uuid4().hex[:8]}"}
    },
    ("POST", "/v1/assessors/{assessor_id}/suspend"): lambda t, _: {"json": REASON},
    ("POST", "/v1/assessors/{assessor_id}/reinstate"): lambda t, _: {"json": REASON},
    ("POST", "/v1/assessments"): lambda t, _: {
        "json": {"provider_id": t.provider, "score": 70, "reason": "on plan"}
    },
    ("POST", "/v1/programme/ratings"): lambda t, provider: {
        "json": {"provider_id": provider, "rating": 4}
    },
    ("POST", "/v1/exits/{exit_id}/decide"): lambda t, _: {
        "json": {"decision": "reject", "reason": "checked by the authorization tests"}
    },
    ("POST", "/v1/datasets"): lambda t, _: {
        "json": {**DECLARATION, "name": f"log-{uuid.uuid4().hex[:8]}"}
    },
    ("GET", "/v1/datasets/{dataset_id}/mock"): lambda t, _: {"params": {"rows": 5}},
    ("POST", "/v1/datasets/{dataset_id}/versions"): lambda t, _: {
        "content": production_log(50, seed=3),
        "headers": {"content-type": "text/csv"},
    },
    ("POST", "/v1/grants"): lambda t, dataset: {
        "json": {
            "provider_id": t.provider,
            "dataset_ids": [dataset],
            "columns": GRANTED,
            "tiers": [3],
            "purposes": [PURPOSE],
            "valid_until": tomorrow(),
            "epsilon": 0.5,
        }
    },
    ("PATCH", "/v1/grants/{grant_id}"): lambda t, _: {"json": {"reason": "narrower", "epsilon": 1}},
    ("POST", "/v1/grants/{grant_id}/revoke"): lambda t, _: {"json": REASON},
    ("POST", "/v1/jobs"): lambda t, dataset: {"json": job_body(t, dataset)},
    ("POST", "/v1/jobs/preview"): lambda t, dataset: {"json": job_body(t, dataset)},
    ("POST", "/v1/collaborations"): lambda t, _: {"json": COLLABORATION},
    ("POST", "/v1/kpi-contracts"): lambda t, dataset: {"json": kpi_contract_body(t, dataset)},
    # A SHA-256 that is not the terms': the parties' accept is refused for it (409).
    ("POST", "/v1/kpi-contracts/{contract_id}/accept"): lambda t, _: {
        "json": {"terms_sha256": "0" * 64}
    },
    ("POST", "/v1/queries/translate"): lambda t, dataset: {
        "json": {"sql": f"SELECT COUNT(*) FROM {dataset}"}  # noqa: S608 - translated, not run
    },
    ("POST", "/v1/code-requests"): lambda t, dataset: {
        "json": {"dataset_id": dataset, "purpose": PURPOSE, "source": UNGRANTED_SOURCE}
    },
    ("POST", "/v1/code-requests/{code_id}/approve"): lambda t, _: {"json": REASON},
    ("POST", "/v1/code-requests/{code_id}/deny"): lambda t, _: {"json": REASON},
    ("POST", "/v1/jobs/{job_id}/release"): lambda t, _: {"json": REASON},
    ("POST", "/v1/jobs/{job_id}/reject"): lambda t, _: {"json": REASON},
    ("GET", "/v1/audit/events"): lambda t, tenant: {"params": {"tenant_id": tenant, "limit": 5}},
    ("GET", "/v1/audit/keys"): lambda t, tenant: {"params": {"tenant_id": tenant}},
    ("POST", "/v1/providers/{provider_id}/suspend"): lambda t, _: {"json": REASON},
    ("POST", "/v1/providers/{provider_id}/reinstate"): lambda t, _: {"json": REASON},
    ("GET", "/v1/tokens"): lambda t, holder: {"params": {"principal_id": holder}},
    ("POST", "/v1/principals/{principal_id}/tokens"): lambda t, _: {"json": {"ttl_days": 30}},
    ("POST", "/v1/tokens/{token_id}/revoke"): lambda t, _: {"json": REASON},
    ("POST", "/v1/tokens/{token_id}/rotate"): lambda t, _: {"json": {"ttl_days": 30}},
    ("PUT", "/v1/datasets/{dataset_id}/classification"): lambda t, _: {
        "json": {"columns": {"machine": {"domain": "production"}}}
    },
    ("PUT", "/v1/datasets/{dataset_id}/source"): lambda t, _: {
        "json": {
            "kind": "sql",
            "config": {"url": "postgresql://mes@127.0.0.1:1/m", "table": "t", "incremental": "id"},
            "interval_s": 3600,
        }
    },
    ("PUT", "/v1/datasets/{dataset_id}/source/mapping"): lambda t, _: {
        "json": {"columns": {"machine": {"field": "m"}}}
    },
    ("GET", "/v1/important-data"): lambda t, tenant: {"params": {"enterprise_id": tenant}},
    ("PUT", "/v1/purposes/{code}"): lambda t, _: {
        "json": {"name_zh": "碳核算", "name_en": f"Carbon accounting {uuid.uuid4().hex[:6]}"}
    },
    ("POST", "/v1/letters/keys"): lambda t, _: {"json": {"public_key_pem": provider_key()}},
    ("POST", "/v1/grants/{grant_id}/letter"): lambda t, _: {"json": LETTER},
    ("POST", "/v1/grants/{grant_id}/letter/signature"): lambda t, _: {
        "json": {"signature": "ed25519:" + "A" * 86 + "=="}
    },
    ("GET", "/v1/receipts"): lambda t, provider: {
        "params": {"provider_id": provider, "enterprise_id": t.enterprise}
    },
}


def caller(world: AuthzWorld, column: str) -> tuple[str | None, Tenant]:
    """A column's bearer token, and the tenant whose objects it names."""
    role = column.removesuffix("-own").removesuffix(f"-{OTHER}")
    return world.tokens[role], world.b if column.endswith(f"-{OTHER}") else world.a


def target_for(world: AuthzWorld, endpoint: Endpoint, column: str, *, shared: bool = False) -> str:
    """The id ``column`` names on ``endpoint``: a fresh object where a success would use it up
    (so that no case depends on another's outcome), unless ``shared`` is asked for."""
    if endpoint.target is None:
        return ""
    if endpoint.target == "holder":
        return world.holder(column)
    if endpoint.target == "holder_token":
        return world.holder_token(column, fresh=endpoint.consumes and not shared)
    tenant = caller(world, column)[1]
    if endpoint.consumes and not shared:
        return world.fresh(endpoint.target, tenant)
    return tenant.ids(endpoint.target)


def send(
    world: AuthzWorld,
    endpoint: Endpoint,
    column: str,
    target: str,
    extra_json: dict[str, Any] | None = None,
) -> httpx.Response:
    """Send ``column``'s request to ``endpoint`` about ``target`` (see :func:`target_for`),
    with ``extra_json`` added to its JSON body."""
    token, tenant = caller(world, column)
    url = endpoint.path
    if "{" in url:
        name = url[url.index("{") : url.index("}") + 1]
        url = url.replace(name, target)
    body = REQUESTS.get(endpoint.key)
    kwargs = body(tenant, target) if body is not None else {}
    if extra_json is not None:
        kwargs["json"] = {**kwargs["json"], **extra_json}
    return world.call(token, endpoint.method, url, **kwargs)
