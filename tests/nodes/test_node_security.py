"""Issue 20's properties 1-4 with a node: the control plane holds no data byte and no way to
decrypt one; the node enforces what the enterprise granted whatever the control plane says;
releases are signed by the node; no control-plane credential reaches a tenant key.

"A compromised control plane" is played by writing its database directly (forged grants,
jobs and budgets) and by sending the node's endpoints what an attacker could."""

from __future__ import annotations

import csv
import io
import random
import re
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest
from sqlalchemy import select

from keys import KeyService, LocalKeyServer
from keys.errors import KeysError
from keys.node_auth import NodeIdentity, canonical_json
from keys.signing import public_keys_from_pem, verify_signature
from node.protocol.client import ControlPlane, ControlPlaneRefused
from node.work.jobs import take
from node.work.models import NodeJob
from policies.audit import AuditEvent
from policies.grants import EPSILON_UNIT, Grant
from sandbox.jobs.leases import HANDOVER_S, requeue_unacknowledged
from sandbox.nodes.feed import job_document
from sandbox.oversight.keyaudit import key_audit
from sandbox.store.models import DatasetVersion, Job, JobStatus
from tests.nodes.conftest import PURPOSE, NodeWorld

pytestmark = pytest.mark.integration

MEAN = [{"kind": "mean", "column": "temperature_c"}]


class Recording(ControlPlane):
    """The node's client, keeping every body it sent (what the control plane received)."""

    def __init__(self, base: ControlPlane, url: str) -> None:
        super().__init__(url, base.identity)
        self.sent: list[bytes] = []

    def call(self, method: str, path: str, body: Any = None) -> Any:
        self.sent.append(b"" if body is None else canonical_json(body))
        return super().call(method, path, body)


def with_canaries(data: bytes, rows: int = 60) -> tuple[bytes, list[str]]:
    """The CSV with unique values no one could guess in a granted and a secret column."""
    rng = random.Random(uuid.uuid4().int)  # noqa: S311 - canaries, not secrets
    records = list(csv.DictReader(io.StringIO(data.decode())))
    canaries: list[str] = []
    for record in records[:rows]:
        record["temperature_c"] = f"{float(record['temperature_c']):.2f}{rng.randrange(10**7):07d}"
        record["recipe_p1"] = f"0.{rng.randrange(10**10):010d}"
        canaries += [record["temperature_c"], record["recipe_p1"]]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue().encode(), canaries


def files_holding(root: Path, canaries: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            blob = path.read_bytes()
            found += [f"{path}: {c}" for c in canaries if c.encode() in blob]
    return found


def test_control_plane_never_holds_a_data_byte(
    node_world: NodeWorld, key_server: LocalKeyServer, tmp_path: Path
) -> None:
    data, canaries = with_canaries(node_world.csv)
    recording = Recording(node_world.link.control, node_world.cp_url)
    node_world.link.control = node_world.link.publisher.control = recording
    node_world.enterprise.upload(node_world.dataset_id, data)
    node_world.sync()
    job = node_world.submit(MEAN, epsilon=0.25)
    assert job["status"] == "released" and job["dataset_version"] == 2
    table = node_world.provider.submit_query(
        node_world.dataset_id, PURPOSE, {"group_by": ["machine"], "aggregates": MEAN[:0] or
                                         [{"kind": "count"}]}, tier=2)  # fmt: skip
    node_world.run_jobs()
    assert node_world.provider.get_job(table["id"])["status"] == "released"
    node_world.cp.checkpoint()

    # The scanner finds a canary where there is one (it can fail) ...
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / "x.bin").write_bytes(b"\x00" + canaries[0].encode() + b"\xff")
    assert files_holding(planted, canaries) and canaries[0].encode() in data
    # ... and finds none in the control plane's storage, database, logs and key server,
    assert files_holding(node_world.cp.settings.data_dir, canaries) == []
    assert files_holding(key_server.home, canaries) == []
    # nor in anything the node sent it,
    assert recording.sent and not [c for c in canaries for body in recording.sent
                                   if c.encode() in body]  # fmt: skip
    # and the control plane stores no object for the node's dataset, only public counts.
    with node_world.cp.db.read() as session:
        versions = list(session.scalars(select(DatasetVersion).where(
            DatasetVersion.dataset_id == node_world.dataset_id)))  # fmt: skip
    assert [(v.object_path, v.wrapped_key, v.size_bytes) for v in versions] == [("", "", 0)] * 2
    assert {v.row_count for v in versions} == {2000}  # rounded: never the exact 2,037
    # The node keeps its data encrypted at rest too.
    assert files_holding(node_world.node.settings.objects_dir, canaries) == []


