"""Commitment letters of an enterprise on its own node (docs/commitments.md, "Enterprises on
their own node"): issued on the node, signed for the enterprise by the node's key server,
published to the control plane, signed there by the provider, and the provider's signature
checked by the node itself before the grant comes into force on the node.

"A compromised control plane" is played by writing its database directly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from typer.testing import CliRunner

import sandbox.cli  # noqa: F401 - registers every command on the app
from keys import InvalidSignature, LocalKeyServer
from keys.node_auth import canonical_json
from keys.signing import public_keys_from_pem
from node.protocol.signing import sign
from policies.audit import AuditEvent
from policies.errors import Forbidden, NotFound
from policies.grants import EPSILON_UNIT, Grant
from policies.letter_format import sign_as_provider, sign_for_enterprise, verify_letter
from policies.letters import CommitmentLetter
from sandbox.cli.app import app as cli_app
from sandbox.client import ApiError, VeilClient
from sandbox.jobs.retention import shred_expired
from sandbox.nodes.letters import publish_letter
from sandbox.oversight.evidence_format import verify_pack
from sandbox.runtime.veil import Veil
from sandbox.store.models import Job, JobStatus
from sandbox.store.node_models import Node
from tests.nodes.conftest import PURPOSE, NodeWorld, make_node_world

pytestmark = pytest.mark.integration

MEAN = [{"kind": "mean", "column": "temperature_c"}]
INSURANCE = "PICC-2026-DS-0042"


@pytest.fixture
def world(
    tmp_path: Path, veil: Veil, api: str, own_key_server: LocalKeyServer
) -> Iterator[NodeWorld]:
    """A node whose own settings require letters: its grant is made letter-required."""
    with make_node_world(tmp_path, veil, api, own_key_server, commitment_letters=True) as made:
        yield made


def issue(world: NodeWorld) -> tuple[Ed25519PrivateKey, dict[str, Any]]:
    """The provider registers a key on the control plane; the node mirrors it; the
    enterprise issues the grant's letter on its node, which publishes it."""
    key = Ed25519PrivateKey.generate()
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    world.provider.register_letter_key(pem.decode())
    world.link.publisher._providers_at = None  # read the directory now, not in 5 s
    world.sync()
    letter = world.enterprise.issue_letter(world.grant_id, 365, INSURANCE)["letter"]
    world.sync()  # the letter reaches the control plane
    return key, letter


def node_events(world: NodeWorld, action: str) -> list[AuditEvent]:
    with world.node.db.read() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def queue_behind_the_nodes_back(world: NodeWorld) -> str:
    """A job queued in the control plane's database, no decision asked."""
    job_id = f"job_{uuid.uuid4().hex}"
    with world.cp.db.transaction() as session:
        session.add(Job(
            id=job_id, provider_id=world.provider_id, dataset_id=world.dataset_id,
            enterprise_id=world.config.enterprise_id, dataset_version=1,
            grant_id=world.grant_id, purpose=PURPOSE, tier=3, query={"aggregates": MEAN},
            epsilon=int(0.25 * EPSILON_UNIT), delta=0, status=JobStatus.QUEUED, reasons=[],
            created_at=world.cp.clock(),
        ))  # fmt: skip
    return job_id


def veil_cli(*args: str) -> str:
    done = CliRunner().invoke(cli_app, list(args))
    assert done.exit_code == 0, done.output
    return done.output


def node_grant(world: NodeWorld) -> Grant:
    with world.node.db.read() as session:
        grant = session.get(Grant, world.grant_id)
        assert grant is not None
        session.expunge(grant)
        return grant


