"""A node's signing keys on the control plane only ever grow (docs/nodes.md, "Signing keys").

A node enrolls with the version of its key server's signing key it signs with; after a
switch of crypto profile (``veil keys migrate``: an SM2 key, one version above) or a
rotation it signs with a version the control plane did not have.  The node publishes every
version at its link's start; the control plane takes them only when they extend what it
holds, so a forged or confused publication can add a key, never replace or drop one."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from keys import CryptoProfile, LocalKeyServer
from keys.node_auth import NodeIdentity
from keys.signing import ED25519, SM2, SigningPublicKey, public_keys_from_pem
from node.protocol.client import ControlPlane, ControlPlaneRefused
from node.protocol.signing import peer_document
from node.setup.provision import enterprise_token, running_node
from policies.audit import AuditEvent
from policies.grants import Grant
from sandbox.client import VeilClient
from sandbox.jobs import reencryption
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from sandbox.store.models import Job
from sandbox.store.node_models import Node
from tests.nodes.conftest import GRANTED, PURPOSE, NodeWorld, make_node_world, node_settings_for

pytestmark = pytest.mark.integration

MEAN = [{"kind": "mean", "column": "temperature_c"}]
PATH = "/node/v1/signing-keys"


def held(world: NodeWorld) -> str:
    """The node's signing keys as the control plane holds them (PEM)."""
    with world.cp.db.read() as session:
        node = session.get(Node, world.config.node_id)
        assert node is not None and node.signing_key is not None
        return node.signing_key


def updates(world: NodeWorld) -> list[dict[str, Any]]:
    with world.cp.db.read() as session:
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action == "node.signing_keys_updated")
        )
        return [e.details for e in events]


def new_ed25519(version: int) -> SigningPublicKey:
    raw = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return SigningPublicKey(version, raw, ED25519)


def test_a_node_switched_to_gm_publishes_its_sm2_key_and_its_documents_are_accepted(
    tmp_path: Path, veil: Veil, api: str, own_key_server: LocalKeyServer
) -> None:
    with make_node_world(tmp_path, veil, api, own_key_server) as world:
        pass  # enrolled under standard (Ed25519 v1), a grant published; then stopped
    assert sorted(public_keys_from_pem(held(world))) == [1]
    gm = node_settings_for(world.node_dir, own_key_server, crypto_profile=CryptoProfile.GM)
    with open_veil(gm, worker=False, profile_check=False) as switching:
        assert reencryption.migrate(switching).done  # signs its checkpoint with SM2 v2
    with running_node(world.node_dir, gm, link=False) as (node, link), ApiThread(gm, node) as url:
        link.run_round()  # the link's start publishes every version
        keys = public_keys_from_pem(held(world))
        assert {v: k.algorithm for v, k in keys.items()} == {1: ED25519, 2: SM2}
        assert [(u["added"], u["versions"]) for u in updates(world)] == [([2], [1, 2])]
        # Nothing new: taken again, nothing written, nothing audited.
        again = link.control.call("PUT", PATH, {"signing_keys": held(world)})
        assert again == {"added": [], "versions": [1, 2]}
        assert len(updates(world)) == 1
        # A grant made after the switch, and a release of a job under it: both signed with
        # SM2 v2, both accepted by the control plane.
        enterprise = VeilClient(url, enterprise_token(node, world.config))
        grant = enterprise.create_grant(
            world.provider_id, [world.dataset_id], GRANTED, [0, 1, 2, 3], [PURPOSE],
            datetime.now(UTC) + timedelta(days=1), 1.0,
        )  # fmt: skip
        link.run_round()
        with veil.db.read() as session:
            mirrored = session.get(Grant, grant["id"])
            assert mirrored is not None and mirrored.node_signed is not None
            assert str(mirrored.node_signed["signature"]).startswith("veil-sm2:v2:")
        job = world.provider.submit_job(world.dataset_id, PURPOSE, 0.25, MEAN)
        deadline = time.monotonic() + 60
        while world.provider.get_job(job["id"])["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, "the job did not end"
            link.run_round()
            time.sleep(0.05)
        assert world.provider.get_job(job["id"])["status"] == "released"
        with veil.db.read() as session:
            done = session.get(Job, job["id"])
            assert done is not None and done.node_release is not None
            release = done.node_release
        assert str(release["signature"]).startswith("veil-sm2:v2:")
        # Other nodes get the node's keys from the same record (collaboration adverts, pair
        # analyses): the SM2-signed document checks with what the control plane relays.
        assert peer_document(held(world), release) is not None


def test_a_publication_that_drops_or_changes_a_key_or_is_not_the_nodes_is_refused(
    node_world: NodeWorld, tmp_path: Path
) -> None:
    enrolled = held(node_world)
    [v1] = public_keys_from_pem(enrolled).values()
    v3 = new_ed25519(3)
    control = node_world.link.control
    # Signed by another key than the node's: 401, whatever the keys.
    other_key = NodeIdentity.generate_key(tmp_path / "forger.key")
    forger = ControlPlane(node_world.cp_url, NodeIdentity(control.identity.node_id, other_key))
    refusals: list[tuple[int, str]] = []
    for caller, pem in [
        (forger, enrolled + v3.to_pem()),  # not the node's request
        (control, v3.to_pem()),  # drops v1
        (control, new_ed25519(1).to_pem() + v3.to_pem()),  # replaces v1
        (control, "# veil-ed25519 key version 1\nnot a key"),
    ]:
        with pytest.raises(ControlPlaneRefused) as refused:
            caller.call("PUT", PATH, {"signing_keys": pem})
        refusals.append((refused.value.status, refused.value.code))
    forger.close()
    assert refusals == [
        (401, "node_unauthenticated"),
        (409, "signing_key_missing"),
        (409, "signing_key_changed"),
        (422, "invalid_request"),
    ]
    assert held(node_world) == enrolled and updates(node_world) == []  # nothing changed
    # The node's own extension is taken; a version below the newest held is not added later.
    answer = control.call("PUT", PATH, {"signing_keys": v1.to_pem() + v3.to_pem()})
    assert answer == {"added": [3], "versions": [1, 3]}
    with pytest.raises(ControlPlaneRefused) as older:
        control.call("PUT", PATH, {"signing_keys": held(node_world) + new_ed25519(2).to_pem()})
    assert (older.value.status, older.value.code) == (409, "signing_key_not_newer")
    assert sorted(public_keys_from_pem(held(node_world))) == [1, 3]
    assert [u["added"] for u in updates(node_world)] == [[3]]