def test_control_plane_credentials_cannot_decrypt_the_nodes_objects(
    node_world: NodeWorld, key_server: LocalKeyServer
) -> None:
    with node_world.node.db.read() as session:
        version = session.scalars(select(DatasetVersion)).one()
    ciphertext = (node_world.node.settings.objects_dir / version.object_path).read_bytes()
    slug, object_id = node_world.config.enterprise_slug, f"dataset:{version.dataset_id}"
    # The node's own key server opens it (so the attempt below could succeed if keys leaked).
    plain = node_world.node.keys.decrypt_bytes(
        slug, object_id, version.version, version.wrapped_key, ciphertext
    )
    assert plain.startswith(b"PAR1")  # the node stores Parquet
    # A process with every credential the control plane has: its key-server AppRole ...
    attacker = KeyService.connect(node_world.cp.settings.external_key_server())
    assert not attacker.tenant_exists(slug)  # no key of this enterprise exists there
    with pytest.raises(KeysError):
        attacker.decrypt_bytes(slug, object_id, version.version, version.wrapped_key, ciphertext)
    # ... is no one to the node's key server: it cannot log in there at all.
    cp = node_world.cp.settings
    node_server = hvac.Client(url=node_world.node_keys.config().addr)
    secret = cp.vault_secret_id.get_secret_value() if cp.vault_secret_id else ""
    with pytest.raises(hvac.exceptions.VaultError):
        node_server.auth.approle.login(role_id=cp.vault_role_id, secret_id=secret)
    # Nor does it hold the node's key-server credentials anywhere in its files.
    node_config = node_world.node_keys.config()
    node_secrets = [node_config.role_id, node_config.secret_id]
    assert files_holding(node_world.cp.settings.data_dir, node_secrets) == []


def test_enrolment_is_once_and_the_code_is_not_stored(
    node_world: NodeWorld, tmp_path: Path
) -> None:
    made = node_world.operator.create_node_enterprise("Globex", f"globex-{uuid.uuid4().hex[:8]}")
    code = made["enrolment_code"]
    assert files_holding(node_world.cp.settings.data_dir, [code]) == []  # only its hash
    key = NodeIdentity.generate_key(tmp_path / "k")
    pem = NodeIdentity("node_x", key).public_pem()
    signing = node_world.node.keys.signing_public_key().to_pem()
    from node.protocol.client import enrol

    enrol(node_world.cp_url, code, pem, signing, True)
    with pytest.raises(ControlPlaneRefused) as again:
        enrol(node_world.cp_url, code, pem, signing, True)
    assert again.value.status == 401


def _signed_call(world: NodeWorld, key_path: Path | None = None) -> ControlPlane:
    identity = world.link.control.identity
    if key_path is not None:
        identity = NodeIdentity(identity.node_id, NodeIdentity.generate_key(key_path))
    return ControlPlane(world.cp_url, identity)


def test_node_requests_must_be_signed_fresh_and_unaltered(
    node_world: NodeWorld, tmp_path: Path
) -> None:
    import httpx

    assert _signed_call(node_world).call("GET", "/node/v1/providers")
    with pytest.raises(ControlPlaneRefused) as forged:
        _signed_call(node_world, tmp_path / "other.key").call("GET", "/node/v1/providers")
    assert forged.value.status == 401
    identity = node_world.link.control.identity
    body = canonical_json({"x": 1})
    headers = identity.headers("POST", "/node/v1/jobs/claim", body, time.time())
    url = f"{node_world.cp_url}/node/v1/jobs/claim"
    assert httpx.post(url, content=body, headers=headers).status_code in (200, 204)
    replayed = httpx.post(url, content=body, headers=headers)
    assert replayed.status_code == 401  # the nonce is spent
    fresh = identity.headers("POST", "/node/v1/jobs/claim", body, time.time())
    altered = httpx.post(url, content=canonical_json({"x": 2}), headers=fresh)
    assert altered.status_code == 401
    stale = identity.headers("POST", "/node/v1/jobs/claim", body, time.time() - 3600)
    assert httpx.post(url, content=body, headers=stale).status_code == 401
    unsigned = httpx.post(url, content=body)
    assert unsigned.status_code == 401
    signed_plain = identity.headers("POST", "/node/v1/jobs/claim", body, time.time())
    added_query = httpx.post(f"{url}?wait=1", content=body, headers=signed_plain)
    assert added_query.status_code == 401  # the query is signed with the path


