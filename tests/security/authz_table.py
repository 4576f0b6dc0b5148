"""The authorization policy of the REST API, written down as a table (OWASP API1, API3, API5).

Every ``/v1`` endpoint has one row: for each caller (a role, and for tenant-bound
roles whether the object named is their own tenant's or another's) the HTTP status
the API must answer.  The statuses come from ARCHITECTURE.md, docs/api.md and
docs/oversight.md, not from the code:

- 401: no token, an unknown one, or a suspended principal's;
- 403: the role may not call this function at all (function level, BFLA) — also for an
  id that does not matter to that role: the role refusal comes first and never looks
  the object up; a job denied by policy is 403 too, with ``reasons`` (see ``denied``);
- 404: another tenant's object (object level, BOLA): the same answer as for an unknown
  id, so existence is never confirmed;
- 409: the caller may act on the object, but its state does not allow the action (a
  tier-3 job has no model to download): authorization passed;
- 422 (one case, explained at its row): authorization passed, the content is refused.

Columns (callers):

==================== ===============================================================
anonymous            no ``Authorization`` header
bad-token            a well-formed bearer token that Veil never issued
suspended            a suspended provider's (once valid) token
operator             the platform operator
officer              a security officer without scope (all enterprises)
officer-scoped-*     a security officer scoped to enterprise A (own: A's objects,
                     other: enterprise B's)
enterprise-*         enterprise A (own: A's objects; other: B's)
provider-*           a provider holding a grant from A (own: its grant, jobs and code
                     requests on A's data; other: another provider's on B's data)
provider-nogrant     a provider without any grant, naming A's objects
bureau               the programme's bureau (工信局): aggregates across enterprises only
assessor             a third-party assessor the bureau registered: its own assessments
==================== ===============================================================

The bureau reaches no enterprise, provider or officer function: a row that does not name
``bureau`` gives it 403 (the role refusal), and only the rows that differ say otherwise.
The same holds for the assessor, which reaches nothing but its own assessments.

Endpoints that name no object (``target`` None) have one column per role instead of
own / other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

UNAUTHENTICATED = ("anonymous", "bad-token", "suspended")
#: Callers whose relation to the object does not vary: they always name A's objects.
UNRELATED = ("operator", "officer", "provider-nogrant", "bureau", "assessor")
#: Tenant-bound callers: "own" names objects of their tenant, "other" of another's.
RELATED = ("officer-scoped", "enterprise", "provider")
OWN, OTHER = "own", "other"

#: The columns of a row that names an object, and of one that does not.
OBJECT_COLUMNS = (
    *UNAUTHENTICATED,
    *UNRELATED,
    *(f"{role}-{rel}" for role in RELATED for rel in (OWN, OTHER)),
)
PLAIN_COLUMNS = (*UNAUTHENTICATED, *UNRELATED, *RELATED)

Pair = tuple[int, int]


@dataclass(frozen=True)
class Endpoint:
    """One row of the policy: an endpoint and the status each caller must get.

    ``target`` names the kind of object the path (or the body or query) names, filled
    from the fixtures' objects of tenant A or B; ``consumes``: a success uses that object
    up (revokes, suspends, decides), so every case gets a fresh one of its own (a refusal
    that wrongly succeeded fails only its own case); ``denied``:
    the columns whose 403 is a policy decision (with ``reasons``), not a role refusal.
    """

    method: str
    path: str
    expect: Mapping[str, int]
    target: str | None = None
    consumes: bool = False
    denied: frozenset[str] = field(default_factory=frozenset)

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)


def row(
    method: str,
    path: str,
    *,
    operator: int,
    officer: int,
    scoped: int | Pair,
    enterprise: int | Pair,
    provider: int | Pair,
    nogrant: int,
    bureau: int = 403,
    assessor: int = 403,
    target: str | None = None,
    consumes: bool = False,
    denied: tuple[str, ...] = (),
    unauthenticated: int = 401,
) -> Endpoint:
    """A row; tenant-bound callers take (own, other) exactly when the row has a target."""
    expect = {c: unauthenticated for c in UNAUTHENTICATED}
    expect |= {
        "operator": operator,
        "officer": officer,
        "provider-nogrant": nogrant,
        "bureau": bureau,
        "assessor": assessor,
    }
    for role, value in (
        ("officer-scoped", scoped),
        ("enterprise", enterprise),
        ("provider", provider),
    ):
        if isinstance(value, tuple):
            expect[f"{role}-{OWN}"], expect[f"{role}-{OTHER}"] = value
        else:
            expect[role] = value
    return Endpoint(method, path, expect, target, consumes, frozenset(denied))


# The policy.  Each line reads: who may do this, and what everyone else gets.
POLICY: tuple[Endpoint, ...] = (
    row("GET", "/v1/health", unauthenticated=200,
        operator=200, officer=200, scoped=200, enterprise=200, provider=200, nogrant=200,
        bureau=200, assessor=200),
    row("GET", "/v1/me",
        operator=200, officer=200, scoped=200, enterprise=200, provider=200, nogrant=200,
        bureau=200, assessor=200),
    # -- principals: the operator's -----------------------------------------------------
    row("POST", "/v1/enterprises",
        operator=201, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403),
    row("GET", "/v1/enterprises",
        operator=200, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403),
    # Enterprises whose data lives on their own node (docs/nodes.md): the operator's.
    row("POST", "/v1/nodes",
        operator=201, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403),
    row("GET", "/v1/nodes",
        operator=200, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403),
    # The fixture's enterprises are hosted, so the operator finds no node to re-enrol (404);
    # every other role is refused for its role first (403), the object never looked up.
    row("POST", "/v1/nodes/{enterprise_id}/enrolment-code", target="tenant",
        operator=404, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(403, 403), nogrant=403),
    row("POST", "/v1/providers",
        operator=201, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403),
    # Enterprises list providers, to choose whom to grant.
    row("GET", "/v1/providers",
        operator=200, officer=403, scoped=403, enterprise=200, provider=403, nogrant=403),
    row("POST", "/v1/security-officers",
        operator=201, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403),
    # An enterprise's public categories, set by the operator (docs/programme.md).
    row("PATCH", "/v1/enterprises/{enterprise_id}/categories", target="tenant",
        operator=200, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(403, 403), nogrant=403),
    # The programme's bureau: one per programme, and the fixture has it already (409).
    row("POST", "/v1/bureau",
        operator=409, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403),
    # Own: a provider asking a token for itself; nobody but the operator issues tokens.
    row("POST", "/v1/principals/{principal_id}/tokens", target="principal",
        operator=201, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(403, 403), nogrant=403),
    # -- tokens: each principal its own; the operator everyone's ---------------------------
    # Target "holder": a principal whose tokens are named.  Own: the caller itself; other:
    # tenant B's principal of the caller's role (B's enterprise for the scoped officer);
    # callers without own/other name A's provider.  Another's tokens are 404, like an
    # unknown id (docs/api.md, "Tokens").
    row("GET", "/v1/tokens", target="holder",
        operator=200, officer=404, scoped=(200, 404), enterprise=(200, 404),
        provider=(200, 404), nogrant=404, bureau=404, assessor=404),
    row("POST", "/v1/tokens/{token_id}/revoke", target="holder_token", consumes=True,
        operator=200, officer=404, scoped=(200, 404), enterprise=(200, 404),
        provider=(200, 404), nogrant=404, bureau=404, assessor=404),
    row("POST", "/v1/tokens/{token_id}/rotate", target="holder_token", consumes=True,
        operator=201, officer=404, scoped=(201, 404), enterprise=(201, 404),
        provider=(201, 404), nogrant=404, bureau=404, assessor=404),
    # -- datasets: the enterprise's own; a provider sees those granted to it --------------
    row("POST", "/v1/datasets",
        operator=403, officer=403, scoped=403, enterprise=201, provider=403, nogrant=403),
    row("GET", "/v1/datasets",
        operator=403, officer=403, scoped=403, enterprise=200, provider=200, nogrant=200),
    row("GET", "/v1/datasets/{dataset_id}", target="dataset",
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(200, 404), nogrant=404),
    row("GET", "/v1/catalog",
        operator=403, officer=403, scoped=403, enterprise=403, provider=200, nogrant=200),
    row("GET", "/v1/datasets/{dataset_id}/mock", target="dataset",
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(200, 404), nogrant=404),
    row("POST", "/v1/datasets/{dataset_id}/versions", target="dataset", consumes=True,
        operator=403, officer=403, scoped=(403, 403), enterprise=(201, 404),
        provider=(403, 403), nogrant=403),
    # National classification (docs/classification.md): read like the schema, set by the owner.
    row("GET", "/v1/datasets/{dataset_id}/classification", target="dataset",
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(200, 404), nogrant=404),
    row("PUT", "/v1/datasets/{dataset_id}/classification", target="dataset",
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(403, 403), nogrant=403),
    # Data sources read in place (docs/sources.md): the owner's alone; another's dataset is
    # unknown. Mapping or running a dataset that has no source yet is 409 (no_source).
    row("GET", "/v1/sources",
        operator=403, officer=403, scoped=403, enterprise=200, provider=403, nogrant=403),
    row("PUT", "/v1/datasets/{dataset_id}/source", target="dataset",
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(403, 403), nogrant=403),
    row("GET", "/v1/datasets/{dataset_id}/source", target="dataset",
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(403, 403), nogrant=403),
    row("PUT", "/v1/datasets/{dataset_id}/source/mapping", target="dataset", consumes=True,
        operator=403, officer=403, scoped=(403, 403), enterprise=(409, 404),
        provider=(403, 403), nogrant=403),
    row("POST", "/v1/datasets/{dataset_id}/source/run", target="dataset", consumes=True,
        operator=403, officer=403, scoped=(403, 403), enterprise=(409, 404),
        provider=(403, 403), nogrant=403),
    # -- grants: the enterprise grants; the provider reads those given to it --------------
    # Other: enterprise A granting enterprise B's dataset.
    row("POST", "/v1/grants", target="dataset",
        operator=403, officer=403, scoped=(403, 403), enterprise=(201, 404),
        provider=(403, 403), nogrant=403),
    row("GET", "/v1/grants",
        operator=403, officer=403, scoped=403, enterprise=200, provider=200, nogrant=200),
    row("GET", "/v1/grants/{grant_id}", target="grant",
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(200, 404), nogrant=404),
    # A provider may not touch a grant's terms, not even its own grant's.
    row("PATCH", "/v1/grants/{grant_id}", target="grant", consumes=True,
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(403, 403), nogrant=403),
    row("POST", "/v1/grants/{grant_id}/revoke", target="grant", consumes=True,
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(403, 403), nogrant=403),
    # -- the city's purpose vocabulary: everyone reads it; the bureau and the operator keep it
    row("GET", "/v1/purposes",
        operator=200, officer=200, scoped=200, enterprise=200, provider=200, nogrant=200,
        bureau=200, assessor=200),
    # Target "purpose": one code, the same for either tenant (the vocabulary is the city's).
    row("PUT", "/v1/purposes/{code}", target="purpose",
        operator=200, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(403, 403), nogrant=403, bureau=200),
    # -- commitment letters (docs/commitments.md) ----------------------------------------
    # Any provider registers its own signing key (no grant is involved).
    row("POST", "/v1/letters/keys",
        operator=403, officer=403, scoped=403, enterprise=403, provider=201, nogrant=201),
    # The enterprise issues its grant's letter (other: B's grant, 404 as unknown).
    row("POST", "/v1/grants/{grant_id}/letter", target="grant", consumes=True,
        operator=403, officer=403, scoped=(403, 403), enterprise=(201, 404),
        provider=(403, 403), nogrant=403),
    # Read like the grant: its enterprise and its provider.
    row("GET", "/v1/grants/{grant_id}/letter", target="grant",
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(200, 404), nogrant=404),
    # The provider's own letter with a signature that does not verify: 422 after the role
    # and the grant were checked (the 200 is tests/sandbox/test_commitments.py's).
    row("POST", "/v1/grants/{grant_id}/letter/signature", target="grant",
        operator=403, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(422, 404), nogrant=404),
    # The evidence pack: who takes receipts.  The fixture's letters are not signed by the
    # provider, so the authorized callers get 409 (a pack needs a signed letter; the 200 is
    # tests/sandbox/test_commitments.py's); another's grant is 404.
    row("GET", "/v1/grants/{grant_id}/evidence", target="grant",
        operator=409, officer=409, scoped=(409, 404), enterprise=(409, 404),
        provider=(403, 403), nogrant=403),
    # -- jobs: the provider submits on granted data --------------------------------------
    # A dataset the provider holds no grant on is a policy denial (audited, with reasons,
    # the same for another tenant's dataset as for an unknown id).
    row("POST", "/v1/jobs", target="dataset",
        operator=403, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(202, 403), nogrant=403, denied=("provider-other", "provider-nogrant")),
    # A preview answers a denial in its body (allowed: false), never with the data's facts.
    row("POST", "/v1/jobs/preview", target="dataset",
        operator=403, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(200, 200), nogrant=200),
    # Translating SQL names a dataset in FROM: one without a grant is unknown (404).
    row("POST", "/v1/queries/translate", target="dataset",
        operator=403, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(200, 404), nogrant=404),
    # -- collaborations: a provider proposes and runs its own; the operator reads all ------
    # Any provider may propose (no grant is involved: each enterprise joins on its node).
    row("POST", "/v1/collaborations",
        operator=403, officer=403, scoped=403, enterprise=403, provider=201, nogrant=201),
    row("GET", "/v1/collaborations",
        operator=200, officer=403, scoped=403, enterprise=403, provider=200, nogrant=200),
    # Own: proposed by the caller; other: by another provider (404, never confirmed).
    row("GET", "/v1/collaborations/{collaboration_id}", target="collaboration",
        operator=200, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(200, 404), nogrant=404),
    row("POST", "/v1/collaborations/{collaboration_id}/close", target="collaboration",
        consumes=True, operator=403, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(200, 404), nogrant=404),
    # Nobody joined the fixture's proposals: the proposer's run is refused for its state
    # (409 too_few_participants), after authorization passed.
    row("POST", "/v1/collaborations/{collaboration_id}/runs", target="collaboration",
        operator=403, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(409, 404), nogrant=404),
    # No run exists: the proposer gets 404 for the run, everyone else as for the proposal.
    row("GET", "/v1/collaborations/{collaboration_id}/runs/{run_id}", target="collaboration",
        operator=404, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(404, 404), nogrant=404),
    # -- KPI contracts: between an enterprise and a provider; only the two parties ---------
    # Own: A's dataset, which A's provider holds a grant on; other: B's (404).
    row("POST", "/v1/kpi-contracts", target="dataset",
        operator=403, officer=403, scoped=(403, 403), enterprise=(201, 404),
        provider=(201, 404), nogrant=404),
    row("GET", "/v1/kpi-contracts",
        operator=403, officer=403, scoped=403, enterprise=200, provider=200, nogrant=200),
    # Own: proposed by A's provider to A; other: B's contract (404, never confirmed).
    row("GET", "/v1/kpi-contracts/{contract_id}", target="kpi_contract",
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(200, 404), nogrant=404),
    # The request names a SHA-256 that is not the terms' (and the proposer may not accept
    # its own): 409 for both parties, after authorization passed.
    row("POST", "/v1/kpi-contracts/{contract_id}/accept", target="kpi_contract",
        operator=403, officer=403, scoped=(403, 403), enterprise=(409, 404),
        provider=(409, 404), nogrant=404),
    row("POST", "/v1/kpi-contracts/{contract_id}/decline", target="kpi_contract",
        consumes=True, operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(200, 404), nogrant=404),
    # Not accepted yet: refused for its state (409 contract_not_active), nothing spent.
    row("POST", "/v1/kpi-contracts/{contract_id}/evaluations", target="kpi_contract",
        operator=403, officer=403, scoped=(403, 403), enterprise=(409, 404),
        provider=(409, 404), nogrant=404),
    row("GET", "/v1/kpi-contracts/{contract_id}/verdicts", target="kpi_contract",
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(200, 404), nogrant=404),
    # No evaluation exists: the parties get 404 for the verdict, everyone else as above.
    row("GET", "/v1/kpi-contracts/{contract_id}/verdicts/{verdict_id}", target="kpi_contract",
        operator=403, officer=403, scoped=(403, 403), enterprise=(404, 404),
        provider=(404, 404), nogrant=404),
    row("POST", "/v1/jobs/{job_id}/cancel", target="queued_job", consumes=True,
        operator=403, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(200, 404), nogrant=404),
    # Own: a released tier-3 job, which has no model (409 = authorized, nothing to give).
    row("GET", "/v1/jobs/{job_id}/model", target="job",
        operator=403, officer=403, scoped=(403, 403), enterprise=(409, 404),
        provider=(409, 404), nogrant=404),
    row("GET", "/v1/schemas/training",
        operator=200, officer=200, scoped=200, enterprise=200, provider=200, nogrant=200,
        bureau=200, assessor=200),
    row("GET", "/v1/schemas/query",
        operator=200, officer=200, scoped=200, enterprise=200, provider=200, nogrant=200,
        bureau=200, assessor=200),
    row("GET", "/v1/jobs",
        operator=403, officer=403, scoped=403, enterprise=200, provider=200, nogrant=200),
    row("GET", "/v1/jobs/{job_id}", target="job",
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(200, 404), nogrant=404),
    row("GET", "/v1/jobs/{job_id}/result", target="job",
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(200, 404), nogrant=404),
    # -- tier 5: reviewed code ------------------------------------------------------------
    # The provider's own request reads a column its grant lacks: refused with 422 after the
    # role and grant checks passed, before PySyft runs it on the mock (twenty seconds; the
    # 201 is tests/sandbox/test_reviewed_code.py's).  Without a tier-5 grant: 404.
    row("POST", "/v1/code-requests", target="dataset",
        operator=403, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(422, 404), nogrant=404),
    row("GET", "/v1/code-requests",
        operator=403, officer=403, scoped=403, enterprise=200, provider=200, nogrant=200),
    row("GET", "/v1/code-requests/{code_id}", target="code",
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(200, 404), nogrant=404),
    row("POST", "/v1/code-requests/{code_id}/approve", target="code", consumes=True,
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(403, 403), nogrant=403),
    row("POST", "/v1/code-requests/{code_id}/deny", target="code", consumes=True,
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(403, 403), nogrant=403),
    # A held output is for the enterprise to judge; its provider waits.
    row("GET", "/v1/jobs/{job_id}/held", target="held_job",
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(403, 403), nogrant=403),
    row("POST", "/v1/jobs/{job_id}/release", target="held_job", consumes=True,
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(403, 403), nogrant=403),
    row("POST", "/v1/jobs/{job_id}/reject", target="held_job", consumes=True,
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(403, 403), nogrant=403),
    # -- the audit log: operators and officers -------------------------------------------
    # Filtering on a tenant outside a scoped officer's scope finds nothing (200, empty:
    # the filter is narrowed to the scope); tests check that nothing leaks.
    row("GET", "/v1/audit/events", target="tenant",
        operator=200, officer=200, scoped=(200, 200), enterprise=(403, 403),
        provider=(403, 403), nogrant=403),
    row("GET", "/v1/audit/export",
        operator=200, officer=200, scoped=200, enterprise=403, provider=403, nogrant=403),
    row("GET", "/v1/audit/public-key",
        operator=200, officer=200, scoped=200, enterprise=200, provider=200, nogrant=200,
        bureau=200, assessor=200),
    row("POST", "/v1/audit/checkpoints",
        operator=201, officer=201, scoped=201, enterprise=403, provider=403, nogrant=403),
    row("GET", "/v1/audit/verify",
        operator=200, officer=200, scoped=200, enterprise=403, provider=403, nogrant=403),
    row("POST", "/v1/audit/verifications",
        operator=201, officer=201, scoped=201, enterprise=403, provider=403, nogrant=403),
    row("GET", "/v1/audit/attention",
        operator=200, officer=200, scoped=200, enterprise=403, provider=403, nogrant=403),
    row("GET", "/v1/audit/keys", target="tenant",
        operator=200, officer=200, scoped=(200, 404), enterprise=(403, 403),
        provider=(403, 403), nogrant=403),
    # -- oversight: suspension, the one write officers may do ----------------------------
    # Own: a provider holding a grant from the caller's tenant (the provider's suspending
    # itself is in test_authz_properties.py).
    row("POST", "/v1/providers/{provider_id}/suspend", target="provider", consumes=True,
        operator=200, officer=200, scoped=(200, 404), enterprise=(403, 403),
        provider=(403, 403), nogrant=403),
    row("POST", "/v1/providers/{provider_id}/reinstate", target="suspended_provider",
        consumes=True,
        operator=200, officer=200, scoped=(200, 404), enterprise=(403, 403),
        provider=(403, 403), nogrant=403),
    # -- receipts: the enterprise's own; officers within scope; the operator --------------
    # Other for an enterprise: naming another enterprise (documented as 403: an enterprise
    # is refused any enterprise_id but its own, whether it exists or not).
    row("GET", "/v1/receipts", target="receipt",
        operator=200, officer=200, scoped=(200, 404), enterprise=(200, 403),
        provider=(403, 403), nogrant=403),
    # The catalogue of important data: as receipts (an enterprise naming another: 403).
    row("GET", "/v1/important-data", target="tenant",
        operator=200, officer=200, scoped=(200, 404), enterprise=(200, 403),
        provider=(403, 403), nogrant=403),
    # -- the programme: the bureau's tables across enterprises (docs/programme.md) ---------
    # Nobody else reads them, the operator included: the operator sees metadata, the
    # bureau aggregates, and neither is the other's view.
    row("GET", "/v1/programme",
        operator=403, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403,
        bureau=200),
    row("GET", "/v1/programme/{table}", target="programme_table",
        operator=403, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(403, 403), nogrant=403, bureau=200),
    # -- scorecards and exit (docs/programme.md, "Scorecards and exit") --------------------
    # The world has a closed period (its scorecards) and an open one: opening another is
    # refused for its state (409), as is closing the closed one.
    row("POST", "/v1/programme/periods",
        operator=403, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403,
        bureau=409),
    row("GET", "/v1/programme/periods",
        operator=403, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403,
        bureau=200),
    row("POST", "/v1/programme/periods/{period_id}/close", target="closed_period",
        operator=403, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(403, 403), nogrant=403, bureau=409),
    row("POST", "/v1/programme/assessments",
        operator=403, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403,
        bureau=201),
    # Own: the provider A granted; other: B's provider, which A never granted (404).
    row("POST", "/v1/programme/ratings", target="provider",
        operator=403, officer=403, scoped=(403, 403), enterprise=(200, 404),
        provider=(403, 403), nogrant=403),
    # A provider lists its own scorecards (none for a provider scored nowhere), the bureau all.
    row("GET", "/v1/scorecards",
        operator=403, officer=403, scoped=403, enterprise=403, provider=200, nogrant=200,
        bureau=200),
    # Own: the scorecard of A's provider; other: B's provider's (404, never confirmed).
    row("GET", "/v1/scorecards/{scorecard_id}", target="scorecard",
        operator=403, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(200, 404), nogrant=404, bureau=200),
    row("GET", "/v1/exits",
        operator=403, officer=403, scoped=403, enterprise=403, provider=200, nogrant=200,
        bureau=200),
    row("GET", "/v1/exits/providers",
        operator=403, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403,
        bureau=200),
    # The world's proposal was rejected already: the bureau gets 409 (authorized, decided).
    row("POST", "/v1/exits/{exit_id}/decide", target="exit",
        operator=403, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(403, 403), nogrant=403, bureau=409),
    # -- registered assessors: the bureau keeps the register, each assessor its own scores -
    row("POST", "/v1/assessors",
        operator=403, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403,
        bureau=201),
    row("GET", "/v1/assessors",
        operator=403, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403,
        bureau=200),
    # Target "assessor": one the bureau registered, the same for either tenant.
    row("POST", "/v1/assessors/{assessor_id}/suspend", target="assessor", consumes=True,
        operator=403, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(403, 403), nogrant=403, bureau=200),
    row("POST", "/v1/assessors/{assessor_id}/reinstate", target="suspended_assessor",
        consumes=True, operator=403, officer=403, scoped=(403, 403), enterprise=(403, 403),
        provider=(403, 403), nogrant=403, bureau=200),
    # Only an assessor records its own; the bureau cannot record one in its name.
    row("POST", "/v1/assessments",
        operator=403, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403,
        assessor=201),
    row("GET", "/v1/assessments",
        operator=403, officer=403, scoped=403, enterprise=403, provider=403, nogrant=403,
        assessor=200),
)  # fmt: skip

BY_KEY: dict[tuple[str, str], Endpoint] = {e.key: e for e in POLICY}
