"""The GM profile's data encryption on a real OpenBao: SM4 data keys wrapped by each
tenant's SM4 key-encryption key (KV v2), streaming format 2, and everything made under
either profile readable under the other."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import hvac
import pytest

from keys import (
    CryptoProfile,
    DecryptionError,
    KeyServerConfig,
    KeyServerUnavailable,
    KeyService,
    LocalKeyServer,
    Tenancy,
    UnknownTenant,
    _kek,
    wrapped_key_version,
)
from keys.auditlog import AuditEntry, operation_of
from keys.tenancy import DATA_KEY
from tests.conftest import DevServer

pytestmark = pytest.mark.integration

GM = CryptoProfile.GM


@pytest.fixture(scope="module")
def gm(key_server: LocalKeyServer) -> KeyService:
    return KeyService.connect(key_server.config(), profile=GM)


def _kek_path(service: KeyService, tenant: str) -> tuple[str, str]:
    loc = service.tenant_location(tenant)
    return loc.namespace, f"/v1/{loc.kek_mount}/data/kek"


def test_round_trip_writes_format_2_with_an_sm4_wrapped_key(gm: KeyService) -> None:
    gm.create_tenant("gm-acme")
    data = bytes(range(256)) * 40  # several chunks
    src, out = io.BytesIO(data), io.BytesIO()
    wrapped = gm.encrypt_stream("gm-acme", "dataset:ds_1", 1, src, out, chunk_size=1024)
    blob = out.getvalue()
    assert wrapped.startswith("veil-sm4:v1:") and wrapped_key_version(wrapped) == 1
    assert blob[:10] == b"VEILSTRM\x02\x02"  # format 2, SM4-GCM STREAM
    assert gm.decrypt_bytes("gm-acme", "dataset:ds_1", 1, wrapped, blob) == data
    secret, wrapped_secret = gm.issue_secret("gm-acme", "cellkey:ds_1", 1)
    assert len(secret) == 32 and wrapped_secret.startswith("veil-sm4:v1:")
    assert gm.open_secret("gm-acme", "cellkey:ds_1", 1, wrapped_secret) == secret
    with pytest.raises(DecryptionError):  # a secret is not a data key, nor the reverse
        gm.decrypt_bytes("gm-acme", "dataset:ds_1", 1, wrapped_secret, blob)
    with pytest.raises(DecryptionError):
        gm.open_secret("gm-acme", "cellkey:ds_1", 1, wrapped)


def test_both_profiles_read_what_either_made(gm: KeyService, keys: KeyService) -> None:
    keys.create_tenant("gm-cross")
    old_wrapped, old_blob = keys.encrypt_bytes("gm-cross", "o", 1, b"made under standard")
    new_wrapped, new_blob = gm.encrypt_bytes("gm-cross", "o", 2, b"made under gm")
    assert old_wrapped.startswith("vault:") and old_blob[8] == 1
    assert new_wrapped.startswith("veil-sm4:") and new_blob[8] == 2
    for service in (gm, keys):  # the artefact decides, whatever the profile
        assert service.decrypt_bytes("gm-cross", "o", 1, old_wrapped, old_blob) == (
            b"made under standard"
        )
        assert service.decrypt_bytes("gm-cross", "o", 2, new_wrapped, new_blob) == (
            b"made under gm"
        )
    std_secret, std_wrapped = keys.issue_secret("gm-cross", "cellkey:x", 1)
    gm_secret, gm_wrapped = gm.issue_secret("gm-cross", "cellkey:x", 1)
    assert gm.open_secret("gm-cross", "cellkey:x", 1, std_wrapped) == std_secret
    assert keys.open_secret("gm-cross", "cellkey:x", 1, gm_wrapped) == gm_secret
    # A key of one kind with a stream of the other: the same opaque error, both ways.
    message = str(DecryptionError())
    for service in (gm, keys):
        for wrapped, blob, version in ((old_wrapped, new_blob, 2), (new_wrapped, old_blob, 1)):
            with pytest.raises(DecryptionError) as info:
                service.decrypt_bytes("gm-cross", "o", version, wrapped, blob)
            assert str(info.value) == message


def test_a_damaged_sm4_wrapped_key_is_refused(gm: KeyService) -> None:
    gm.create_tenant("gm-damage")
    wrapped, blob = gm.encrypt_bytes("gm-damage", "o", 1, b"rows")
    head, _, body = wrapped.rpartition(":")
    flipped = body[:10] + ("A" if body[10] != "A" else "B") + body[11:]
    for bad in (
        f"{head}:{flipped}",
        wrapped.replace("veil-sm4:v1:", "veil-sm4:v2:"),  # another KEK version claimed
        wrapped.replace("veil-sm4:v1:", "veil-sm4:v0:"),
        "veil-sm4:v1:" + "!" * 40,
        "veil-sm4:v1:AAAA",
    ):
        with pytest.raises(DecryptionError):
            gm.decrypt_bytes("gm-damage", "o", 1, bad, blob)


def test_the_wrapping_binds_the_tenant_and_the_kek_version() -> None:
    """Same KEK, another tenant (or version) in the associated data: refused."""
    kek, key = bytes(range(16)), bytes(16)
    wrapped = _kek.wrap(kek, 1, "acme", key)
    assert _kek.unwrap(kek, "acme", wrapped) == key
    with pytest.raises(DecryptionError):
        _kek.unwrap(kek, "globex", wrapped)
    with pytest.raises(DecryptionError):
        _kek.unwrap(kek, "acme", wrapped.replace("veil-sm4:v1:", "veil-sm4:v2:"))
    with pytest.raises(DecryptionError):
        _kek.unwrap(bytes(16), "acme", wrapped)


def test_tenants_are_isolated_and_the_platform_cannot_read_a_kek(gm: KeyService) -> None:
    gm.create_tenant("gm-iso-a")
    gm.create_tenant("gm-iso-b")
    wrapped, blob = gm.encrypt_bytes("gm-iso-a", "ds", 1, b"rows of a")
    with pytest.raises(DecryptionError):
        gm.decrypt_bytes("gm-iso-b", "ds", 1, wrapped, blob)
    a = gm._server.tenant("gm-iso-a")
    ns_b, path_b = _kek_path(gm, "gm-iso-b")
    ns_a, path_a = _kek_path(gm, "gm-iso-a")
    assert a.adapter.get(path_a)["data"]["data"]["key"]  # its own: yes
    a_in_b = hvac.Client(url=a.url, token=a.token, namespace=ns_b, timeout=5)
    with pytest.raises(hvac.exceptions.Forbidden):
        a_in_b.adapter.get(path_b)
    with pytest.raises(hvac.exceptions.Forbidden):  # nor may it write a version
        a.adapter.post(path_a, json={"data": {"key": "AAAAAAAAAAAAAAAAAAAAAA=="}})
    for ns, path in ((ns_a, path_a), (ns_b, path_b)):
        platform = gm._server.platform_in(ns)
        with pytest.raises(hvac.exceptions.Forbidden):
            platform.adapter.get(path)
        with pytest.raises(hvac.exceptions.Forbidden):
            platform.adapter.get(f"{path}?version=1")
        assert platform.adapter.get(path.replace("/data/", "/metadata/"))["data"]["versions"]


def test_crypto_shredding_under_gm(gm: KeyService) -> None:
    gm.create_tenant("gm-shred")
    wrapped, blob = gm.encrypt_bytes("gm-shred", "o", 1, b"gone for good")
    gm.destroy_tenant("gm-shred")
    assert not gm.tenant_exists("gm-shred")
    with pytest.raises(UnknownTenant):
        gm.decrypt_bytes("gm-shred", "o", 1, wrapped, blob)
    gm.create_tenant("gm-shred")  # a new tenant of the same name has a new KEK
    with pytest.raises(DecryptionError):
        gm.decrypt_bytes("gm-shred", "o", 1, wrapped, blob)


def test_rotation_rewrap_and_retirement_under_gm(gm: KeyService, keys: KeyService) -> None:
    keys.create_tenant("gm-rotor")
    std_wrapped, std_blob = keys.encrypt_bytes("gm-rotor", "a", 1, b"standard")
    wrapped, blob = gm.encrypt_bytes("gm-rotor", "b", 1, b"gm")
    assert wrapped_key_version(wrapped) == 1
    assert gm.rotate_tenant_key("gm-rotor") == 2  # the KEK's new version (transit: too)
    new_wrapped, new_blob = gm.encrypt_bytes("gm-rotor", "c", 1, b"after")
    assert wrapped_key_version(new_wrapped) == 2
    rewrapped_sm4, rewrapped_std = gm.rewrap_data_keys("gm-rotor", [wrapped, std_wrapped])
    assert rewrapped_sm4.startswith("veil-sm4:v2:") and rewrapped_std.startswith("vault:v2:")
    gm.retire_key_versions_below("gm-rotor", 2)  # destroys KEK version 1
    with pytest.raises(DecryptionError):
        gm.decrypt_bytes("gm-rotor", "b", 1, wrapped, blob)
    with pytest.raises(DecryptionError):
        gm.rewrap_data_keys("gm-rotor", [wrapped])
    assert gm.decrypt_bytes("gm-rotor", "b", 1, rewrapped_sm4, blob) == b"gm"
    assert keys.decrypt_bytes("gm-rotor", "a", 1, rewrapped_std, std_blob) == b"standard"
    assert gm.decrypt_bytes("gm-rotor", "c", 1, new_wrapped, new_blob) == b"after"
    with pytest.raises(ValueError, match="latest key version"):
        gm.retire_key_versions_below("gm-rotor", 3)
    # Under the standard profile a tenant that has a KEK gets a new KEK version too.
    assert keys.rotate_tenant_key("gm-rotor") == 3
    assert gm.rewrap_data_keys("gm-rotor", [rewrapped_sm4])[0].startswith("veil-sm4:v3:")


def test_a_tenant_made_before_the_gm_profile_gets_its_kek_on_first_need(
    gm: KeyService, keys: KeyService
) -> None:
    keys.create_tenant("gm-older")
    loc = keys.tenant_location("gm-older")
    admin = keys._server.platform_in(loc.namespace)
    m = loc.transit_mount
    old_policy = "".join(  # the tenant policy of releases before the GM profile
        f'path "{m}/{p}/{DATA_KEY}" {{ capabilities = ["update"] }}\n'
        for p in ("datakey/plaintext", "decrypt", "rewrap")
    )
    admin.adapter.put(f"/v1/sys/policies/acl/{loc.policy}", json={"policy": old_policy})
    assert keys.rotate_tenant_key("gm-older") == 2  # no KEK: only the transit key
    wrapped, blob = gm.encrypt_bytes("gm-older", "o", 1, b"first gm object")
    assert wrapped.startswith("veil-sm4:v1:")
    assert gm.decrypt_bytes("gm-older", "o", 1, wrapped, blob) == b"first gm object"
    policy = admin.adapter.get(f"/v1/sys/policies/acl/{loc.policy}")["data"]["policy"]
    assert f"{loc.kek_mount}/data/kek" in policy
    gm.ensure_tenant_kek("gm-older")  # idempotent: no second first version
    assert gm._keks.versions("gm-older") == (1, 1)


def test_gm_fails_closed_when_the_key_server_is_gone(own_key_server: LocalKeyServer) -> None:
    gm = KeyService.connect(own_key_server.config(), profile=GM)
    gm.create_tenant("acme")
    wrapped, blob = gm.encrypt_bytes("acme", "ds", 1, b"secret rows")
    assert gm.decrypt_bytes("acme", "ds", 1, wrapped, blob) == b"secret rows"
    own_key_server.stop()
    with pytest.raises(KeyServerUnavailable):  # the KEK is read per call, never cached
        gm.decrypt_bytes("acme", "ds", 1, wrapped, blob)
    with pytest.raises(KeyServerUnavailable):
        gm.encrypt_bytes("acme", "ds", 2, b"new rows")
    own_key_server.start()
    assert gm.decrypt_bytes("acme", "ds", 1, wrapped, blob) == b"secret rows"


def test_mount_tenancy_under_gm(dev_server: DevServer) -> None:
    config = KeyServerConfig(addr=dev_server.addr, token=dev_server.root_token)
    gm = KeyService.connect(
        KeyServerConfig(**{**config.__dict__, "tenancy": Tenancy.MOUNT}), profile=GM
    )
    gm.create_tenant("ma")
    gm.create_tenant("mb")
    assert gm.tenant_location("ma").kek_mount == "veil-tenants-gm/ma"
    wrapped, blob = gm.encrypt_bytes("ma", "o", 1, b"mount layout")
    assert wrapped.startswith("veil-sm4:v1:")
    assert gm.decrypt_bytes("ma", "o", 1, wrapped, blob) == b"mount layout"
    with pytest.raises(DecryptionError):
        gm.decrypt_bytes("mb", "o", 1, wrapped, blob)
    a = gm._server.tenant("ma")
    with pytest.raises(hvac.exceptions.Forbidden):  # a's token on b's KEK
        a.adapter.get("/v1/veil-tenants-gm/mb/data/kek")
    gm.destroy_tenant("ma")
    mounts = dev_server.root().sys.list_mounted_secrets_engines()["data"]
    assert "veil-tenants-gm/ma/" not in mounts and "veil-tenants-gm/mb/" in mounts
    with pytest.raises(UnknownTenant):
        gm.decrypt_bytes("ma", "o", 1, wrapped, blob)


@pytest.mark.parametrize(
    ("path", "how", "fields", "expected"),
    [
        ("veil-kek/data/kek", "read", frozenset(), "kek.read.wrap"),  # the newest: to wrap
        ("veil-kek/data/kek", "read", frozenset({"version"}), "kek.read.unwrap"),
        ("veil-kek/data/kek", "create", frozenset({"data", "options"}), "kek.write"),
        ("veil-kek/metadata/kek", "read", frozenset(), "kek.versions"),
        ("veil-kek/destroy/kek", "update", frozenset({"versions"}), "kek.destroy"),
        ("veil-kek/metadata/kek", "delete", frozenset(), "kek.delete"),
        ("veil-kek/data/other", "read", frozenset(), None),  # not Veil's
        ("veil-kek/config", "read", frozenset(), None),
    ],
)
def test_the_key_audit_names_each_kek_request(
    path: str, how: str, fields: frozenset[str], expected: str | None
) -> None:
    entry = AuditEntry(
        at=datetime.now(UTC), namespace="veil/acme", path=path, how=how, transit=False,
        ok=True, header="dataset:ds_1/1", request_id="r1", remote_address=None, actor=None,
        mount="veil-kek/", mount_type="kv", fields=fields,
    )  # fmt: skip
    assert operation_of(entry) == expected
    assert entry.data_key == (expected in ("kek.read.wrap", "kek.read.unwrap"))