def test_every_node_route_but_enrolment_refuses_an_unsigned_request(
    node_world: NodeWorld,
) -> None:
    """Each /node/v1 route the control plane serves (read from its OpenAPI document, so a
    route added later is covered) answers an unsigned request with 401, whatever it does."""
    import httpx

    from sandbox.server.nodes_openapi import node_openapi

    paths = node_openapi()["paths"]
    tried = 0
    for path, methods in paths.items():
        if path == "/node/v1/enrol":
            continue
        url = node_world.cp_url + re.sub(r"\{[^}]+\}", "x_1", path)
        for method in methods:
            answer = httpx.request(method.upper(), url, json={})
            assert answer.status_code == 401, (method, path, answer.status_code)
            tried += 1
    assert tried >= 16  # every route of the protocol, the collaborations' included


def _queue_as_compromised_control_plane(world: NodeWorld, **changes: Any) -> str:
    """Queue a job in the control plane's database that no decision allowed."""
    job_id = f"job_{uuid.uuid4().hex}"
    fields: dict[str, Any] = {
        "provider_id": world.provider_id, "dataset_id": world.dataset_id,
        "enterprise_id": world.config.enterprise_id, "dataset_version": 1,
        "grant_id": world.grant_id, "purpose": PURPOSE, "tier": 3,
        "query": {"aggregates": MEAN}, "epsilon": int(0.25 * EPSILON_UNIT),
        "delta": 0, "status": JobStatus.QUEUED, "reasons": [], "created_at": world.cp.clock(),
    }  # fmt: skip
    with world.cp.db.transaction() as session:
        session.add(Job(id=job_id, **(fields | changes)))
    return job_id


def _node_spent(world: NodeWorld) -> float:
    [grant] = world.enterprise.list_grants()
    return float(grant["budget"]["epsilon_spent"])


