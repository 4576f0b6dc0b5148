"""The ``veil`` command line: errors in plain words, no tracebacks."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from keys import LocalKeyServer, Tenancy, platform_policy
from keys.bao import free_port
from policies.audit import AuditEvent
from policies.principals import authenticate, authenticate_token
from sandbox.accounts.tenants import create_provider
from sandbox.config.settings import Settings
from sandbox.oversight.audit_log import public_keys_pem
from sandbox.service import open_veil


def veil(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # Without the caller's VEIL_TOKEN / VEIL_URL: these commands run on this machine.
    clean = {k: v for k, v in os.environ.items() if k not in ("VEIL_TOKEN", "VEIL_URL")}
    return subprocess.run(
        [sys.executable, "-m", "sandbox.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
    )


def test_policy_prints_what_an_external_server_must_grant() -> None:
    result = veil("keys", "policy", "--tenancy", "mount")
    assert result.returncode == 0
    assert result.stdout == platform_policy(Tenancy.MOUNT)


def test_unreachable_external_server_is_a_clear_error() -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    result = veil(
        "keys",
        "status",
        env={"VEIL_VAULT_ADDR": addr, "VEIL_VAULT_TOKEN": "t", "VEIL_VAULT_TIMEOUT_S": "2"},
    )
    assert result.returncode == 1
    assert f"cannot reach the key server at {addr}" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""  # once, in one line


@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
@pytest.mark.integration
def test_init_prints_a_token_once_and_audit_verify_catches_a_database_edit(tmp_path: Path) -> None:
    env = {"VEIL_DATA_DIR": str(tmp_path / "veil")}
    first = veil("init", env=env)
    assert first.returncode == 0, first.stderr
    token = first.stdout.strip().splitlines()[-1]
    assert token.startswith("veil_") and len(token) > 40
    second = veil("init", env=env)
    assert second.returncode == 0 and "operator exists already" in second.stdout
    assert token not in second.stdout

    settings = Settings(data_dir=tmp_path / "veil")
    key = tmp_path / "audit-key.pem"
    with open_veil(settings, worker=False) as core:
        with core.db.transaction() as session:
            operator = authenticate(session, token)
        create_provider(core, operator, "Predicta")
        create_provider(core, operator, "Other")
        assert core.checkpoint() is not None
        key.write_text(public_keys_pem(core))
    keyserver = LocalKeyServer(settings.keyserver_home)
    assert not keyserver.is_running()
    # The embedded key server is down, and verifying does not start it: say so, verify nothing.
    no_key = veil("audit", "verify", env=env)
    assert no_key.returncode == 2 and "not running" in no_key.stderr, no_key.stderr
    assert not keyserver.is_running()
    ok = veil("audit", "verify", "--public-key", str(key), env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "intact" in ok.stdout
    assert not keyserver.is_running()

    with sqlite3.connect(tmp_path / "veil" / "veil.db") as db:
        db.execute('UPDATE audit_events SET details = \'{"name": "Mallory"}\' WHERE seq = 3')
    broken = veil("audit", "verify", "--public-key", str(key), env=env)
    assert broken.returncode == 1
    assert "BROKEN" in broken.stdout and "event 3" in broken.stdout


@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
@pytest.mark.integration
def test_audit_verify_uses_a_running_key_server_and_init_recovers_an_operator_token(
    tmp_path: Path,
) -> None:
    env = {"VEIL_DATA_DIR": str(tmp_path / "veil")}
    first = veil("init", env=env).stdout.strip().splitlines()[-1]
    assert veil("keys", "start", env=env).returncode == 0
    try:
        ok = veil("audit", "verify", env=env)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "intact" in ok.stdout
        # Every operator token lost (here: revoked): a new one is issued on this machine.
        settings = Settings(data_dir=tmp_path / "veil")
        with open_veil(settings, worker=False) as core, core.db.transaction() as session:
            record, operator = authenticate_token(session, first)
            record.revoked_at = core.clock()
        again = veil("init", "--new-operator-token", env=env)
        assert again.returncode == 0, again.stderr
        token = again.stdout.strip().splitlines()[-1]
        assert token.startswith("veil_") and token != first
        with open_veil(settings, worker=False) as core, core.db.transaction() as session:
            assert authenticate(session, token).id == operator.id
            events = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "token.issued")
            ).all()
        assert [e.details.get("via") for e in events] == ["veil init"]
    finally:
        veil("keys", "stop", env=env)
