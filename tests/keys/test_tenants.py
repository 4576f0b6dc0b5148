"""One namespace (or mount) per enterprise: isolation, rotation, crypto-shredding."""

from __future__ import annotations

import hvac
import pytest

from keys import (
    DecryptionError,
    InvalidTenantId,
    KeyServerConfig,
    KeyService,
    Tenancy,
    UnknownTenant,
    wrapped_key_version,
)
from keys.vault import KeyServerClient
from tests.conftest import DevServer

pytestmark = pytest.mark.integration


def _tenant_client(service: KeyService, tenant: str) -> hvac.Client:
    return service._server.tenant(tenant)


def test_tenant_credentials_are_refused_in_another_namespace(keys: KeyService) -> None:
    keys.create_tenant("iso-a")
    keys.create_tenant("iso-b")
    a = _tenant_client(keys, "iso-a")
    assert a.secrets.transit.generate_data_key("dek", key_type="plaintext")["data"]["ciphertext"]
    b_wrapped = _tenant_client(keys, "iso-b").secrets.transit.generate_data_key(
        "dek", key_type="plaintext"
    )["data"]["ciphertext"]

    a_in_b = hvac.Client(url=a.url, token=a.token, namespace="veil/iso-b", timeout=5)
    with pytest.raises(hvac.exceptions.Forbidden):
        a_in_b.secrets.transit.generate_data_key("dek", key_type="plaintext")
    with pytest.raises(hvac.exceptions.Forbidden):
        a_in_b.secrets.transit.decrypt_data("dek", ciphertext=b_wrapped)
    a_at_root = hvac.Client(url=a.url, token=a.token, timeout=5)
    with pytest.raises(hvac.exceptions.Forbidden):  # the path-prefix form is refused too
        a_at_root.adapter.post("/v1/veil/iso-b/transit/decrypt/dek", json={"ciphertext": b_wrapped})
    # Inside its own namespace the tenant token may only use its key, not manage it.
    with pytest.raises(hvac.exceptions.Forbidden):
        a.secrets.transit.rotate_key("dek")
    with pytest.raises(hvac.exceptions.Forbidden):
        a.secrets.transit.delete_key("dek")


def test_one_tenants_object_does_not_decrypt_as_another(keys: KeyService) -> None:
    keys.create_tenant("iso-a")
    keys.create_tenant("iso-b")
    wrapped, blob = keys.encrypt_bytes("iso-a", "ds", 1, b"rows of a")
    with pytest.raises(DecryptionError):
        keys.decrypt_bytes("iso-b", "ds", 1, wrapped, blob)
    with pytest.raises(DecryptionError):  # the right key, but another version's context
        keys.decrypt_bytes("iso-a", "ds", 2, wrapped, blob)


def test_a_secret_is_issued_wrapped_and_opens_only_for_its_tenant(keys: KeyService) -> None:
    keys.create_tenant("sec-a")
    keys.create_tenant("sec-b")
    secret, wrapped = keys.issue_secret("sec-a", "cellkey:ds_1", 1)
    assert len(secret) == 32 and wrapped_key_version(wrapped) == 1
    assert secret.hex() not in wrapped
    assert keys.open_secret("sec-a", "cellkey:ds_1", 2, wrapped) == secret
    with pytest.raises(DecryptionError):
        keys.open_secret("sec-b", "cellkey:ds_1", 1, wrapped)
    with pytest.raises(DecryptionError):
        keys.open_secret("sec-a", "cellkey:ds_1", 1, "vault:v1:not-a-wrapped-key")
    assert keys.issue_secret("sec-a", "cellkey:ds_1", 1)[0] != secret


def test_create_tenant_is_idempotent(keys: KeyService) -> None:
    keys.create_tenant("twice")
    wrapped, blob = keys.encrypt_bytes("twice", "o", 1, b"kept")
    keys.create_tenant("twice")
    assert keys.decrypt_bytes("twice", "o", 1, wrapped, blob) == b"kept"


@pytest.mark.parametrize("bad", ["", "Acme", "a/b", "../x", "-a", "a-", "sys", "a" * 49, "a b"])
def test_invalid_tenant_ids_are_refused(keys: KeyService, bad: str) -> None:
    with pytest.raises(InvalidTenantId):
        keys.create_tenant(bad)


