from __future__ import annotations

from pathlib import Path

import pytest

from keys import Tenancy
from sandbox.settings import Settings


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