def test_the_node_signs_publishes_and_checks_the_providers_signature(
    world: NodeWorld, tmp_path: Path
) -> None:
    assert node_grant(world).letter_required  # from the node's own settings
    key, letter = issue(world)

    # Signed for the enterprise by the node's key server, not the control plane's.
    node_keys = {k.key_version: k for k in world.node.keys.signing_public_keys()}
    cp_keys = {k.key_version: k for k in world.cp.keys.signing_public_keys()}
    verify_letter(letter, node_keys, require_provider=False)
    with pytest.raises(InvalidSignature):
        verify_letter(letter, cp_keys, require_provider=False)

    # Before the provider signs, the node refuses a job on the grant, whatever the
    # control plane queued.
    refused = queue_behind_the_nodes_back(world)
    world.run_jobs()
    failed = world.provider.get_job(refused)
    assert failed["status"] == "failed" and "commitment letter" in failed["error"]

    view = world.provider.get_letter(world.grant_id)
    assert view["letter"] == letter and view["status"] == "awaiting_signature"
    assert public_keys_from_pem(view["enterprise_key_pem"]).keys() == node_keys.keys()
    # The provider signs with the CLI, which checks the node's signature first; the letter
    # then verifies offline with the node's public key.
    private, public = tmp_path / "p.key", tmp_path / "p.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))  # fmt: skip
    public.write_text(letter["provider"]["signing_key"]["public_key_pem"])
    remote = ["--token", world.operator.issue_token(world.provider_id), "--url", world.cp_url]
    veil_cli("letters", "sign", world.grant_id, "--private-key", str(private), *remote)
    saved, node_pem = tmp_path / "l.json", tmp_path / "node.pem"
    veil_cli("letters", "show", world.grant_id, "--output", str(saved),
             "--signer-key", str(node_pem), *remote)  # fmt: skip
    said = veil_cli("letters", "verify", str(saved), "--public-key", str(node_pem),
                    "--provider-key", str(public))  # fmt: skip
    assert "both signatures valid" in said
    assert world.provider.get_letter(world.grant_id)["status"] == "signed"

    job = world.submit(MEAN)  # the node takes the signature before it decides the job
    assert job["status"] == "released"
    assert node_grant(world).letter_signed_at is not None
    [event] = node_events(world, "letter.signed")
    assert event.details["checked_by"] == "node"
    full = world.enterprise.get_letter(world.grant_id)
    assert full["status"] == "signed"
    verify_letter(full["letter"], public_keys_from_pem(view["enterprise_key_pem"]))

    # The evidence pack is made where the grant's audit trail is: on the node, signed by
    # the node's key, and it verifies offline with that key alone.
    pack = world.enterprise.evidence_pack(world.grant_id)
    checked = verify_pack(pack, node_keys)
    assert checked["letter"] == full["letter"]["id"] and checked["receipt_jobs"] >= 1
    assert pack["letter"]["provider_signature"] == full["letter"]["provider_signature"]
    with pytest.raises(InvalidSignature):
        verify_pack(pack, cp_keys)


def test_the_node_refuses_a_forged_signature_the_control_plane_relays(world: NodeWorld) -> None:
    _, letter = issue(world)
    forger = Ed25519PrivateKey.generate()
    with world.cp.db.transaction() as session:  # the control plane says: signed
        row = session.scalars(
            select(CommitmentLetter).where(CommitmentLetter.grant_id == world.grant_id)
        ).one()
        row.provider_signature = sign_as_provider(letter, forger)
        row.signed_at = world.cp.clock()
        grant = session.get(Grant, world.grant_id)
        assert grant is not None
        grant.letter_signed_at = world.cp.clock()
    world.sync()
    world.sync()  # read again: refused once, audited once
    assert node_grant(world).letter_signed_at is None
    [refusal] = node_events(world, "letter.signature_refused")
    assert refusal.outcome == "denied"
    assert not node_events(world, "letter.signed")
    job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, MEAN)
    assert job["status"] == "queued"  # the control plane decided with its own word
    world.run_jobs()
    failed = world.provider.get_job(job["id"])
    assert failed["status"] == "failed" and "commitment letter" in failed["error"]


def _node_row(world: NodeWorld) -> Node:
    with world.cp.db.read() as session:
        node = session.get(Node, world.config.node_id)
        assert node is not None
        session.expunge(node)
        return node


