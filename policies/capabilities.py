"""Who may do what, and over which tenants: the one table of roles.

Every role check of the API, the console and the CLI (which acts through the same
services) asks this module, never ``principal.role`` itself:

- :data:`ROLES` gives each role its capabilities and its *reach*, the tenants those
  capabilities apply to;
- :func:`tenants_in_scope` is the only place that turns a principal into the tenants it
  reaches (a security officer's ``scope`` is read here and nowhere else);
- :func:`may` answers, :func:`require` raises: :class:`~policies.errors.Forbidden` (403)
  when the role lacks the capability, :class:`~policies.errors.NotFound` (404) when the
  tenant named is outside the principal's reach, so existence is never confirmed.

Adding a role is a line in :class:`~policies.principals.Role` and an entry in
:data:`ROLES` (see docs/architecture.md, "Roles and capabilities").
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from i18n import Msg
from policies.errors import Forbidden, NotFound
from policies.principals import Principal, Role


class Capability(enum.StrEnum):
    """Something a role may do; object-level rules (whose dataset, which grant) come after."""

    # The operator's administration.
    MANAGE_PRINCIPALS = "manage_principals"  # create and list enterprises, providers, officers
    LIST_PROVIDERS = "list_providers"  # to choose whom to grant
    ISSUE_TOKENS = "issue_tokens"  # a token for any principal
    MANAGE_ALL_TOKENS = "manage_all_tokens"  # list, revoke, rotate anyone's (else: one's own)
    MANAGE_PURPOSES = "manage_purposes"  # the city's purpose vocabulary (docs/commitments.md)
    # The data holder's side: its own datasets, and the jobs, grants and code on them.
    OWN_DATA = "own_data"
    UPLOAD_DATA = "upload_data"
    CLASSIFY_DATA = "classify_data"
    GRANT_ACCESS = "grant_access"
    REVIEW_CODE = "review_code"  # approve or deny code, release or reject held outputs
    RATE_PROVIDERS = "rate_providers"  # rate a provider it granted, in the open period
    # The data user's side: datasets reached through grants.
    USE_GRANTS = "use_grants"
    READ_CATALOG = "read_catalog"
    SUBMIT_JOBS = "submit_jobs"  # submit, preview, cancel
    SUBMIT_CODE = "submit_code"
    SIGN_LETTERS = "sign_letters"  # register a signing key, sign commitment letters
    # Collaborations across enterprises: proposed and run by a provider (each enterprise
    # joins from its own node); the operator reads them all, a provider its own.
    PROPOSE_COLLABORATIONS = "propose_collaborations"
    READ_COLLABORATIONS = "read_collaborations"
    # Both sides, each seeing what is its own (the services filter by the relation).
    READ_DATASETS = "read_datasets"
    READ_GRANTS = "read_grants"
    READ_JOBS = "read_jobs"
    READ_CODE = "read_code"
    # KPI contracts (pay for results): proposed by one side, accepted by the other; either
    # side asks for an evaluation and reads the signed verdicts.
    AGREE_KPI_CONTRACTS = "agree_kpi_contracts"
    # Oversight, over the tenants in reach.
    READ_AUDIT = "read_audit"
    VERIFY_AUDIT = "verify_audit"  # verify the chain, sign a checkpoint
    READ_ATTENTION = "read_attention"
    READ_KEY_AUDIT = "read_key_audit"
    SUSPEND_PROVIDER = "suspend_provider"  # and reinstate
    READ_RECEIPTS = "read_receipts"
    READ_IMPORTANT_DATA = "read_important_data"
    # The city programme's (the bureau's): aggregates across enterprises, never one's data.
    READ_PROGRAMME = "read_programme"
    # Evaluation periods, weights, assessments, every scorecard, and exit decisions.
    RUN_SCORECARDS = "run_scorecards"
    # Scorecards and exit proposals: a provider its own, the bureau (RUN_SCORECARDS) all.
    READ_SCORECARDS = "read_scorecards"
    # Third-party assessors: the bureau registers and suspends them; each records its own
    # assessments of providers in the open period (docs/programme.md).
    MANAGE_ASSESSORS = "manage_assessors"
    ASSESS_PROVIDERS = "assess_providers"


class Reach(enum.Enum):
    """Which tenants a role's capabilities apply to."""

    ALL = "all"  # every tenant
    OWN = "own"  # the principal's own tenant (it is one)
    ASSIGNED = "assigned"  # the principal's ``scope``: the tenants named, or all if none
    NONE = "none"  # no tenant as such: data reached only through grants


@dataclass(frozen=True)
class RoleRules:
    """What one role may do, and over which tenants."""

    capabilities: frozenset[Capability]
    reach: Reach


_C = Capability
_BOTH_SIDES = {
    _C.READ_DATASETS,
    _C.READ_GRANTS,
    _C.READ_JOBS,
    _C.READ_CODE,
    _C.AGREE_KPI_CONTRACTS,
}
_OVERSIGHT = {
    _C.READ_AUDIT,
    _C.VERIFY_AUDIT,
    _C.READ_ATTENTION,
    _C.READ_KEY_AUDIT,
    _C.SUSPEND_PROVIDER,
    _C.READ_RECEIPTS,
    _C.READ_IMPORTANT_DATA,
}

