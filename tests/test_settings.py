from __future__ import annotations

from pathlib import Path

import pytest

from keys import Tenancy
from sandbox.config.settings import Settings


def test_data_dir_comes_from_veil_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VEIL_DATA_DIR", str(tmp_path / "d"))
    settings = Settings()
    assert settings.data_dir == tmp_path / "d"
    assert settings.keyserver_home == tmp_path / "d" / "keyserver"


def test_default_data_dir_is_under_the_user_data_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("VEIL_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert Settings().data_dir == tmp_path / "veil"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert Settings().data_dir == tmp_path / "home" / ".local" / "share" / "veil"


def test_external_key_server_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_VAULT_ADDR", "http://127.0.0.1:8200/")
    monkeypatch.setenv("VEIL_VAULT_TOKEN", "s.very-secret")
    monkeypatch.setenv("VEIL_VAULT_TENANCY", "mount")
    settings = Settings()
    assert not settings.embedded_key_server
    assert "very-secret" not in repr(settings)
    config = settings.external_key_server()
    assert config.addr == "http://127.0.0.1:8200"
    assert config.token == "s.very-secret"
    assert config.tenancy is Tenancy.MOUNT
    assert "very-secret" not in repr(config)


def test_embedded_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VEIL_VAULT_ADDR", raising=False)
    settings = Settings()
    assert settings.embedded_key_server
    with pytest.raises(ValueError, match="VEIL_VAULT_ADDR"):
        settings.external_key_server()


def test_limits_and_tls_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VEIL_MAX_REQUEST_BYTES", "4096")
    monkeypatch.setenv("VEIL_RATE_LIMIT_PER_S", "0")
    monkeypatch.setenv("VEIL_RATE_LIMIT_BURST", "10")
    monkeypatch.setenv("VEIL_AUTH_FAILURES_PER_MIN", "6")
    monkeypatch.setenv("VEIL_AUTH_FAILURE_BURST", "2")
    monkeypatch.setenv("VEIL_TLS_CERT_FILE", str(tmp_path / "cert.pem"))
    monkeypatch.setenv("VEIL_TLS_KEY_FILE", str(tmp_path / "key.pem"))
    monkeypatch.setenv("VEIL_TLS_KEY_PASSWORD", "hunter2-secret")
    settings = Settings()
    assert settings.max_request_bytes == 4096
    assert settings.rate_limit_per_s == 0  # off
    assert (settings.rate_limit_burst, settings.auth_failure_burst) == (10, 2)
    assert settings.auth_failures_per_min == 6
    assert settings.tls_cert_file == tmp_path / "cert.pem"
    assert settings.tls_key_file == tmp_path / "key.pem"
    assert "hunter2-secret" not in repr(settings)


def test_limits_are_on_and_tls_off_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RATE_LIMIT_PER_S", "MAX_REQUEST_BYTES", "TLS_CERT_FILE", "TLS_KEY_FILE"):
        monkeypatch.delenv(f"VEIL_{name}", raising=False)
    settings = Settings()
    assert settings.max_request_bytes == 2**20
    assert settings.rate_limit_per_s > 0 and settings.auth_failures_per_min > 0
    assert settings.tls_cert_file is None and settings.tls_key_file is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VEIL_MAX_REQUEST_BYTES", "0"),
        ("VEIL_RATE_LIMIT_PER_S", "-1"),
        ("VEIL_RATE_LIMIT_BURST", "0"),
        ("VEIL_AUTH_FAILURE_BURST", "0"),
    ],
)
def test_limits_must_make_sense(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name.removeprefix("VEIL_").lower()):
        Settings()


def test_database_pool_size_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VEIL_DATABASE_POOL_SIZE", raising=False)
    assert Settings().database_pool_size == 10
    monkeypatch.setenv("VEIL_DATABASE_POOL_SIZE", "12")
    assert Settings().database_pool_size == 12
    monkeypatch.setenv("VEIL_DATABASE_POOL_SIZE", "0")
    with pytest.raises(ValueError, match="database_pool_size"):
        Settings()


def test_a_worker_lease_outlasts_several_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lease shorter than three heartbeats would take a live, merely late worker for dead."""
    monkeypatch.setenv("VEIL_WORKER_HEARTBEAT_S", "5")
    monkeypatch.setenv("VEIL_WORKER_LEASE_S", "14")
    with pytest.raises(ValueError, match="VEIL_WORKER_LEASE_S"):
        Settings()
    monkeypatch.setenv("VEIL_WORKER_LEASE_S", "15")
    assert Settings().worker_lease_s == 15
