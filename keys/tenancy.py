"""Where each tenant's keys live in the key server, and the policies that fence them in.

Two layouts, chosen by :class:`Tenancy`:

* ``namespace`` (default, OpenBao ≥ 2.3): each enterprise gets its own child
  namespace under Veil's base namespace, holding a ``transit`` mount with its
  data-key-encryption key, its own policy and its own AppRole.  A token of one
  tenant is refused in every other namespace by the key server itself.
* ``mount`` (fallback for servers without namespaces, e.g. Vault without
  Enterprise): each enterprise gets its own transit mount
  ``veil-tenants/<tenant>/`` in the base namespace, its own policy and AppRole
  role.  Isolation then rests on per-tenant policies inside one namespace.

Paths returned here are relative to the namespace they are used in.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from i18n import Msg
from keys.errors import InvalidTenantId
from keys.profile import CryptoProfile

PLATFORM_MOUNT = "veil-platform"
SIGNING_KEY = "audit-signing"
#: Veil's own KV v2 mount (base namespace) for the SM2 signing key of the ``gm`` profile,
#: which transit cannot hold, and the secret in it (``docs/keys.md``).
PLATFORM_GM_MOUNT = "veil-platform-gm"
SM2_SIGNING_KEY = "sm2-signing"
DATA_KEY = "dek"
TENANT_MOUNTS_PREFIX = "veil-tenants"
#: The national-cryptography (GM) profile's per-tenant SM4 key-encryption key: a KV v2
#: secret whose versions are the KEK's versions (``keys._kek``).
KEK = "kek"
KEK_MOUNT = "veil-kek"  # in the tenant's namespace (namespace tenancy)
KEK_MOUNTS_PREFIX = "veil-tenants-gm"  # + /<tenant> in the base namespace (mount tenancy)
TENANT_ROLE = "veil-tenant"
PLATFORM_POLICY = "veil-platform"
APPROLE_MOUNT = "approle"
#: A tenant name used only to ask the key server which capabilities Veil's token has.
CAPABILITY_PROBE_TENANT = "veil-capability-probe"

_TENANT_ID = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$")
_RESERVED = frozenset({"sys", "root", "auth", "identity", "cubbyhole", "veil-platform"})


class Tenancy(enum.StrEnum):
    """How tenants are separated in the key server."""

    AUTO = "auto"
    NAMESPACE = "namespace"
    MOUNT = "mount"


def validate_tenant_id(tenant: str) -> str:
    """Return ``tenant`` if it can name a namespace and a mount; raise otherwise."""
    if not _TENANT_ID.fullmatch(tenant) or tenant in _RESERVED:
        raise InvalidTenantId(
            Msg(
                "a tenant id must be 1-48 characters of lower-case letters, "
                "digits and inner hyphens (for example 'acme-metal'), and not a "
                "reserved name"
            )
        )
    return tenant


@dataclass(frozen=True)
class TenantLocation:
    """Where one tenant's keys, policy and role live."""

    tenant: str
    namespace: str  # full namespace path for hvac, "" for the root namespace
    transit_mount: str
    approle_mount: str
    role: str
    policy: str
    kek_mount: str  # the KV v2 mount of the tenant's SM4 key-encryption key (GM profile)

    def tenant_policy(self) -> str:
        """The least-privilege policy of the tenant's own service token.

        Besides its transit key's data keys: under the GM profile, random bytes for new
        SM4 data keys (the tenant's transit ``random`` endpoint) and reading its SM4
        key-encryption key, every version (``keys._kek``).  Nothing else of the KV mount.
        """
        m, k = self.transit_mount, self.kek_mount
        return (
            f'path "{m}/datakey/plaintext/{DATA_KEY}" {{ capabilities = ["update"] }}\n'
            f'path "{m}/decrypt/{DATA_KEY}" {{ capabilities = ["update"] }}\n'
            f'path "{m}/rewrap/{DATA_KEY}" {{ capabilities = ["update"] }}\n'
            f'path "{m}/random/*" {{ capabilities = ["update"] }}\n'
            f'path "{k}/data/{KEK}" {{ capabilities = ["read"] }}\n'
        )


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def locate(tenant: str, tenancy: Tenancy, base_namespace: str) -> TenantLocation:
    """Where ``tenant``'s keys live under ``tenancy`` (which must not be AUTO)."""
    validate_tenant_id(tenant)
    if tenancy is Tenancy.NAMESPACE:
        return TenantLocation(
            tenant=tenant,
            namespace=_join(base_namespace, tenant),
            transit_mount="transit",
            approle_mount=APPROLE_MOUNT,
            role=TENANT_ROLE,
            policy=TENANT_ROLE,
            kek_mount=KEK_MOUNT,
        )
    if tenancy is Tenancy.MOUNT:
        return TenantLocation(
            tenant=tenant,
            namespace=base_namespace.strip("/"),
            transit_mount=_join(TENANT_MOUNTS_PREFIX, tenant),
            approle_mount=APPROLE_MOUNT,
            role=f"{TENANT_ROLE}-{tenant}",
            policy=f"{TENANT_ROLE}-{tenant}",
            kek_mount=_join(KEK_MOUNTS_PREFIX, tenant),
        )
    raise ValueError("resolve Tenancy.AUTO against the key server before locating tenants")


def _hcl(rules: list[tuple[str, tuple[str, ...]]]) -> str:
    lines = []
    for path, caps in rules:
        quoted = ", ".join(f'"{c}"' for c in caps)
        lines.append(f'path "{path}" {{ capabilities = [{quoted}] }}\n')
    return "".join(lines)


