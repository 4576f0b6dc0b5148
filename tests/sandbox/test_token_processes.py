"""Two ``veil serve`` processes on one data directory, each on its own port: a token revoked
or rotated through one is refused by the other from its very next request.  Each process
has served the token before, so a process that kept tokens in memory would still take it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from cluster.local import stop_processes
from keys.bao import free_port
from sandbox.client import ApiError, VeilClient
from tests.sandbox.test_serve_processes import ROOT, Served

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # make test-slow: ~10 s or more


def _start(served: Served, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """One ``veil serve`` process, answering /v1/health before this returns."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.cli", "serve"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{env['VEIL_API_PORT']}"
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                return process
        time.sleep(0.2)


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(url of process A, url of process B, operator token); the embedded key server is
    started by A and reused by B, which is why they start one after the other."""
    served = Served(tmp_path / "veil")
    operator = served.cli("init").strip().splitlines()[-1]
    other = served.env | {"VEIL_API_PORT": str(free_port())}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(_start(served, served.env, tmp_path / "serve-a.log"))
        processes.append(_start(served, other, tmp_path / "serve-b.log"))
        yield served.url, f"http://127.0.0.1:{other['VEIL_API_PORT']}", operator
    finally:
        stop_processes(processes[::-1])
        with contextlib.suppress(subprocess.SubprocessError):
            served.cli("keys", "stop", timeout=60)


def _refused(client: VeilClient) -> str:
    with pytest.raises(ApiError) as answer:
        client.me()
    assert answer.value.status == 401
    return answer.value.detail


def test_a_token_revoked_through_one_process_is_refused_by_the_other_at_once(
    two_servers: tuple[str, str, str],
) -> None:
    url_a, url_b, operator_token = two_servers
    with VeilClient(url_a, operator_token) as operator:
        provider = operator.create_provider("Two Process Analytics")["id"]
        revoked, rotated = operator.new_token(provider), operator.new_token(provider)

    # Revoked through A while B holds a connection on which it has just accepted the token.
    with VeilClient(url_b, revoked["token"]) as on_b:
        assert on_b.me()["id"] == provider
        with VeilClient(url_a, operator_token) as operator:
            operator.revoke_token(revoked["id"], "revoked through process A")
        assert "revoked" in _refused(on_b)

    # Rotated through B: A refuses the old token at once, and takes the new one.
    with VeilClient(url_a, rotated["token"]) as on_a:
        assert on_a.me()["id"] == provider
        with VeilClient(url_b, rotated["token"]) as on_b:
            new = on_b.rotate_token(rotated["id"])
        assert "revoked" in _refused(on_a)
    with VeilClient(url_a, new["token"]) as on_a:
        assert on_a.me()["id"] == provider
        states = {t["id"]: t["state"] for t in on_a.list_tokens()}
    assert states == {revoked["id"]: "revoked", rotated["id"]: "revoked", new["id"]: "active"}


def _refused_read(client: VeilClient, grant_id: str) -> str:
    with pytest.raises(ApiError) as answer:
        client.get_grant(grant_id)
    assert answer.value.status == 401
    return answer.value.detail


def test_the_hot_grant_read_in_one_process_sees_every_change_made_through_the_other(
    two_servers: tuple[str, str, str],
) -> None:
    """``GET /v1/grants/{id}`` authenticates and reads without a session, inline on the
    event loop (``Database.read_row``): process B, which has just answered it, must see a
    grant revoked, a provider suspended and a token revoked through process A on its very
    next read."""
    url_a, url_b, operator_token = two_servers
    with VeilClient(url_a, operator_token) as operator:
        enterprise = operator.create_enterprise("Two Process Works", "two-process-works")["id"]
        provider = operator.create_provider("Two Process Readers")["id"]
        owner_token = operator.issue_token(enterprise)
        reader, spare = operator.new_token(provider), operator.new_token(provider)
    columns = [{"name": "line", "type": "string", "class": "public", "categories": ["a", "b"]}]
    with VeilClient(url_a, owner_token) as owner:
        dataset = owner.create_dataset("two-process", columns, epsilon_cap=10.0)["id"]
        owner.upload(dataset, b"line\na\nb\na\n")
        grant = owner.create_grant(
            provider, [dataset], ["line"], [0, 3], ["process-optimization"],
            datetime.now(UTC) + timedelta(days=1), epsilon=1.0,
        )["id"]  # fmt: skip

    with VeilClient(url_b, reader["token"]) as on_b:
        assert on_b.get_grant(grant)["revoked_at"] is None
        with VeilClient(url_a, owner_token) as owner:
            owner.revoke_grant(grant, "revoked through process A")
        assert on_b.get_grant(grant)["revoked_at"] is not None

        with VeilClient(url_a, operator_token) as operator:
            operator.suspend_provider(provider, "suspended through process A")
        assert "suspended" in _refused_read(on_b, grant)
        with VeilClient(url_a, operator_token) as operator:
            operator.reinstate_provider(provider, "reinstated through process A")
        assert on_b.get_grant(grant)["id"] == grant

        with VeilClient(url_a, operator_token) as operator:
            operator.revoke_token(reader["id"], "revoked through process A")
        assert "revoked" in _refused_read(on_b, grant)
    with VeilClient(url_b, spare["token"]) as on_b:
        assert on_b.get_grant(grant)["id"] == grant
