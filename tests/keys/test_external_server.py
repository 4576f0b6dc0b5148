"""VEIL_VAULT_ADDR: an external server is checked at start-up, with clear errors."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from keys import (
    KeyServerConfig,
    KeyServerMisconfigured,
    KeyServerUnavailable,
    KeyService,
    Tenancy,
    platform_policy,
)
from keys.bao import free_port
from tests.conftest import DevServer

pytestmark = pytest.mark.integration


def test_unreachable_server_names_the_address() -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(KeyServerUnavailable, match=f"cannot reach the key server at {addr}"):
        KeyService.connect(KeyServerConfig(addr=addr, token="t", timeout_s=2))


def test_missing_credentials_are_reported() -> None:
    with pytest.raises(KeyServerMisconfigured, match="VEIL_VAULT_TOKEN"):
        KeyService.connect(KeyServerConfig(addr="http://127.0.0.1:1"))


def test_a_wrong_token_is_reported(dev_server: DevServer) -> None:
    with pytest.raises(KeyServerMisconfigured, match="refused Veil's credentials"):
        KeyService.connect(KeyServerConfig(addr=dev_server.addr, token="wrong"))


def test_a_token_lacking_a_capability_is_reported(dev_server: DevServer) -> None:
    root = dev_server.root()
    policy = platform_policy(Tenancy.NAMESPACE).replace(
        'path "veil-platform/sign/audit-signing" { capabilities = ["update"] }\n', ""
    )
    root.sys.create_or_update_policy("almost", policy)
    token = root.auth.token.create(policies=["almost"], ttl="10m")["auth"]["client_token"]
    with pytest.raises(KeyServerMisconfigured) as info:
        KeyService.connect(KeyServerConfig(addr=dev_server.addr, token=token))
    message = str(info.value)
    assert "'update' on 'veil-platform/sign/audit-signing'" in message
    assert "veil keys policy" in message
    assert token not in message


@pytest.mark.parametrize("tenancy", [Tenancy.NAMESPACE, Tenancy.MOUNT])
def test_approle_with_the_documented_policy_works(dev_server: DevServer, tenancy: Tenancy) -> None:
    root = dev_server.root()
    root.sys.create_namespace("corp")
    corp = dev_server.root("corp")
    corp.sys.enable_auth_method("approle")
    corp.sys.create_or_update_policy("veil", platform_policy(tenancy))
    corp.auth.approle.create_or_update_approle("veil", token_policies=["veil"], token_ttl="1h")
    role_id = corp.auth.approle.read_role_id("veil")["data"]["role_id"]
    secret_id = corp.auth.approle.generate_secret_id("veil")["data"]["secret_id"]
    config = KeyServerConfig(
        addr=dev_server.addr,
        namespace="corp",
        role_id=role_id,
        secret_id=secret_id,
        tenancy=tenancy,
    )
    keys = KeyService.connect(config)
    keys.create_tenant("acme")
    wrapped, blob = keys.encrypt_bytes("acme", "o", 1, b"external")
    assert keys.decrypt_bytes("acme", "o", 1, wrapped, blob) == b"external"
    keys.sign(b"m")
    keys.destroy_tenant("acme")
    assert not keys.tenant_exists("acme")


def test_processes_starting_together_provision_the_platform_keys_once(
    dev_server: DevServer,
) -> None:
    """Several Veil processes on a fresh key server (``veil serve --processes``, workers):
    each may find the platform's mount missing; none fails because another made it."""
    config = KeyServerConfig(addr=dev_server.addr, token=dev_server.root_token)
    with ThreadPoolExecutor(6) as pool:
        services = list(pool.map(lambda _: KeyService.connect(config), range(6)))
    signatures = {service.sign(b"checkpoint").key_version for service in services}
    assert signatures == {1}  # one signing key, made once