#: The table.  Its order is the order in which refusals name the roles allowed.
ROLES: Mapping[Role, RoleRules] = MappingProxyType(
    {
        Role.OPERATOR: RoleRules(
            frozenset(
                {
                    _C.MANAGE_PRINCIPALS,
                    _C.LIST_PROVIDERS,
                    _C.ISSUE_TOKENS,
                    _C.MANAGE_ALL_TOKENS,
                    _C.MANAGE_PURPOSES,
                    _C.READ_COLLABORATIONS,
                }
                | _OVERSIGHT
            ),
            Reach.ALL,
        ),
        Role.SECURITY_OFFICER: RoleRules(frozenset(_OVERSIGHT), Reach.ASSIGNED),
        Role.ENTERPRISE: RoleRules(
            frozenset(
                {
                    _C.OWN_DATA,
                    _C.UPLOAD_DATA,
                    _C.CLASSIFY_DATA,
                    _C.GRANT_ACCESS,
                    _C.REVIEW_CODE,
                    _C.LIST_PROVIDERS,
                    _C.READ_RECEIPTS,
                    _C.READ_IMPORTANT_DATA,
                    _C.RATE_PROVIDERS,
                }
                | _BOTH_SIDES
            ),
            Reach.OWN,
        ),
        Role.PROVIDER: RoleRules(
            frozenset(
                {
                    _C.USE_GRANTS,
                    _C.READ_CATALOG,
                    _C.SUBMIT_JOBS,
                    _C.SUBMIT_CODE,
                    _C.SIGN_LETTERS,
                    _C.PROPOSE_COLLABORATIONS,
                    _C.READ_COLLABORATIONS,
                    _C.READ_SCORECARDS,
                }
                | _BOTH_SIDES
            ),
            Reach.NONE,
        ),
        # No tenant as such: every figure it reads counts at least five enterprises
        # (``sandbox.programme``), so it reaches none of them one by one.
        Role.BUREAU: RoleRules(
            frozenset(
                {
                    _C.READ_PROGRAMME,
                    _C.MANAGE_PURPOSES,
                    _C.RUN_SCORECARDS,
                    _C.READ_SCORECARDS,
                    _C.MANAGE_ASSESSORS,
                }
            ),
            Reach.NONE,
        ),
        # No tenant, no programme table, no scorecard: it records its own assessments of
        # providers (``sandbox.scorecards.assessors``), and sees only those.
        Role.ASSESSOR: RoleRules(frozenset({_C.ASSESS_PROVIDERS}), Reach.NONE),
    }
)


@dataclass(frozen=True)
class TenantScope:
    """The tenants a principal reaches: every one (``ids`` None), or those named, in order."""

    ids: tuple[str, ...] | None

    @property
    def everything(self) -> bool:
        """Whether every tenant, present and future, is in reach."""
        return self.ids is None

    def __contains__(self, tenant_id: object) -> bool:
        return self.ids is None or tenant_id in self.ids

    def reaches_any(self, tenant_ids: Iterable[str]) -> bool:
        """Whether any of ``tenant_ids`` is in reach (always, for every tenant)."""
        return self.ids is None or not set(self.ids).isdisjoint(tenant_ids)

    def as_list(self) -> list[str] | None:
        """The ids as a list, or None for every tenant (the form filters and exports take)."""
        return None if self.ids is None else list(self.ids)


ALL_TENANTS = TenantScope(None)


def rules(role: str) -> RoleRules:
    """The rules of ``role``; a role missing from the table may do nothing, over no tenant."""
    try:
        return ROLES[Role(role)]
    except (ValueError, KeyError):
        return RoleRules(frozenset(), Reach.NONE)


def tenants_in_scope(principal: Principal) -> TenantScope:
    """The tenants ``principal``'s capabilities apply to (the one copy of this rule)."""
    reach = rules(principal.role).reach
    if reach is Reach.ALL:
        return ALL_TENANTS
    if reach is Reach.ASSIGNED:
        return ALL_TENANTS if principal.scope is None else TenantScope(tuple(principal.scope))
    if reach is Reach.OWN:
        return TenantScope((principal.id,))
    return TenantScope(())


def roles_with(capability: Capability) -> tuple[Role, ...]:
    """The roles holding ``capability``, in the table's order."""
    return tuple(role for role, r in ROLES.items() if capability in r.capabilities)


def may(principal: Principal, capability: Capability, tenant_id: str | None = None) -> bool:
    """Whether ``principal`` may use ``capability`` (on ``tenant_id``'s objects, if named)."""
    if capability not in rules(principal.role).capabilities:
        return False
    return tenant_id is None or tenant_id in tenants_in_scope(principal)


def require(
    principal: Principal,
    capability: Capability,
    tenant_id: str | None = None,
    *,
    kind: str = "enterprise",
) -> None:
    """Raise unless ``principal`` may use ``capability`` (on ``tenant_id``'s objects).

    The role comes first: a role without the capability is :class:`Forbidden` (403) and
    nothing is looked up.  A tenant out of reach is :class:`NotFound` (404) as a ``kind``
    named ``tenant_id``, the answer an unknown id gets.
    """
    if capability not in rules(principal.role).capabilities:
        allowed = " or ".join(role.value for role in roles_with(capability))
        raise Forbidden(Msg("only {allowed} principals may do this", allowed=allowed))
    if tenant_id is not None and tenant_id not in tenants_in_scope(principal):
        raise NotFound(kind, tenant_id)
