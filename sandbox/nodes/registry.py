"""Which enterprises keep their data on a node, enrolment, and authenticating a node's requests.

An enterprise created "on a node" gets no key-server tenant here at all: its keys are made
by its node, in the node's own key server, with credentials that exist only on the node.
The operator hands the enterprise a one-time enrolment code (only its SHA-256 is stored);
``veil node init --enrol CODE`` on the node sends it with the node's public keys.

A node's signing keys (``Node.signing_key``: every version, PEM) only ever grow: the node
publishes them again (:func:`publish_signing_keys`) after its key server made a new
version (a rotation, or a switch of crypto profile), and every version held here stays as
it is, so each signature the node made keeps verifying.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from i18n import Msg
from keys.node_auth import MAX_SKEW_S, RequestRejected, claimed, load_public_pem, verify_request
from keys.signing import SigningPublicKey, public_keys_from_pem
from policies import audit
from policies.capabilities import Capability, require
from policies.db import new_id
from policies.errors import Conflict, InvalidRequest, NotFound
from policies.principals import Principal, Role, create_principal, validate_slug
from sandbox.runtime.veil import Veil
from sandbox.store.node_models import Node, NodeNonce, NodeStatus, node_of

ENROLMENT_LIFETIME: Final = timedelta(days=7)
_SEEN_EVERY: Final = timedelta(seconds=30)  # last_seen_at is written at most this often
MAX_SIGNING_KEYS_CHARS: Final = 64_000  # every version's PEM, a few hundred versions
_PURGE_EVERY_S: Final = 30.0  # spent nonces past the window are deleted at most this often
_purged_at = -_PURGE_EVERY_S  # this process's last purge (time.monotonic())


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.strip().encode()).hexdigest()


@dataclass(frozen=True)
class Enrolment:
    enterprise: Principal
    node: Node
    code: str  # shown once


def create_node_enterprise(veil: Veil, operator: Principal, name: str, slug: str) -> Enrolment:
    """An enterprise whose data and keys will live on its own node, and its enrolment code.

    Unlike :func:`sandbox.accounts.tenants.create_enterprise`, nothing is provisioned in the control
    plane's key server: no key of this enterprise ever exists here.
    """
    require(operator, Capability.MANAGE_PRINCIPALS)
    validate_slug(slug)
    code = secrets.token_urlsafe(24)
    now = veil.clock()
    try:
        with veil.db.transaction() as session:
            enterprise = create_principal(session, Role.ENTERPRISE, name, slug=slug)
            node = Node(
                id=new_id("node"),
                enterprise_id=enterprise.id,
                status=NodeStatus.PENDING,
                enrolment_sha256=_code_hash(code),
                enrolment_expires_at=now + ENROLMENT_LIFETIME,
                created_at=now,
            )
            session.add(node)
            audit.record(
                session,
                "enterprise.created",
                actor=operator,
                tenant_id=enterprise.id,
                resource=f"principal:{enterprise.id}",
                details={"name": enterprise.name, "slug": slug, "node_id": node.id},
            )
    except IntegrityError:
        raise Conflict(Msg("an enterprise with slug '{slug}' exists already", slug=slug)) from None
    return Enrolment(enterprise, node, code)


def new_enrolment_code(veil: Veil, operator: Principal, enterprise_id: str) -> str:
    """A fresh one-time code for a node not yet enrolled (the old one stops working)."""
    require(operator, Capability.MANAGE_PRINCIPALS)
    code = secrets.token_urlsafe(24)
    with veil.db.transaction() as session:
        node = node_of(session, enterprise_id)
        if node is None:
            raise NotFound("node", enterprise_id)
        if node.status != NodeStatus.PENDING:
            raise Conflict(
                Msg("this enterprise's node is enrolled already; retire it before enrolling anew")
            )
        node.enrolment_sha256 = _code_hash(code)
        node.enrolment_expires_at = veil.clock() + ENROLMENT_LIFETIME
        audit.record(
            session,
            "node.enrolment_code",
            actor=operator,
            tenant_id=enterprise_id,
            resource=f"node:{node.id}",
        )
    return code


def enrol(veil: Veil, code: str, identity_pem: str, signing_pem: str) -> tuple[Node, Principal]:
    """Enrol the node that presents ``code`` with its two public keys (once)."""
    try:
        load_public_pem(identity_pem)
        SigningPublicKey.from_pem(signing_pem)
    except ValueError as exc:
        raise InvalidRequest(Msg("enrolment refused: {why}", why=str(exc))) from None
    now = veil.clock()
    with veil.db.transaction() as session:
        node = session.scalar(select(Node).where(Node.enrolment_sha256 == _code_hash(code)))
        expires = node.enrolment_expires_at if node else None
        if node is None or node.status != NodeStatus.PENDING or expires is None or expires <= now:
            raise RequestRejected(
                Msg(
                    "the enrolment code is unknown, used or expired; ask the operator for a new one"
                )
            )
        node.status, node.enrolled_at = NodeStatus.ACTIVE, now
        node.identity_key, node.signing_key = identity_pem, signing_pem
        node.enrolment_sha256 = node.enrolment_expires_at = None
        enterprise = session.get(Principal, node.enterprise_id)
        assert enterprise is not None
        audit.record(
            session,
            "node.enrolled",
            tenant_id=enterprise.id,
            resource=f"node:{node.id}",
            details={"identity_key_sha256": hashlib.sha256(identity_pem.encode()).hexdigest()},
        )
        session.expunge(node)
        session.expunge(enterprise)
    return node, enterprise


@dataclass(frozen=True)
class PublishedKeys:
    added: list[int]  # the versions this publication added (none: nothing changed)
    versions: list[int]  # every version the control plane now holds


def publish_signing_keys(veil: Veil, node: Node, pem: str) -> PublishedKeys:
    """Take the node's signing public keys (every version, PEM) when they extend those held:
    each version held is there with the same key, and only versions above the newest held
    are new.  What was added (nothing when nothing changed); :class:`Conflict` otherwise,
    and nothing changes (a forged or confused request can add a key, never replace or
    remove one, so every signature made keeps verifying)."""
    if len(pem) > MAX_SIGNING_KEYS_CHARS:
        raise InvalidRequest(Msg("the signing keys are longer than {limit} characters",
                                 limit=MAX_SIGNING_KEYS_CHARS))  # fmt: skip
    try:
        offered = public_keys_from_pem(pem)
    except ValueError as exc:
        raise InvalidRequest(Msg("the signing keys are refused: {why}", why=str(exc))) from None
    with veil.db.transaction() as session:
        row = session.get(Node, node.id)
        assert row is not None and row.signing_key is not None  # authenticated: enrolled
        held_pem = row.signing_key
        added = _added_versions(public_keys_from_pem(held_pem), offered)
        if not added:
            return PublishedKeys([], sorted(offered))
        # Written only over what was read: two publications at once cannot both replace it.
        new_pem = "".join(offered[v].to_pem() for v in sorted(offered))
        changed = session.execute(
            update(Node)
            .where(Node.id == row.id, Node.signing_key == held_pem)
            .values(signing_key=new_pem)
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount != 1:
            raise Conflict(Msg("the node's signing keys changed meanwhile; send them again"),
                           code="signing_keys_changed")  # fmt: skip
        audit.record(
            session,
            "node.signing_keys_updated",
            tenant_id=row.enterprise_id,
            resource=f"node:{row.id}",
            details={"added": added, "versions": sorted(offered),
                     "algorithms": {str(v): offered[v].algorithm for v in added}},
        )  # fmt: skip
    return PublishedKeys(added, sorted(offered))


def _added_versions(
    held: dict[int, SigningPublicKey], offered: dict[int, SigningPublicKey]
) -> list[int]:
    """The versions ``offered`` adds to ``held``; Conflict unless it extends them."""
    for version, key in sorted(held.items()):
        if version not in offered:
            raise Conflict(
                Msg(
                    "the signing keys leave out version {version}, which the control plane "
                    "holds: a node's keys are only ever added to, so that its signatures "
                    "keep verifying; send every version",
                    version=version,
                ),
                code="signing_key_missing",
            )
        if offered[version] != key:
            raise Conflict(
                Msg(
                    "signing key version {version} is not the one the control plane holds: "
                    "a key version is never replaced (re-enrol the node if its key server "
                    "was lost)",
                    version=version,
                ),
                code="signing_key_changed",
            )
    newest = max(held)
    older = sorted(v for v in offered if v not in held and v < newest)
    if older:
        raise Conflict(
            Msg(
                "signing key version {version} is older than the newest the control plane "
                "holds ({newest}): only newer versions can be added",
                version=older[0],
                newest=newest,
            ),
            code="signing_key_not_newer",
        )
    return sorted(set(offered) - set(held))


def authenticate(veil: Veil, method: str, path: str, body: bytes, headers: dict[str, str]) -> Node:
    """The enrolled node that signed this request; RequestRejected otherwise (never which
    check failed beyond what the node can fix)."""
    now = veil.clock()
    request = claimed(headers)
    with veil.db.transaction() as session:
        node = session.get(Node, request.node_id)
        if node is None or node.status != NodeStatus.ACTIVE or node.identity_key is None:
            raise RequestRejected(Msg("this node is not enrolled (or was retired)"))
        verify_request(
            load_public_pem(node.identity_key), method, path, body, headers, now.timestamp()
        )
        _spend_nonce(session, node.id, request.nonce, now)
        if node.last_seen_at is None or now - node.last_seen_at >= _SEEN_EVERY:
            node.last_seen_at = now
        session.expunge(node)
    return node


def _spend_nonce(session: Session, node_id: str, nonce: str, now: datetime) -> None:
    """Keep the request's nonce; a nonce kept before is a replay.  One insert: the primary
    key refuses a second (on two API processes at once, the database keeps one)."""
    _purge_nonces(session, now)
    try:
        session.execute(insert(NodeNonce).values(node_id=node_id, nonce=nonce, seen_at=now))
    except IntegrityError:
        raise RequestRejected(Msg("this request was sent before (its nonce is spent)")) from None


def _purge_nonces(session: Session, now: datetime) -> None:
    """Forget the nonces older than the clock window (a request that old is refused by its
    time), every ``_PURGE_EVERY_S`` rather than on each request: the purge reads the whole
    table, which holds every request of the window."""
    global _purged_at
    if time.monotonic() - _purged_at < _PURGE_EVERY_S:
        return
    _purged_at = time.monotonic()
    window = timedelta(seconds=MAX_SKEW_S * 2)
    session.execute(delete(NodeNonce).where(NodeNonce.seen_at < now - window))
