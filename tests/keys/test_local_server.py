"""The embedded key server is a real, persistent OpenBao that Veil uses with a non-root token."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import hvac
import pytest

from keys import KeyService, LocalKeyServer
from keys.vault import KeyServerClient

pytestmark = pytest.mark.integration


def test_is_a_real_persistent_server(key_server: LocalKeyServer) -> None:
    config_text = (key_server.home / "config.hcl").read_text()
    assert 'storage "pebbledb"' in config_text
    assert 'seal "static"' in config_text
    assert any((key_server.home / "storage").iterdir())
    cmdline = Path(f"/proc/{key_server.pid}/cmdline").read_bytes().split(b"\0")
    assert b"-dev" not in cmdline
    for secret_file in ("unseal.key", "credentials.json"):
        mode = stat.S_IMODE((key_server.home / secret_file).stat().st_mode)
        assert mode == 0o600, secret_file
    assert stat.S_IMODE(key_server.home.stat().st_mode) == 0o700


def test_audit_device_records_requests(key_server: LocalKeyServer, keys: KeyService) -> None:
    keys.create_tenant("audited")
    keys.encrypt_bytes("audited", "obj", 1, b"x")
    records = [json.loads(line) for line in key_server.audit_log.read_text().splitlines()]
    paths = {r.get("request", {}).get("path") for r in records}
    assert "transit/datakey/plaintext/dek" in paths
    # Secrets in the audit log are HMAC'd by OpenBao, never in clear.
    datakey = next(
        r
        for r in records
        if r.get("type") == "response" and r["request"]["path"] == "transit/datakey/plaintext/dek"
    )
    assert datakey["response"]["data"]["plaintext"].startswith("hmac-sha256:")


def test_veil_uses_a_least_privilege_token_not_root(key_server: LocalKeyServer) -> None:
    server = KeyServerClient(key_server.config())
    info = server.platform().auth.token.lookup_self()["data"]
    assert "root" not in info["policies"]
    assert sorted(info["policies"]) == ["default", "veil-platform"]
    # The platform token can manage tenants but cannot use a tenant's key on data.
    platform = server.platform_in("veil/least-priv")
    server.platform().sys.create_namespace("least-priv")
    with pytest.raises(hvac.exceptions.Forbidden):
        platform.secrets.transit.generate_data_key("dek", key_type="plaintext")
    with pytest.raises(hvac.exceptions.Forbidden):
        server.platform().sys.list_auth_methods()  # nothing outside its policy, e.g. sys/auth


def test_second_start_reuses_the_running_server(key_server: LocalKeyServer) -> None:
    again = LocalKeyServer(key_server.home)
    assert again.is_running()
    assert again.start().addr == key_server.addr


def test_data_encrypted_before_a_restart_decrypts_after_it(own_key_server: LocalKeyServer) -> None:
    keys = KeyService.connect(own_key_server.config())
    keys.create_tenant("acme")
    wrapped, blob = keys.encrypt_bytes("acme", "ds", 1, b"production rows")
    old_addr = own_key_server.addr
    own_key_server.stop()
    assert not own_key_server.is_running()
    config = own_key_server.start()  # auto-unsealed from the static seal: no person needed
    assert config.addr == old_addr  # same port again, so clients keep working
    restarted = KeyService.connect(config)
    assert restarted.decrypt_bytes("acme", "ds", 1, wrapped, blob) == b"production rows"
    # The KeyService made before the restart resumes too.
    assert keys.decrypt_bytes("acme", "ds", 1, wrapped, blob) == b"production rows"


def test_streaming_a_larger_object_through_the_server(keys: KeyService) -> None:
    keys.create_tenant("streamer")
    data = bytes(range(256)) * 40_000  # ~10 MiB, ten 1 MiB chunks
    out = io.BytesIO()
    wrapped = keys.encrypt_stream("streamer", "big", 1, io.BytesIO(data), out)
    back = io.BytesIO()
    n = keys.decrypt_stream("streamer", "big", 1, wrapped, io.BytesIO(out.getvalue()), back)
    assert n == len(data) and back.getvalue() == data
