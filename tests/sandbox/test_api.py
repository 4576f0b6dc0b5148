"""The API answers health, and maps a lost key server to 503 with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keys import LocalKeyServer
from sandbox.config.settings import Settings
from sandbox.server.app import create_app

pytestmark = pytest.mark.integration


def test_health_then_503_when_the_key_server_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bao_binary: Path
) -> None:
    monkeypatch.delenv("VEIL_VAULT_ADDR", raising=False)
    settings = Settings(data_dir=tmp_path)
    with TestClient(create_app(settings)) as client:
        ok = client.get("/v1/health")
        assert ok.status_code == 200
        assert ok.json() == {"status": "ok", "key_server": "available", "tenancy": "namespace"}
        assert client.get("/openapi.json").json()["info"]["title"] == "Veil"
        LocalKeyServer(settings.keyserver_home).stop()
        down = client.get("/v1/health")
        assert down.status_code == 503
        assert "cannot reach the key server" in down.json()["detail"]
    assert not LocalKeyServer(settings.keyserver_home).is_running()
