"""Security officers' audit tools through the API and the CLI: search, export, offline
verification, the public key, and checkpoints signed on a schedule."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keys import CryptoProfile, LocalKeyServer
from keys.signing import public_keys_from_pem
from policies import audit
from policies.audit_export import verify_export
from sandbox.client import ApiError, VeilClient
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from tests.policies.chains import CHAIN_HASHES
from tests.sandbox.conftest import PURPOSE, World, make_world, settings_for

pytestmark = pytest.mark.integration


@pytest.fixture
def chain_hash() -> str | None:
    """The chain's hash, where a test asks for one (the tamper tests run under each:
    tests/policies/chains.py); None: the crypto profile's."""
    return None


@pytest.fixture
def veil(veil: Veil, chain_hash: str | None) -> Veil:
    """The conftest's Veil, its audit chain switched to ``chain_hash`` early."""
    if chain_hash is not None:
        with veil.db.transaction() as session:
            audit.switch_chain_hash(session, chain_hash)
    return veil


def veil_cli(*args: str, url: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandbox.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "VEIL_URL": url, "VEIL_TOKEN": token},
    )


def officer(world: World, scope: list[str] | None = None) -> VeilClient:
    created = world.operator.create_security_officer("Officer", scope)
    return world.client(world.operator.issue_token(created["id"]))


def test_search_filters_and_pages_newest_first(world: World) -> None:
    so = officer(world)
    acme_id = world.acme.me()["id"]
    job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.1, [{"kind": "count"}])
    world.provider.wait_for_job(job["id"], timeout=60)
    with pytest.raises(ApiError):  # denied: purpose not granted
        world.provider.submit_job(world.dataset_id, "marketing", 0.1, [{"kind": "count"}])

    jobs = so.audit_events(action="job.*", tenant_id=acme_id)
    assert jobs and all(e["action"].startswith("job.") for e in jobs)
    assert all(e["tenant_id"] == acme_id for e in jobs)
    assert [e["seq"] for e in jobs] == sorted((e["seq"] for e in jobs), reverse=True)
    # Case-sensitive, as on PostgreSQL (tests/postgres/test_inputs.py; SQLite's LIKE is not).
    assert so.audit_events(action="JOB.*", tenant_id=acme_id) == []
    assert so.audit_events(resource=f"JOB:{job['id']}*") == []

    denied = so.audit_events(outcome="denied", role="provider")
    assert denied and all(e["outcome"] == "denied" for e in denied)
    assert all(e["actor_role"] == "provider" for e in denied)
    assert so.audit_events(actor_id=world.provider_id, resource=f"job:{job['id']}")

    everything = so.audit_events(limit=1000)
    pages, before = [], None
    while True:
        page = so.audit_events(before, 7)
        pages += page
        if len(page) < 7:
            break
        before = page[-1]["seq"]
    assert [e["seq"] for e in pages] == [e["seq"] for e in everything]

    now = datetime.now(UTC)
    assert so.audit_events(since=now + timedelta(minutes=5)) == []
    assert len(so.audit_events(until=now + timedelta(minutes=5), limit=1000)) == len(everything)
    with pytest.raises(ApiError) as bad:
        so.audit_events(role="admin")
    assert bad.value.status == 422 and "role must be one of" in bad.value.detail
    with pytest.raises(ApiError) as denied_to_provider:
        world.provider.audit_events()
    assert denied_to_provider.value.status == 403


def test_scoped_officer_searches_only_its_enterprises(world: World) -> None:
    acme_id = world.acme.me()["id"]
    scoped = officer(world, [acme_id])
    events = scoped.audit_events(limit=1000)
    assert events and {e["tenant_id"] for e in events} == {acme_id}
    globex_id = world.globex.me()["id"]
    assert scoped.audit_events(tenant_id=globex_id) == []