_CRU = ("create", "read", "update")
_CRUD = ("create", "read", "update", "delete")
_U = ("update",)


def _kek_rules(mount: str) -> list[tuple[str, tuple[str, ...]]]:
    """Write versions, list them, destroy old ones: no ``read`` of ``data/`` (the key)."""
    return [
        (f"{mount}/data/{KEK}", ("create", "update")),
        (f"{mount}/metadata/{KEK}", ("read",)),
        (f"{mount}/destroy/{KEK}", _U),
        ("sys/tools/random/*", _U),  # the random bytes of new KEK versions
    ]


def platform_policy(tenancy: Tenancy) -> str:
    """The policy Veil's own (non-root) token needs, relative to Veil's base namespace.

    It may create and destroy tenants, rotate their keys and issue their logins,
    and sign with Veil's key; it may not use a tenant's key on data itself.  Of a
    tenant's SM4 key-encryption key (GM profile) it may write new versions, read the
    version list (metadata, no key) and destroy old versions, never read the key.
    """
    rules: list[tuple[str, tuple[str, ...]]] = [
        (f"sys/mounts/{PLATFORM_MOUNT}", _CRU),
        (f"{PLATFORM_MOUNT}/keys/{SIGNING_KEY}", _CRU),
        (f"{PLATFORM_MOUNT}/sign/{SIGNING_KEY}", _U),
        # The gm profile's SM2 signing key: its mount, the key, and its public half.
        (f"sys/mounts/{PLATFORM_GM_MOUNT}", _CRU),
        (f"{PLATFORM_GM_MOUNT}/data/{SM2_SIGNING_KEY}", _CRU),
        (f"{PLATFORM_GM_MOUNT}/metadata/{SM2_SIGNING_KEY}", _CRU),
    ]
    role = f"auth/{APPROLE_MOUNT}/role/{TENANT_ROLE}"
    if tenancy is Tenancy.NAMESPACE:
        rules += [
            ("sys/namespaces/*", _CRUD),
            ("+/sys/mounts/transit", _CRU),
            (f"+/sys/auth/{APPROLE_MOUNT}", (*_CRU, "sudo")),
            (f"+/sys/policies/acl/{TENANT_ROLE}", _CRU),
            (f"+/transit/keys/{DATA_KEY}", _CRU),
            (f"+/transit/keys/{DATA_KEY}/*", _U),
            (f"+/sys/mounts/{KEK_MOUNT}", _CRU),
            *_kek_rules(f"+/{KEK_MOUNT}"),
            (f"+/{role}", _CRU),
            (f"+/{role}/role-id", ("read",)),
            (f"+/{role}/secret-id", _U),
        ]
    elif tenancy is Tenancy.MOUNT:
        rules += [
            (f"sys/mounts/{TENANT_MOUNTS_PREFIX}/*", _CRUD),
            (f"{TENANT_MOUNTS_PREFIX}/+/keys/{DATA_KEY}", _CRU),
            (f"{TENANT_MOUNTS_PREFIX}/+/keys/{DATA_KEY}/*", _U),
            (f"sys/mounts/{KEK_MOUNTS_PREFIX}/*", _CRUD),
            *_kek_rules(f"{KEK_MOUNTS_PREFIX}/+"),
            (f"sys/policies/acl/{TENANT_ROLE}-*", _CRUD),
            (f"sys/auth/{APPROLE_MOUNT}", (*_CRU, "sudo")),
            (f"{role}-*", _CRUD),
        ]
    else:
        raise ValueError("resolve Tenancy.AUTO before asking for the platform policy")
    return _hcl(rules)


def required_capabilities(
    tenancy: Tenancy, base_namespace: str, profile: CryptoProfile = CryptoProfile.STANDARD
) -> dict[str, str]:
    """Paths (relative to the base namespace) that Veil's token must be able to use, and how.

    The SM2 signing key's paths are needed under the ``gm`` profile only: a standard
    deployment works with a policy written before that profile existed.
    """
    probe = locate(CAPABILITY_PROBE_TENANT, tenancy, base_namespace)
    needed = {
        f"{PLATFORM_MOUNT}/sign/{SIGNING_KEY}": "update",
        f"{PLATFORM_MOUNT}/keys/{SIGNING_KEY}": "read",
    }
    if profile is CryptoProfile.GM:
        needed |= gm_signing_capabilities()
    if tenancy is Tenancy.NAMESPACE:
        t = CAPABILITY_PROBE_TENANT
        needed |= {
            f"sys/namespaces/{t}": "create",
            f"{t}/transit/keys/{DATA_KEY}": "create",
            f"{t}/transit/keys/{DATA_KEY}/rotate": "update",
            f"{t}/auth/{APPROLE_MOUNT}/role/{TENANT_ROLE}/secret-id": "update",
        }
    else:
        needed |= {
            f"sys/mounts/{probe.transit_mount}": "create",
            f"{probe.transit_mount}/keys/{DATA_KEY}": "create",
            f"auth/{APPROLE_MOUNT}/role/{probe.role}/secret-id": "update",
        }
    return needed


def gm_signing_capabilities() -> dict[str, str]:
    """What the ``gm`` profile's SM2 signing key needs of Veil's token (base namespace)."""
    return {
        f"{PLATFORM_GM_MOUNT}/data/{SM2_SIGNING_KEY}": "read",
        f"{PLATFORM_GM_MOUNT}/metadata/{SM2_SIGNING_KEY}": "update",
    }