def test_rotation_rewraps_and_retires_old_versions(keys: KeyService) -> None:
    keys.create_tenant("rotor")
    wrapped, blob = keys.encrypt_bytes("rotor", "o", 1, b"before rotation")
    assert wrapped_key_version(wrapped) == 1
    version = keys.rotate_tenant_key("rotor")
    assert version == 2
    new_wrapped, new_blob = keys.encrypt_bytes("rotor", "o2", 1, b"after")
    assert wrapped_key_version(new_wrapped) == 2
    (rewrapped,) = keys.rewrap_data_keys("rotor", [wrapped])
    assert wrapped_key_version(rewrapped) == 2 and rewrapped != wrapped
    keys.retire_key_versions_below("rotor", 2)
    with pytest.raises(DecryptionError):
        keys.decrypt_bytes("rotor", "o", 1, wrapped, blob)  # old wrapping now refused
    assert keys.decrypt_bytes("rotor", "o", 1, rewrapped, blob) == b"before rotation"
    assert keys.decrypt_bytes("rotor", "o2", 1, new_wrapped, new_blob) == b"after"
    with pytest.raises(ValueError, match="latest key version"):
        keys.retire_key_versions_below("rotor", 3)


def test_rewrap_handles_many_keys_in_batches(keys: KeyService) -> None:
    keys.create_tenant("many")
    wrapped = [keys.encrypt_bytes("many", f"o{i}", 1, b"x")[0] for i in range(3)] * 200
    keys.rotate_tenant_key("many")
    assert [wrapped_key_version(w) for w in keys.rewrap_data_keys("many", wrapped)] == [2] * 600


def test_deleting_a_tenant_crypto_shreds_its_data(keys: KeyService) -> None:
    keys.create_tenant("shredded")
    wrapped, blob = keys.encrypt_bytes("shredded", "o", 1, b"gone for good")
    keys.destroy_tenant("shredded")
    assert not keys.tenant_exists("shredded")
    with pytest.raises(UnknownTenant):
        keys.decrypt_bytes("shredded", "o", 1, wrapped, blob)
    keys.create_tenant("shredded")  # a new tenant with the same name has a new key
    with pytest.raises(DecryptionError):
        keys.decrypt_bytes("shredded", "o", 1, wrapped, blob)
    with pytest.raises(UnknownTenant):
        keys.destroy_tenant("never-existed")


def _mount_layout_service(dev: DevServer) -> KeyService:
    return KeyService.connect(
        KeyServerConfig(addr=dev.addr, token=dev.root_token, tenancy=Tenancy.MOUNT)
    )


def test_mount_fallback_isolates_tenants(dev_server: DevServer) -> None:
    service = _mount_layout_service(dev_server)
    assert service.tenancy is Tenancy.MOUNT
    service.create_tenant("ma")
    service.create_tenant("mb")
    wrapped, blob = service.encrypt_bytes("ma", "o", 1, b"mount layout")
    assert service.decrypt_bytes("ma", "o", 1, wrapped, blob) == b"mount layout"
    with pytest.raises(DecryptionError):
        service.decrypt_bytes("mb", "o", 1, wrapped, blob)
    a = _tenant_client(service, "ma")
    with pytest.raises(hvac.exceptions.Forbidden):  # a's token on b's mount
        a.adapter.post("/v1/veil-tenants/mb/decrypt/dek", json={"ciphertext": wrapped})
    with pytest.raises(hvac.exceptions.Forbidden):
        a.adapter.post("/v1/veil-tenants/mb/datakey/plaintext/dek", json={})
    service.destroy_tenant("ma")
    with pytest.raises(UnknownTenant):
        service.decrypt_bytes("ma", "o", 1, wrapped, blob)


def test_auto_tenancy_picks_namespaces_on_openbao(dev_server: DevServer) -> None:
    server = KeyServerClient(KeyServerConfig(addr=dev_server.addr, token=dev_server.root_token))
    server.check_ready()
    assert server.tenancy is Tenancy.NAMESPACE
