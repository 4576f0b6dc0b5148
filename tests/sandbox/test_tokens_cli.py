"""``veil tokens issue|list|revoke|rotate``: each in its own process against a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sandbox.client import ApiError, VeilClient
from tests.console.conftest import token_of
from tests.sandbox.conftest import World

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def veil(world: World, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VEIL_", "VAULT_"))}
    return subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "tokens", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env=clean | {"PYTHONPATH": str(ROOT), "VEIL_URL": world.url, "VEIL_TOKEN": token,
                     "COLUMNS": "250"},
    )  # fmt: skip


def works(world: World, token: str) -> bool:
    with VeilClient(world.url, token) as client:
        try:
            client.me()
        except ApiError as exc:
            assert exc.status == 401
            return False
    return True


@pytest.mark.slow  # CLI processes, ~9 s (make test-slow)
def test_list_shows_ones_own_tokens_and_the_operator_everyones(world: World) -> None:
    provider, operator = token_of(world.provider), token_of(world.operator)
    provider_id = world.provider.me()["id"]
    mine = veil(world, provider, "list", "--json")
    assert mine.returncode == 0, mine.stderr
    rows = json.loads(mine.stdout)
    assert [r["principal_id"] for r in rows] == [provider_id] and rows[0]["current"] is True
    assert provider not in mine.stdout

    everyone = veil(world, operator, "list")
    assert everyone.returncode == 0, everyone.stderr
    assert "Predicta" in everyone.stdout and "Acme Metal" in everyone.stdout
    assert "active (this one)" in everyone.stdout  # the operator's own token is marked
    only = json.loads(veil(world, operator, "list", "--principal", provider_id, "--json").stdout)
    assert {r["principal_id"] for r in only} == {provider_id}


@pytest.mark.slow  # CLI processes, ~9 s (make test-slow); the API's token tests are in make test
def test_issue_rotate_and_revoke(world: World) -> None:
    operator, provider = token_of(world.operator), token_of(world.provider)
    provider_id = world.provider.me()["id"]
    issued = veil(world, operator, "issue", provider_id, "--ttl-days", "7", "--json")
    assert issued.returncode == 0, issued.stderr
    spare = json.loads(issued.stdout)
    expires = datetime.fromisoformat(spare["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=7))) < timedelta(minutes=5)

    rotated = veil(world, provider, "rotate", spare["id"])
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()  # the new token alone on standard output, for scripts
    assert new.startswith("veil_") and "\n" not in new
    assert f"token {spare['id']} is revoked" in " ".join(rotated.stderr.split())
    assert not works(world, spare["token"]) and works(world, new)

    (current,) = [t for t in world.provider.list_tokens() if t["current"]]
    revoked = veil(world, operator, "revoke", current["id"], "--reason", "left", "--json")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout)["state"] == "revoked"
    assert not works(world, provider)
    again = veil(world, operator, "revoke", current["id"])
    assert again.returncode == 1 and "error (409)" in again.stderr


def test_another_principals_token_is_not_found(world: World) -> None:
    (theirs,) = world.operator.list_tokens(world.acme.me()["id"])
    for action in ("revoke", "rotate"):
        answer = veil(world, token_of(world.provider), action, theirs["id"])
        assert answer.returncode == 1, answer.stdout
        assert "error (404)" in answer.stderr and "Traceback" not in answer.stderr
    assert works(world, token_of(world.acme))
