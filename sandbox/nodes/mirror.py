"""What a node publishes to the control plane: catalog entries (declarations, never data)
and grants, signed by the node's key server.

The control plane keeps a copy so providers see the catalog and their grants, and so it can
decide and queue jobs as for any dataset.  The copy is not what protects the data: the node
decides every job again against its own grants and ledger (``node.work.jobs``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from i18n import Msg
from keys import InvalidSignature
from keys.node_auth import canonical_json
from keys.signing import Signature, public_keys_from_pem, verify_signature
from policies import audit
from policies.budget import Budget
from policies.db import new_id
from policies.errors import Conflict, Forbidden, InvalidRequest
from policies.grants import Grant
from policies.letters import ProviderKey
from policies.principals import Principal, Role
from sandbox.jobs.submit import cancel_queued_jobs
from sandbox.runtime.veil import Veil
from sandbox.store.models import Dataset, DatasetVersion
from sandbox.store.node_models import Node

NODE_FORMAT = "node"  # DatasetVersion.source_format of a version held on a node
_ID = re.compile(r"^(?=.{3,40}$)[a-z]{1,8}_[A-Za-z0-9_-]+$")  # new_id's ids, at most 40


def checked_id(value: object, kind: str) -> str:
    """An id the other side chose (a node: its dataset's, its grant's; the control plane: a
    code request's), checked before it is stored."""
    text = str(value)
    if not _ID.fullmatch(text):
        raise InvalidRequest(Msg("the {kind} id is not a Veil id", kind=kind))
    return text


def verify_node_document(node: Node, signed: dict[str, Any]) -> dict[str, Any]:
    """The document of ``{"document": ..., "signature": ...}`` if the node's key server
    signed it; Forbidden otherwise."""
    document, signature = signed.get("document"), signed.get("signature")
    if not isinstance(document, dict) or not isinstance(signature, str) or not node.signing_key:
        raise InvalidRequest(Msg("a signed document needs 'document' and 'signature'"))
    try:
        sig = Signature.from_text(signature)
        key = public_keys_from_pem(node.signing_key).get(sig.key_version)
        if key is None:
            raise InvalidSignature()
        verify_signature(key, canonical_json(document), sig)
    except (InvalidSignature, ValueError):
        raise Forbidden(
            Msg("the document's signature is not the node's"), code="bad_signature"
        ) from None
    if document.get("node_id") != node.id:
        raise Forbidden(Msg("the document names another node"), code="bad_signature")
    return document


def providers(veil: Veil) -> list[dict[str, Any]]:
    """The provider directory a node mirrors: ids, names, states and the public keys each
    provider registered to sign commitment letters (no token, no grant)."""
    with veil.db.read() as session:
        rows = session.scalars(select(Principal).where(Principal.role == Role.PROVIDER))
        keys: dict[str, list[dict[str, str]]] = {}
        for key in session.scalars(select(ProviderKey).order_by(ProviderKey.created_at)):
            keys.setdefault(key.provider_id, []).append(
                {
                    "id": key.id,
                    "fingerprint": key.fingerprint,
                    "public_key_pem": key.public_key_pem,
                    "created_at": key.created_at.isoformat(),
                }
            )
        return [
            {"id": p.id, "name": p.name, "status": p.status, "letter_keys": keys.get(p.id, [])}
            for p in rows
        ]


def publish_dataset(veil: Veil, node: Node, doc: dict[str, Any]) -> None:
    """Create or update the catalog entry of a dataset held on ``node``."""
    dataset_id = checked_id(doc.get("id", ""), "dataset")
    with veil.db.transaction() as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is not None and dataset.node_id != node.id:
            raise Conflict(Msg("dataset id {id} is taken", id=dataset_id))
        cap = Budget.from_floats(float(doc["epsilon_cap"]), float(doc["delta_cap"]))
        caps = cap.epsilon_units, cap.delta_units  # rounded to the unit, never truncated
        if dataset is None:
            dataset = Dataset(
                id=dataset_id,
                enterprise_id=node.enterprise_id,
                node_id=node.id,
                epsilon_cap=caps[0],
                delta_cap=caps[1],
                created_at=veil.clock(),
            )
            session.add(dataset)
        dataset.name, dataset.declaration = str(doc["name"]), dict(doc["declaration"])
        dataset.epsilon_cap, dataset.delta_cap = caps
        dataset.classification = doc.get("classification")
        _publish_versions(session, dataset_id, doc.get("versions") or [])
        audit.record(
            session,
            "node.dataset_published",
            tenant_id=node.enterprise_id,
            resource=f"dataset:{dataset_id}",
            details={"node_id": node.id, "versions": len(doc.get("versions") or [])},
        )


def _publish_versions(session: Session, dataset_id: str, versions: list[Any]) -> None:
    known = set(
        session.scalars(
            select(DatasetVersion.version).where(DatasetVersion.dataset_id == dataset_id)
        )
    )
    for entry in versions:
        number, rows = int(entry["version"]), int(entry["rows_public"])
        if number in known:
            continue
        session.add(
            DatasetVersion(
                id=new_id("dsv"),
                dataset_id=dataset_id,
                version=number,
                row_count=rows,  # the node sends the public (rounded) count only
                source_format=NODE_FORMAT,
                object_path="",  # no data and no key here: they are on the node
                wrapped_key="",
                ciphertext_sha256="",
                size_bytes=0,
                created_at=datetime.fromisoformat(str(entry["created_at"])),
            )
        )


def publish_grant(veil: Veil, node: Node, signed: dict[str, Any]) -> None:
    """Create or update a grant the enterprise made on its node (signed by the node)."""
    doc = verify_node_document(node, signed)
    grant_id = checked_id(doc["id"], "grant")
    now = veil.clock()
    with veil.db.transaction() as session:
        _check_grant(session, node, doc)
        grant = session.get(Grant, grant_id)
        if grant is not None and grant.enterprise_id != node.enterprise_id:
            raise Conflict(Msg("grant id {id} is taken", id=grant_id))
        if grant is None:
            grant = Grant(id=grant_id, created_at=now, epsilon_spent=0, delta_spent=0)
            session.add(grant)
        was_revoked = grant.revoked_at is not None
        grant.enterprise_id, grant.provider_id = node.enterprise_id, str(doc["provider_id"])
        grant.dataset_ids = [str(d) for d in doc["dataset_ids"]]
        grant.columns, grant.tiers = list(doc["columns"]), [int(t) for t in doc["tiers"]]
        grant.purposes = list(doc["purposes"])
        grant.valid_from = datetime.fromisoformat(doc["valid_from"])
        grant.valid_until = datetime.fromisoformat(doc["valid_until"])
        grant.min_group_size = int(doc["min_group_size"])
        # The node's own setting decides whether the grant needs a signed letter; the
        # provider's signature is then recorded here when it signs (``sandbox.nodes.letters``).
        grant.letter_required = bool(doc.get("letter_required", False))
        grant.epsilon_budget, grant.delta_budget = (
            int(doc["epsilon_budget"]),
            int(doc["delta_budget"]),
        )
        revoked = doc.get("revoked_at")
        grant.revoked_at = datetime.fromisoformat(revoked) if revoked else None
        grant.node_signed = signed
        session.flush()
        if grant.revoked_at is not None and not was_revoked:
            cancel_queued_jobs(session, grant_ids=[grant.id], why="the grant was revoked", now=now)
        audit.record(
            session,
            "node.grant_published",
            tenant_id=node.enterprise_id,
            resource=f"grant:{grant_id}",
            details={"node_id": node.id, "signature": signed["signature"]},
        )


def _check_grant(session: Session, node: Node, doc: dict[str, Any]) -> None:
    """A node may publish grants of its own enterprise, on its own datasets, to providers."""
    if doc.get("enterprise_id") != node.enterprise_id:
        raise Forbidden(Msg("a node publishes its own enterprise's grants only"))
    provider = session.get(Principal, str(doc.get("provider_id")))
    if provider is None or provider.role != Role.PROVIDER:
        raise InvalidRequest(Msg("the grant's provider is not a provider here"))
    for dataset_id in doc.get("dataset_ids") or []:
        dataset = session.get(Dataset, str(dataset_id))
        if dataset is None or dataset.node_id != node.id:
            raise InvalidRequest(
                Msg("publish dataset {id} before a grant on it", id=str(dataset_id))
            )