def test_the_control_plane_takes_only_the_nodes_own_letters(world: NodeWorld) -> None:
    _, letter = issue(world)
    with world.cp.db.transaction() as session:  # start again: nothing stored
        session.execute(CommitmentLetter.__table__.delete())
    node = _node_row(world)
    doc = {"kind": "letter", "id": letter["id"], "grant_id": world.grant_id, "letter": letter}

    signed = sign(world.node, node.id, doc)
    by_another = world.cp.keys.sign(canonical_json(signed["document"])).to_text()
    with pytest.raises(Forbidden):  # the document is the node's letter, the signature not
        publish_letter(world.cp, node, world.grant_id, {**signed, "signature": by_another})

    body = {k: v for k, v in letter.items() if k != "enterprise_signature"}
    by_cp = sign_for_enterprise(body, world.cp.keys.sign)  # not the node's key
    with pytest.raises(Forbidden):
        publish_letter(world.cp, node, world.grant_id, sign(world.node, node.id,
                                                            {**doc, "letter": by_cp}))  # fmt: skip

    # Another node (here: one enrolled with the same key, to pass the signature check)
    # cannot publish a letter for this node's grant.
    other = world.operator.create_node_enterprise("Other Works", f"o-{uuid.uuid4().hex[:6]}")
    with world.cp.db.transaction() as session:
        row = session.get(Node, other["node"]["id"])
        assert row is not None
        row.signing_key = node.signing_key
        session.flush()
        session.expunge(row)
    with pytest.raises(NotFound):
        publish_letter(world.cp, row, world.grant_id, sign(world.node, row.id, doc))

    with world.cp.db.read() as session:
        assert session.scalars(select(CommitmentLetter)).first() is None
    assert publish_letter(world.cp, node, world.grant_id, sign(world.node, node.id, doc))
    assert not publish_letter(world.cp, node, world.grant_id, sign(world.node, node.id, doc))


def test_a_node_letter_is_read_by_its_enterprise_and_provider_only(world: NodeWorld) -> None:
    _, letter = issue(world)
    enterprise_id = world.config.enterprise_id
    with VeilClient(world.cp_url, world.operator.issue_token(enterprise_id)) as on_cp:
        assert on_cp.get_letter(world.grant_id)["letter"] == letter
        with pytest.raises(ApiError) as refused:  # issuing stays on the node
            on_cp.issue_letter(world.grant_id, 30, INSURANCE)
        assert refused.value.status == 409 and refused.value.code == "data_on_node"
        with pytest.raises(ApiError) as no_pack:  # its audit trail is the node's
            on_cp.evidence_pack(world.grant_id)
        assert no_pack.value.status == 409 and no_pack.value.code == "data_on_node"
    assert world.provider.get_letter(world.grant_id)["letter"] == letter
    other = world.operator.create_provider("Elsewhere Analytics")
    stranger = world.operator.create_node_enterprise("Other Works", f"o-{uuid.uuid4().hex[:6]}")
    for ident in (other["id"], stranger["enterprise"]["id"]):
        with VeilClient(world.cp_url, world.operator.issue_token(ident)) as client:
            with pytest.raises(ApiError) as hidden:
                client.get_letter(world.grant_id)
            assert hidden.value.status == 404


def test_results_from_a_node_grant_are_shredded_after_the_retention_period(
    world: NodeWorld,
) -> None:
    key, letter = issue(world)
    world.provider.sign_letter(world.grant_id, sign_as_provider(letter, key))
    job = world.submit(MEAN)
    assert job["status"] == "released" and world.provider.get_result(job["id"])
    after = datetime.fromisoformat(letter["obligations"]["retain_until"]) + timedelta(seconds=1)

    # Where the provider reads them: the control plane's copy of the release.
    assert shred_expired(world.cp, after - timedelta(seconds=2)) == 0
    assert shred_expired(world.cp, after) == 1
    with pytest.raises(ApiError) as gone:
        world.provider.get_result(job["id"])
    assert gone.value.status == 409 and gone.value.code == "shredded"
    # And the node's own copy of what it released.
    assert shred_expired(world.node, after) == 1
    with world.node.db.read() as session:
        [local] = session.scalars(select(Job).where(Job.grant_id == world.grant_id)).all()
        assert local.result is None and local.shredded_at is not None
        assert local.result_sha256