@pytest.mark.parametrize(
    "forgery",
    [
        {"tier": 4},  # a tier the enterprise never granted
        {"purpose": "marketing"},  # another purpose
        {"query": {"aggregates": [{"kind": "mean", "column": "recipe_p1"}]}},
        {"epsilon": 5 * EPSILON_UNIT},  # more than the node's budget
    ],
    ids=["tier", "purpose", "secret-column", "over-budget"],
)
def test_node_refuses_what_its_grants_do_not_cover(
    node_world: NodeWorld, forgery: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    reason = {"tier": "tier", "purpose": "purpose", "secret-column": "recipe_p1",
              "over-budget": "budget"}[request.node.callspec.id]  # fmt: skip
    job_id = _queue_as_compromised_control_plane(node_world, **forgery)
    node_world.run_jobs()
    with node_world.cp.db.read() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert job.status == JobStatus.FAILED and job.result is None
        assert "node did not release" in (job.error or "")
        assert reason in (job.error or ""), job.error  # refused for the forgery, not a typo
    assert _node_spent(node_world) == 0.0  # the node's own ledger: nothing spent
    with node_world.node.db.read() as session:
        local = session.scalars(select(Job)).all()
        assert all(j.status != JobStatus.RELEASED for j in local)


def test_node_refuses_a_grant_forged_on_the_control_plane(node_world: NodeWorld) -> None:
    """The control plane widens the mirrored grant (all tiers, budget 100): nothing changes
    on the node, which decides with the grant the enterprise signed."""
    with node_world.cp.db.transaction() as session:
        grant = session.get(Grant, node_world.grant_id)
        assert grant is not None
        grant.tiers, grant.epsilon_budget = [0, 1, 2, 3, 4, 5], 100 * EPSILON_UNIT
        grant.columns = [*grant.columns, "recipe_p1"]
    job = node_world.provider.submit_job(node_world.dataset_id, PURPOSE, 5.0, MEAN)
    assert job["status"] == "queued"  # the control plane said yes
    node_world.run_jobs()
    final = node_world.provider.get_job(job["id"])
    assert (final["status"] == "failed" and "result" not in final) or not final.get("result")
    assert _node_spent(node_world) == 0.0


def test_a_replayed_job_never_runs_twice(node_world: NodeWorld) -> None:
    job = node_world.submit(MEAN, epsilon=0.25)
    assert job["status"] == "released"
    with node_world.cp.db.read() as session:
        document = job_document(session.get(Job, job["id"]))  # type: ignore[arg-type]
    for _ in range(2):  # the control plane hands the same job over again
        take(node_world.node, node_world.config.node_id, node_world.config.enterprise_id,
             document)  # fmt: skip
    node_world.run_jobs()
    with node_world.node.db.read() as session:
        assert len(session.scalars(select(Job)).all()) == 1
        assert session.get(NodeJob, job["id"]) is not None
    assert _node_spent(node_world) == pytest.approx(0.25)  # debited once


def test_releases_are_signed_by_the_node_and_bound_to_the_job(node_world: NodeWorld) -> None:
    job = node_world.submit(MEAN, epsilon=0.25)
    with node_world.cp.db.read() as session:
        stored = session.get(Job, job["id"])
        assert stored is not None and stored.node_release is not None
        release = stored.node_release
    keys = public_keys_from_pem(node_world.node.keys.signing_public_key().to_pem())
    document = release["document"]
    sig = release["signature"]
    verify_signature(keys[int(sig.split(":")[1][1:])], canonical_json(document), sig)
    assert document["job_id"] == job["id"] and document["data_read_at"]
    # The node's audit chain holds the job's events, and the release names them.
    actions = [e["action"] for e in document["audit"]["events"]]
    assert "job.submitted" in actions or actions  # the local job's own trail
    # Its key server's log explains every data-key operation by a job (veil audit keys).
    report = key_audit(node_world.node, None)
    assert report.ok, report.unexplained

    # Sent again, it is "already" released; a release the node did not sign is refused.
    client = _signed_call(node_world)
    assert client.call("POST", f"/node/v1/jobs/{job['id']}/release", release) == {
        "outcome": "already"
    }
    forged = {**release, "document": {**document, "result": {"rows": []}}}
    with pytest.raises(ControlPlaneRefused) as refused:
        client.call("POST", f"/node/v1/jobs/{job['id']}/release", forged)
    assert refused.value.status in (403, 409)


def test_a_release_for_another_query_is_refused(node_world: NodeWorld) -> None:
    job_id = _queue_as_compromised_control_plane(node_world)
    client = _signed_call(node_world)
    claimed = client.call("POST", "/node/v1/jobs/claim")
    assert claimed["id"] == job_id
    from node.protocol.signing import sign

    wrong = sign(node_world.node, node_world.config.node_id, {
        "kind": "release", "job_id": job_id, "query_sha256": "0" * 64, "result": {"rows": []},
    })  # fmt: skip
    with pytest.raises(ControlPlaneRefused) as refused:
        client.call("POST", f"/node/v1/jobs/{job_id}/release", wrong)
    assert refused.value.status == 422
    # A well-formed release signed by any other key (here the control plane's own) is not
    # the node's: refused before anything is looked at.
    document = {"kind": "release", "job_id": job_id, "node_id": node_world.config.node_id,
                "query_sha256": claimed["query_sha256"], "result": {"rows": []}}  # fmt: skip
    other = node_world.cp.keys.sign(canonical_json(document)).to_text()
    with pytest.raises(ControlPlaneRefused) as forged:
        client.call("POST", f"/node/v1/jobs/{job_id}/release",
                    {"document": document, "signature": other})  # fmt: skip
    assert forged.value.status == 403 and forged.value.code == "bad_signature"
    with node_world.cp.db.read() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == JobStatus.RUNNING and job.result is None


def test_jobs_wait_while_the_node_is_away_and_expire_with_their_grant(
    node_world: NodeWorld,
) -> None:
    from sandbox.jobs.submit import cancel_expired

    first = node_world.provider.submit_job(node_world.dataset_id, PURPOSE, 0.25, MEAN)
    time.sleep(0.5)  # the control plane's own worker polls meanwhile: it never takes it
    assert node_world.provider.get_job(first["id"])["status"] == "queued"
    node_world.run_jobs()  # the node is back: the job runs
    assert node_world.provider.get_job(first["id"])["status"] == "released"

    second = node_world.provider.submit_job(node_world.dataset_id, PURPOSE, 0.25, MEAN)
    with node_world.cp.db.transaction() as session:  # the grant ends while the node is away
        grant = session.get(Grant, node_world.grant_id)
        assert grant is not None
        grant.valid_until = node_world.cp.clock() - timedelta(seconds=1)
    cancel_expired(node_world.cp)  # (the control plane's worker may have run it already)
    node_world.run_jobs()
    expired = node_world.provider.get_job(second["id"])
    assert expired["status"] == "failed" and "expired" in expired["error"]
    with node_world.node.db.read() as session:
        assert session.get(NodeJob, second["id"]) is None  # never handed to the node
    assert _node_spent(node_world) == pytest.approx(0.25)  # only the job that ran


def test_control_plane_away_loses_no_answer_and_releases_once(
    node_world: NodeWorld, tmp_path: Path
) -> None:
    from keys.bao import free_port
    from node.protocol.client import ControlPlaneUnavailable

    job = node_world.provider.submit_job(node_world.dataset_id, PURPOSE, 0.25, MEAN)
    real = node_world.link.control
    node_world.link.run_round()  # taken by the node
    away = ControlPlane(f"http://127.0.0.1:{free_port()}", real.identity, timeout_s=2)
    node_world.link.control = node_world.link.publisher.control = away
    deadline = time.monotonic() + 60
    while True:  # the node computes, but cannot deliver: the answer waits on the node
        with pytest.raises(ControlPlaneUnavailable):
            node_world.link.run_round()
        with node_world.node.db.read() as session:
            row = session.get(NodeJob, job["id"])
            if row is not None and row.outcome is not None:
                break
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert node_world.provider.get_job(job["id"])["status"] == "running"
    node_world.link.control = node_world.link.publisher.control = real
    node_world.run_jobs()
    assert node_world.provider.get_job(job["id"])["status"] == "released"
    # Delivered once; sending it again changes nothing.
    with node_world.node.db.transaction() as session:
        row = session.get(NodeJob, job["id"])
        assert row is not None and row.delivered_at is not None
        row.delivered_at = None
    node_world.link.run_round()
    with node_world.cp.db.read() as session:
        released = session.scalars(select(Job).where(Job.status == JobStatus.RELEASED)).all()
    assert [j.id for j in released] == [job["id"]]


def test_a_waiting_claim_is_answered_with_the_job_queued_meanwhile(node_world: NodeWorld) -> None:
    """The long poll: a node's claim that waits gets the job submitted while it waits."""
    import threading

    client = _signed_call(node_world)
    answers: list[Any] = []

    def claim() -> None:
        try:
            answers.append(client.call("POST", "/node/v1/jobs/claim?wait=15"))
        except Exception as exc:  # shown by the assertion below
            answers.append(exc)

    waiting = threading.Thread(target=claim)
    waiting.start()
    time.sleep(0.3)  # the claim is waiting now (or soon): either way it must get the job
    job = node_world.provider.submit_job(node_world.dataset_id, PURPOSE, 0.25, MEAN)
    waiting.join(timeout=30)
    assert answers and isinstance(answers[0], dict), answers
    assert answers[0]["id"] == job["id"]
    with pytest.raises(ControlPlaneRefused) as too_long:
        client.call("POST", "/node/v1/jobs/claim?wait=3600")
    assert too_long.value.status == 422


@pytest.mark.slow  # make test-slow: ~10 s or more (test durations)
def test_waiting_claims_hold_no_server_thread(node_world: NodeWorld) -> None:
    """More waiting claims than the API has worker threads (40): the API still answers
    everyone else, and each claim still gets its 204 when its wait ends."""
    import threading

    client = _signed_call(node_world)
    answers: list[Any] = []

    def claim() -> None:
        try:
            answers.append(client.call("POST", "/node/v1/jobs/claim?wait=8"))
        except Exception as exc:  # shown by the assertion below
            answers.append(exc)

    waiting = [threading.Thread(target=claim) for _ in range(48)]
    for thread in waiting:
        thread.start()
    time.sleep(1.0)  # they are waiting now (a few may still be arriving)
    assert node_world.provider.catalog()  # a plain request needs a server thread
    assert not answers  # ... and got one while every claim was still waiting
    for thread in waiting:
        thread.join(timeout=60)
    assert answers == [None] * 48  # each claim: 204 after its wait


def test_a_claim_answered_into_an_absent_node_is_queued_again(node_world: NodeWorld) -> None:
    """A claim's answer that reaches no node (a long poll in flight when the node went away)
    is never acknowledged: the job is queued again after the hand-over time, the stale
    answer cannot be taken any more, and the job runs once when the node claims it anew."""
    job = node_world.provider.submit_job(node_world.dataset_id, PURPOSE, 0.25, MEAN)
    handed = _signed_call(node_world).call("POST", "/node/v1/jobs/claim")
    assert handed["id"] == job["id"]  # ... and that answer is lost
    assert requeue_unacknowledged(node_world.cp) == 0  # not yet: the node may still answer
    real_clock = node_world.cp.clock
    node_world.cp.clock = lambda: real_clock() + timedelta(seconds=HANDOVER_S + 1)
    try:
        assert requeue_unacknowledged(node_world.cp) == 1
    finally:
        node_world.cp.clock = real_clock
    assert node_world.provider.get_job(job["id"])["status"] == "queued"
    assert not node_world.link._acknowledge(handed)  # the stale answer: taken back
    node_world.run_jobs()
    final = node_world.provider.get_job(job["id"])
    assert final["status"] == "released", final
    with node_world.cp.db.read() as session:
        stored = session.get(Job, job["id"])
        assert stored is not None and stored.attempts == 2 and stored.node_taken_at is not None
    # The node reads a stale answer after the job was queued again, and takes it: handed
    # again, it is a replay there — one run on the node, one release.
    late = node_world.provider.submit_job(node_world.dataset_id, PURPOSE, 0.25, MEAN)
    stale = _signed_call(node_world).call("POST", "/node/v1/jobs/claim")
    node_world.cp.clock = lambda: real_clock() + timedelta(seconds=HANDOVER_S + 1)
    try:
        assert requeue_unacknowledged(node_world.cp) == 1
    finally:
        node_world.cp.clock = real_clock
    take(node_world.node, node_world.config.node_id, node_world.config.enterprise_id, stale)
    assert not node_world.link._acknowledge(stale)
    node_world.run_jobs()
    assert node_world.provider.get_job(late["id"])["status"] == "released"
    with node_world.node.db.read() as session:
        row = session.get(NodeJob, late["id"])
        assert row is not None and row.local_job_id is not None
        replayed = session.scalars(
            select(AuditEvent.action).where(AuditEvent.resource == f"job:{late['id']}")
        ).all()
    assert "node.job_replayed" in replayed  # handed again: not run again
    with node_world.cp.db.read() as session:
        released = session.scalars(
            select(AuditEvent).where(
                AuditEvent.action == "job.released", AuditEvent.resource == f"job:{late['id']}"
            )
        ).all()
    assert len(released) == 1


def test_a_suspended_providers_jobs_never_reach_the_node(node_world: NodeWorld) -> None:
    """Suspended on the control plane: its queued job ends there; a forged one that still
    reached the node would be refused by the node's mirror of the provider's status."""
    job_id = _queue_as_compromised_control_plane(node_world)
    node_world.operator.suspend_provider(node_world.provider_id, "contract ended")
    node_world.run_jobs()
    with node_world.cp.db.read() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == JobStatus.FAILED and job.result is None
    with node_world.node.db.read() as session:
        assert session.get(NodeJob, job_id) is None  # never handed to the node
    # The node's own check, as a compromised control plane would test it.
    node_world.link.publisher._providers_at = None  # read the directory at once
    node_world.sync()
    document = {"id": f"job_{uuid.uuid4().hex}", "provider_id": node_world.provider_id,
                "dataset_id": node_world.dataset_id, "purpose": PURPOSE, "tier": 3,
                "query": {"aggregates": MEAN}, "epsilon": 0.25, "delta": 0.0}  # fmt: skip
    take(node_world.node, node_world.config.node_id, node_world.config.enterprise_id, document)
    with node_world.node.db.read() as session:
        row = session.get(NodeJob, document["id"])
        assert row is not None and row.outcome is not None
        assert "suspended" in row.outcome["document"]["reason"]
    assert _node_spent(node_world) == 0.0


def test_the_control_plane_cross_checks_every_node_release(node_world: NodeWorld) -> None:
    from sandbox.nodes.checks import check_releases

    job = node_world.submit(MEAN, epsilon=0.25)
    forged = _queue_as_compromised_control_plane(node_world, tier=4)  # refused by the node
    node_world.run_jobs()
    checks = {c.job_id: c for c in check_releases(node_world.cp.db)}
    assert checks[job["id"]].problems == [] and checks[job["id"]].data_read_at
    assert checks[job["id"]].node_events >= 1
    assert checks[forged].problems == [] and checks[forged].status == "failed"
    # A released result changed afterwards on the control plane no longer matches.
    with node_world.cp.db.transaction() as session:
        row = session.get(Job, job["id"])
        assert row is not None
        row.result_sha256 = "0" * 64
    [tampered] = [c for c in check_releases(node_world.cp.db) if c.job_id == job["id"]]
    assert tampered.problems == ["the released result is not the one the node signed"]
