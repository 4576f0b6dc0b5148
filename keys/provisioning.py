"""Creating and destroying a tenant's keys in the key server (Veil's platform token)."""

from __future__ import annotations

import time

import hvac
import hvac.exceptions

from i18n import Msg
from keys._kek import KekStore
from keys.errors import KeyServerUnavailable, UnknownTenant
from keys.tenancy import (
    DATA_KEY,
    KEK_MOUNTS_PREFIX,
    TENANT_MOUNTS_PREFIX,
    Tenancy,
    TenantLocation,
)
from keys.vault import KeyServerClient

#: The tenant service token lives 15 minutes at most; a secret id serves one login.
_TENANT_ROLE_SETTINGS = {
    "token_policies": None,  # filled per tenant
    "token_ttl": "15m",
    "token_max_ttl": "1h",
    "secret_id_ttl": "10m",
    "secret_id_num_uses": 1,
}


def create_tenant(server: KeyServerClient, tenant: str, *, kek: bool = False) -> None:
    """Provision ``tenant``: its namespace (or mount), data key, policy and AppRole, and
    with ``kek`` (the GM profile) its SM4 key-encryption key.

    Idempotent: running it again for an existing tenant changes nothing.
    """
    loc = server.location(tenant)
    if server.tenancy is Tenancy.NAMESPACE:
        base = server.platform()
        try:
            server.call(
                Msg("create the tenant namespace"), lambda: base.sys.create_namespace(tenant)
            )
        except hvac.exceptions.InvalidRequest as exc:
            if "already exists" not in str(exc):
                raise
    admin = server.platform_in(loc.namespace)
    _mount_transit(server, admin, loc)
    _create_data_key(server, admin, loc)
    _write_policy(server, admin, loc)
    _enable_approle(server, admin, loc)
    settings = dict(_TENANT_ROLE_SETTINGS, token_policies=[loc.policy])
    server.call(
        Msg("create the tenant role"),
        lambda: admin.adapter.post(f"/v1/auth/{loc.approle_mount}/role/{loc.role}", json=settings),
    )
    if kek:
        _create_kek(server, admin, loc)


def ensure_tenant_kek(server: KeyServerClient, tenant: str) -> None:
    """Give an existing ``tenant`` its SM4 key-encryption key, and its policy the right to
    read it, unless it has them (idempotent): for tenants made before the GM profile."""
    loc = server.location(tenant)
    if not server.tenant_exists(tenant):
        raise UnknownTenant(
            Msg("tenant '{tenant}' has no keys in the key server; create it first", tenant=tenant)
        )
    admin = server.platform_in(loc.namespace)
    _write_policy(server, admin, loc)  # policies written before the GM profile lack the KEK
    _create_kek(server, admin, loc)


def _write_policy(server: KeyServerClient, admin: hvac.Client, loc: TenantLocation) -> None:
    server.call(
        Msg("write the tenant policy"),
        lambda: admin.adapter.put(
            f"/v1/sys/policies/acl/{loc.policy}", json={"policy": loc.tenant_policy()}
        ),
    )


def _create_kek(server: KeyServerClient, admin: hvac.Client, loc: TenantLocation) -> None:
    try:
        server.call(
            Msg("mount the tenant's SM4 key store"),
            lambda: admin.sys.enable_secrets_engine(
                "kv", path=loc.kek_mount, options={"version": "2"}
            ),
        )
    except hvac.exceptions.InvalidRequest as exc:
        if "path is already in use" not in str(exc):
            raise
    store = KekStore(server)
    if store.versions(loc.tenant)[1] == 0:
        store.add_version(loc.tenant, first=True)


def _mount_transit(server: KeyServerClient, admin: hvac.Client, loc: TenantLocation) -> None:
    try:
        server.call(
            Msg("mount the tenant's transit engine"),
            lambda: admin.sys.enable_secrets_engine("transit", path=loc.transit_mount),
        )
    except hvac.exceptions.InvalidRequest as exc:
        if "path is already in use" not in str(exc):
            raise


def _create_data_key(server: KeyServerClient, admin: hvac.Client, loc: TenantLocation) -> None:
    keys_path = f"/v1/{loc.transit_mount}/keys/{DATA_KEY}"
    # Creating an existing key is a no-op in transit, so this is safe to repeat.
    server.call(Msg("create the tenant key"), lambda: admin.adapter.post(keys_path, json={}))
    server.call(
        Msg("allow the tenant key to be shredded"),
        lambda: admin.adapter.post(f"{keys_path}/config", json={"deletion_allowed": True}),
    )


def _enable_approle(server: KeyServerClient, admin: hvac.Client, loc: TenantLocation) -> None:
    try:
        server.call(
            Msg("enable the tenant login method"),
            lambda: admin.sys.enable_auth_method("approle", path=loc.approle_mount),
        )
    except hvac.exceptions.InvalidRequest as exc:
        if "path is already in use" not in str(exc):
            raise


def _wait_until_namespace_gone(
    server: KeyServerClient, tenant: str, timeout_s: float = 30.0
) -> None:
    """Namespace deletion runs in the background; "destroyed" must mean gone."""
    base = server.platform()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            server.call(
                Msg("check the namespace deletion"),
                lambda: base.adapter.get(f"/v1/sys/namespaces/{tenant}"),
            )
        except hvac.exceptions.InvalidPath:
            return
        time.sleep(0.05)
    raise KeyServerUnavailable(
        Msg(
            "the key server has not finished deleting tenant '{tenant}' after "
            "{timeout_s} s; check its log, then retry the deletion",
            tenant=tenant,
            timeout_s=f"{timeout_s:.0f}",
        )
    )


def destroy_tenant(server: KeyServerClient, tenant: str) -> None:
    """Crypto-shred ``tenant``: delete its namespace (or mounts, policy and role).

    Every data key wrapped by the tenant's key (transit) or KEK (SM4, GM profile) becomes
    undecryptable, and with it every object encrypted under those data keys.
    """
    loc = server.location(tenant)
    if not server.tenant_exists(tenant):
        raise UnknownTenant(
            Msg(
                "tenant '{tenant}' has no keys in the key server",
                tenant=tenant,
            )
        )
    server.forget_tenant(tenant)
    if server.tenancy is Tenancy.NAMESPACE:
        base = server.platform()
        server.call(Msg("delete the tenant namespace"), lambda: base.sys.delete_namespace(tenant))
        _wait_until_namespace_gone(server, tenant)
        return
    base = server.platform()
    mount = loc.transit_mount
    assert mount.startswith(f"{TENANT_MOUNTS_PREFIX}/")
    server.call(Msg("unmount the tenant keys"), lambda: base.sys.disable_secrets_engine(mount))
    assert loc.kek_mount.startswith(f"{KEK_MOUNTS_PREFIX}/")
    # Unmounting removes every KEK version (a no-op for a tenant that never had one).
    server.call(
        Msg("unmount the tenant's SM4 key store"),
        lambda: base.sys.disable_secrets_engine(loc.kek_mount),
    )
    server.call(
        Msg("delete the tenant role"),
        lambda: base.adapter.delete(f"/v1/auth/{loc.approle_mount}/role/{loc.role}"),
    )
    server.call(
        Msg("delete the tenant policy"),
        lambda: base.adapter.delete(f"/v1/sys/policies/acl/{loc.policy}"),
    )