@pytest.mark.parametrize("crypto_profile", list(CryptoProfile))  # gm: an SM3 chain, SM2
def test_export_verifies_offline_and_tampering_fails(world: World, tmp_path: Path) -> None:
    so = officer(world)
    so_token = so._http.headers["Authorization"].removeprefix("Bearer ")
    world.operator.checkpoint()
    export, key = tmp_path / "audit.jsonl", tmp_path / "audit-key.pem"

    made = veil_cli("audit", "export", "--output", str(export), url=world.url, token=so_token)
    assert made.returncode == 0, made.stderr
    assert "exported events 1-" in made.stdout
    got_key = veil_cli("audit", "public-key", "--output", str(key), url=world.url, token=so_token)
    assert got_key.returncode == 0, got_key.stderr

    ok = veil_cli(
        "audit",
        "verify",
        "--offline",
        str(export),
        "--public-key",
        str(key),
        url="http://127.0.0.1:9",
        token="none",
    )  # no server is needed
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "intact" in ok.stdout

    lines = export.read_text().splitlines()
    event = json.loads(lines[5])
    event["details"]["injected"] = True
    lines[5] = json.dumps(event)
    export.write_text("\n".join(lines) + "\n")
    broken = veil_cli(
        "audit",
        "verify",
        "--offline",
        str(export),
        "--public-key",
        str(key),
        url="http://127.0.0.1:9",
        token="none",
    )
    assert broken.returncode == 1
    assert f"event {event['seq']}" in broken.stdout and "altered" in broken.stdout

    # The export itself is audited.
    assert so.audit_events(action="audit.exported")


def test_export_by_range_and_by_time(world: World) -> None:
    so = officer(world)
    world.operator.checkpoint()
    newest = so.audit_events(limit=1)[0]["seq"]
    keys = public_keys_from_pem(so.audit_public_key())

    part = _export(so, from_seq=3, to_seq=newest - 1)
    report = verify_export(part.splitlines(), keys)
    assert report.ok, report.problem
    assert (report.from_seq, report.to_seq, report.events) == (3, newest - 1, newest - 3)

    recent = _export(so, since=datetime.now(UTC) - timedelta(hours=1))
    assert verify_export(recent.splitlines(), keys).ok

    for bad in ({"from_seq": 5, "to_seq": 2}, {"to_seq": newest + 1000}):
        with pytest.raises(ApiError) as refused:
            _export(so, **bad)
        assert refused.value.status == 422
    with pytest.raises(ApiError) as empty:
        _export(so, since=datetime.now(UTC) + timedelta(days=1))
    assert empty.value.status == 422 and "no audit events" in empty.value.detail


def _export(client: VeilClient, **kwargs: object) -> bytes:
    import io

    out = io.BytesIO()
    client.audit_export(out, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


def test_scoped_export_elides_other_tenants(world: World) -> None:
    acme_id = world.acme.me()["id"]
    scoped = officer(world, [acme_id])
    entries = [json.loads(line) for line in _export(scoped).splitlines()]
    shown = [e for e in entries if e["type"] == "event"]
    assert shown and {e["tenant_id"] for e in shown} == {acme_id}
    assert any(e["type"] == "elided" for e in entries)
    report = verify_export(
        [json.dumps(e) for e in entries], public_keys_from_pem(scoped.audit_public_key())
    )
    assert report.ok and report.scope == [acme_id]


@pytest.mark.parametrize("chain_hash", CHAIN_HASHES)
def test_no_export_is_signed_over_a_broken_chain(world: World, veil: Veil) -> None:
    so = officer(world)
    world.operator.checkpoint()
    with sqlite3.connect(veil.settings.data_dir / "veil.db") as db:
        db.execute("UPDATE audit_events SET outcome = 'denied' WHERE seq = 2")
    with pytest.raises(ApiError) as refused:
        _export(so)
    assert refused.value.status == 409 and "broken at event 2" in refused.value.detail


@pytest.fixture
def scheduled(tmp_path: Path, key_server: LocalKeyServer) -> Iterator[tuple[Veil, str]]:
    settings = settings_for(
        tmp_path, key_server, audit_checkpoint_every=10, audit_checkpoint_interval_s=1.0
    )
    with open_veil(settings) as running, ApiThread(running.settings, running) as url:
        yield running, url


def test_checkpoints_are_signed_on_a_schedule(scheduled: tuple[Veil, str]) -> None:
    veil, url = scheduled
    world = make_world(veil, url)  # dozens of events: checkpoints every 10
    so = officer(world)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # and the rest within the interval
        report = so.verify_audit()
        newest = so.audit_events(limit=1)[0]["seq"]
        if report["checkpoints"] >= newest // 10 and _checkpointed_head(veil) == newest:
            break
        time.sleep(0.2)
    assert report["ok"] and report["checkpoints"] >= newest // 10
    assert _checkpointed_head(veil) == newest


def _checkpointed_head(veil: Veil) -> int:
    from sqlalchemy import func, select

    from policies.audit import AuditCheckpoint

    with veil.db.transaction() as session:
        return int(session.scalar(select(func.max(AuditCheckpoint.seq))) or 0)
