"""Commitment letters of enterprises on their own node, as the control plane keeps them.

The enterprise issues its grant's letter on its node, whose key server signs it for the
enterprise (``node.catalog.letters``).  The node publishes it here inside a document its key
server signs; it is stored only if that signature is the node's, the grant is one this node
published, the letter names that grant, its enterprise and its provider, the enterprise's
signature inside the letter is the node's key too, and the provider key it names is one the
provider registered here.  The provider then reads and signs it exactly as any letter
(``sandbox.grants.letters``), and the node takes the provider's signature back
(:func:`signed_letters`), checking it itself before its grant comes into force there.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from i18n import Msg
from keys import InvalidSignature
from keys.signing import public_keys_from_pem
from policies import audit
from policies.errors import Conflict, Forbidden, InvalidRequest, NotFound
from policies.grants import Grant
from policies.letter_format import InvalidLetter, letter_sha256, verify_letter
from policies.letters import CommitmentLetter, ProviderKey
from sandbox.nodes.mirror import checked_id, verify_node_document
from sandbox.runtime.veil import Veil
from sandbox.store.node_models import Node

NOT_THE_NODES = Msg(
    "the letter is not signed for the enterprise by this node's key: issue it on the node"
)


def publish_letter(veil: Veil, node: Node, grant_id: str, signed: dict[str, Any]) -> bool:
    """Store the letter of a grant ``node`` published; False if it was stored already."""
    doc = verify_node_document(node, signed)
    letter = doc.get("letter")
    if doc.get("kind") != "letter" or doc.get("grant_id") != grant_id:
        raise InvalidRequest(Msg("the document is not this grant's letter"))
    if not isinstance(letter, dict) or "provider_signature" in letter:
        raise InvalidRequest(Msg("a node publishes the letter as the enterprise signed it"))
    try:
        # The enterprise's signature is the node's key, as the provider will check it.
        verify_letter(letter, public_keys_from_pem(node.signing_key or ""),
                      require_provider=False)  # fmt: skip
    except (InvalidSignature, InvalidLetter, ValueError):
        raise Forbidden(NOT_THE_NODES, code="bad_signature") from None
    letter_id = checked_id(letter.get("id"), "letter")
    obligations = letter["obligations"]
    with veil.db.transaction() as session:
        grant = session.get(Grant, grant_id)
        if grant is None or grant.enterprise_id != node.enterprise_id or not grant.node_signed:
            raise NotFound("grant", grant_id)
        _check_parties(letter, grant)
        key = session.scalars(
            select(ProviderKey).where(
                ProviderKey.id == str(letter["provider"]["signing_key"]["id"]),
                ProviderKey.provider_id == grant.provider_id,
                ProviderKey.fingerprint == str(letter["provider"]["signing_key"]["fingerprint"]),
            )
        ).first()
        if key is None:
            raise InvalidRequest(Msg("the letter names a key the provider did not register"))
        stored = session.scalars(
            select(CommitmentLetter).where(CommitmentLetter.grant_id == grant_id)
        ).first()
        if stored is not None:
            if stored.document != letter:
                raise Conflict(Msg("this grant already has a commitment letter"))
            return False  # the node sent it again (it does after a restart)
        session.add(
            CommitmentLetter(
                id=letter_id,
                grant_id=grant_id,
                enterprise_id=node.enterprise_id,
                provider_id=grant.provider_id,
                provider_key_id=key.id,
                document=letter,
                retention_days=int(obligations["retention_days"]),
                retain_until=datetime.fromisoformat(str(obligations["retain_until"])),
                created_at=veil.clock(),
            )
        )
        session.flush()
        audit.record(
            session,
            "node.letter_published",
            tenant_id=node.enterprise_id,
            resource=f"grant:{grant_id}",
            details={
                "node_id": node.id,
                "letter_id": letter_id,
                "provider_id": grant.provider_id,
                "provider_key": key.fingerprint,
                "letter_sha256": letter_sha256(letter),
            },
        )
    return True


def _check_parties(letter: dict[str, Any], grant: Grant) -> None:
    """The letter is this grant's, between its enterprise and its provider."""
    if (
        letter["grant"]["id"] != grant.id
        or letter["enterprise"]["id"] != grant.enterprise_id
        or letter["provider"]["id"] != grant.provider_id
    ):
        raise InvalidRequest(Msg("the letter names another grant, enterprise or provider"))


def signed_letters(veil: Veil, node: Node) -> list[dict[str, str]]:
    """The provider's signatures of the node's letters, for the node to check itself."""
    with veil.db.read() as session:
        rows = session.scalars(
            select(CommitmentLetter).where(
                CommitmentLetter.enterprise_id == node.enterprise_id,
                CommitmentLetter.provider_signature.is_not(None),
            )
        )
        return [
            {
                "grant_id": r.grant_id,
                "letter_id": r.id,
                "provider_signature": str(r.provider_signature),
            }
            for r in rows
        ]
