"""``veil audit verify`` never gives a false all-clear: with no log it creates nothing and
fails saying where it looked; with a token it verifies the server's export offline, and
catches an export changed on its way (a tampering proxy) or a chain the server refuses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keys.bao import free_port
from policies import audit
from sandbox.runtime.veil import Veil
from tests.console.conftest import token_of
from tests.policies.chains import CHAIN_HASHES
from tests.sandbox.conftest import World

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def chain_hash() -> str:
    """The chain's hash (the tamper tests run under each: tests/policies/chains.py)."""
    return audit.SHA256


@pytest.fixture
def veil(veil: Veil, chain_hash: str) -> Veil:
    """The conftest's Veil, its audit chain switched to ``chain_hash`` early."""
    with veil.db.transaction() as session:
        assert audit.switch_chain_hash(session, chain_hash) == (chain_hash != audit.SHA256)
    return veil


def verify(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``veil audit verify`` in its own process, with only the ``VEIL_*`` settings given."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VEIL_", "VAULT_"))}
    return subprocess.run(
        [sys.executable, "-m", "sandbox.cli", "audit", "verify", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env=clean | {"PYTHONPATH": str(ROOT)} | env,
    )  # fmt: skip


def tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("exists", [False, True], ids=["missing", "empty"])
def test_no_local_log_creates_nothing_and_says_where_it_looked(
    tmp_path: Path, exists: bool
) -> None:
    data_dir = tmp_path / "veil"
    if exists:
        data_dir.mkdir()
    before = tree(tmp_path)
    for extra in ((), ("--json",)):
        answer = verify(*extra, VEIL_DATA_DIR=str(data_dir))
        assert tree(tmp_path) == before  # no database, no directory, no key server's files
        assert answer.returncode == 2, answer.stdout + answer.stderr
        said = " ".join(answer.stderr.split())
        assert "nothing verified" in said and str(data_dir / "veil.db") in said
        assert "--token" in said  # what to do instead
        assert "intact" not in answer.stdout and "Traceback" not in answer.stderr
        if extra:  # --json: a document saying so, for scripts
            verdict = json.loads(answer.stdout)
            assert verdict["ok"] is False and verdict["verified"] is False
            assert str(data_dir / "veil.db") in verdict["problem"]


# -- through the API -----------------------------------------------------------------------------


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """Serve ``app`` on a free loopback port from a thread."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the proxy did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def tampering_proxy(upstream: str, edit: Callable[[list[str]], list[str]]) -> Starlette:
    """Passes every request to ``upstream``, and changes the audit export on its way back:
    what a man in the middle, or a server lying about its log, would send."""

    async def forward(request: Request) -> Response:
        async with httpx.AsyncClient(base_url=upstream, timeout=60) as client:
            answer = await client.request(
                request.method,
                request.url.path,
                params=request.query_params,
                headers={"authorization": request.headers.get("authorization", "")},
                content=await request.body(),
            )
        body = answer.content
        if request.url.path == "/v1/audit/export" and answer.status_code == 200:
            body = ("\n".join(edit(body.decode().splitlines())) + "\n").encode()
        return Response(body, answer.status_code, media_type=answer.headers.get("content-type"))

    return Starlette(routes=[Route("/{path:path}", forward, methods=["GET", "POST"])])


def alter_an_event(lines: list[str]) -> list[str]:
    index = next(i for i, line in enumerate(lines) if json.loads(line)["type"] == "event")
    event = json.loads(lines[index + 2])
    event["details"] = {**event["details"], "injected": True}
    return [*lines[: index + 2], json.dumps(event), *lines[index + 3 :]]


def drop_an_event(lines: list[str]) -> list[str]:
    index = next(i for i, line in enumerate(lines) if json.loads(line)["type"] == "event")
    return lines[: index + 1] + lines[index + 2 :]


@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
@pytest.mark.integration
def test_with_a_token_it_verifies_the_servers_chain_and_reads_nothing_here(
    world: World, tmp_path: Path
) -> None:
    world.operator.checkpoint()
    nowhere = tmp_path / "no-veil-here"
    operator = token_of(world.operator)
    answer = verify("--json", VEIL_URL=world.url, VEIL_TOKEN=operator, VEIL_DATA_DIR=str(nowhere))
    assert answer.returncode == 0, answer.stdout + answer.stderr
    verdict = json.loads(answer.stdout)
    assert verdict["ok"] is True and verdict["verified"] is True
    assert verdict["source"] == world.url
    assert verdict["events"] > 10 and verdict["checkpoints"] >= 1
    assert verdict["public_key"] == "server"
    assert not nowhere.exists()

    key = tmp_path / "audit-key.pem"
    key.write_text(world.operator.audit_public_key())
    pinned = verify("--public-key", str(key), VEIL_URL=world.url, VEIL_TOKEN=operator)
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert "audit chain intact" in pinned.stdout and world.url in pinned.stdout


@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
@pytest.mark.integration
@pytest.mark.parametrize(
    ("edit", "said"), [(alter_an_event, "altered"), (drop_an_event, "missing")],
    ids=["altered", "dropped"],
)  # fmt: skip
def test_with_a_token_it_catches_an_export_changed_on_its_way(
    world: World, edit: Callable[[list[str]], list[str]], said: str
) -> None:
    world.operator.checkpoint()
    with serving(tampering_proxy(world.url, edit)) as proxy:
        answer = verify(VEIL_URL=proxy, VEIL_TOKEN=token_of(world.operator))
    assert answer.returncode == 1, answer.stdout + answer.stderr
    assert "BROKEN" in answer.stdout and said in answer.stdout


@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
@pytest.mark.integration
def test_with_a_token_a_chain_the_server_refuses_to_export_is_broken(
    veil: Veil, world: World
) -> None:
    with veil.db.transaction() as session:
        session.execute(text('UPDATE audit_events SET details = \'{"name": "M"}\' WHERE seq = 2'))
    answer = verify(VEIL_URL=world.url, VEIL_TOKEN=token_of(world.operator))
    assert answer.returncode == 1, answer.stdout + answer.stderr
    assert "BROKEN" in answer.stdout and "refused to export" in answer.stdout


@pytest.mark.integration
def test_with_a_token_that_may_not_export_nothing_is_verified(world: World) -> None:
    answer = verify(VEIL_URL=world.url, VEIL_TOKEN=token_of(world.provider))
    assert answer.returncode == 2, answer.stdout + answer.stderr
    assert "403" in answer.stderr and "intact" not in answer.stdout
    unreachable = verify(VEIL_URL=f"http://127.0.0.1:{free_port()}", VEIL_TOKEN="veil_x")
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr
