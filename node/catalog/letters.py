"""Commitment letters on the node: the providers' keys in, the letters out, and the
providers' signatures back, each checked here.

The enterprise issues its grant's letter on its node (``sandbox.grants.letters.issue`` on
the node's core): the node's key server signs it for the enterprise, naming the provider's
key this node mirrors from the control plane's directory.  The node publishes the letter,
signed like its grants; the provider reads and signs it on the control plane.  The node
then reads the provider's signature back and checks it itself, against the provider key
named inside its own copy of the letter, before its grant comes into force here: the
control plane's word that a letter was signed is never taken.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from keys import InvalidSignature
from node.protocol.client import ControlPlane
from node.protocol.signing import sign
from policies import audit
from policies.grants import Grant
from policies.letter_format import (
    InvalidLetter,
    letter_sha256,
    normalised_pem,
    public_key_fingerprint,
    verify_provider_signature,
)
from policies.letters import CommitmentLetter, ProviderKey
from sandbox.runtime.veil import Veil

log = logging.getLogger(__name__)

#: Why the node did not take a provider's signature (audited once per signature).
BAD_SIGNATURE = (
    "the provider's signature relayed by the control plane does not verify with the key "
    "this node's letter names: the grant stays out of force"
)


def mirror_keys(session: Session, provider_id: str, entries: Any) -> None:
    """Keep the provider's registered letter-signing keys (a key never changes once kept;
    one whose fingerprint is not its own is skipped)."""
    for entry in entries if isinstance(entries, list) else []:
        try:
            pem = normalised_pem(str(entry["public_key_pem"]))
            fingerprint = public_key_fingerprint(pem)
            key_id = str(entry["id"])[:40]
            created = datetime.fromisoformat(str(entry["created_at"]))
        except (KeyError, TypeError, ValueError, InvalidLetter):
            log.warning("provider %s: a letter key that is not one was skipped", provider_id)
            continue
        if fingerprint != entry.get("fingerprint") or session.get(ProviderKey, key_id):
            continue
        session.add(ProviderKey(id=key_id, provider_id=provider_id, public_key_pem=pem,
                                fingerprint=fingerprint, created_at=created))  # fmt: skip


def documents(veil: Veil) -> list[dict[str, Any]]:
    """Each letter issued here, as the enterprise signed it (what the node publishes)."""
    with veil.db.read() as session:
        rows = session.scalars(select(CommitmentLetter).order_by(CommitmentLetter.created_at))
        return [{"kind": "letter", "id": r.id, "grant_id": r.grant_id,
                 "letter": dict(r.document)} for r in rows]  # fmt: skip


def publish(veil: Veil, control: ControlPlane, node_id: str, doc: dict[str, Any]) -> None:
    """Send one letter, inside a document the node's key server signs."""
    signed = sign(veil, node_id, doc)
    control.call("PUT", f"/node/v1/letters/{doc['grant_id']}", signed)


def awaiting(veil: Veil) -> bool:
    """Whether a letter issued here waits for its provider's signature."""
    with veil.db.read() as session:
        return (
            session.scalar(
                select(CommitmentLetter.id)
                .where(CommitmentLetter.signed_at.is_(None), CommitmentLetter.shredded_at.is_(None))
                .limit(1)
            )
            is not None
        )


class SignatureDesk:
    """Takes the providers' signatures back from the control plane, checking each here."""

    def __init__(self, veil: Veil, control: ControlPlane) -> None:
        self.veil, self.control = veil, control
        self._refused: set[str] = set()  # digests of signatures refused (audited once)

    def sync(self) -> int:
        """Read the signatures if a letter here awaits one; how many were taken."""
        if not awaiting(self.veil):
            return 0
        taken = 0
        for entry in self.control.call("GET", "/node/v1/letters/signatures") or []:
            if isinstance(entry, dict) and self.take(
                str(entry.get("letter_id")), str(entry.get("grant_id")),
                entry.get("provider_signature"),
            ):  # fmt: skip
                taken += 1
        return taken

    def take(self, letter_id: str, grant_id: str, signature: Any) -> bool:
        """Record the provider's signature if it verifies against this node's letter."""
        digest = hashlib.sha256(f"{letter_id}\n{signature}".encode()).hexdigest()
        if digest in self._refused:
            return False
        now = self.veil.clock()
        with self.veil.db.transaction() as session:
            letter = session.get(CommitmentLetter, letter_id, with_for_update=True)
            if letter is None or letter.grant_id != grant_id or letter.signed_at is not None:
                return False
            try:
                verify_provider_signature(letter.document, signature)
            except (InvalidSignature, InvalidLetter):
                self._refused.add(digest)
                audit.record(
                    session,
                    "letter.signature_refused",
                    outcome=audit.Outcome.DENIED,
                    tenant_id=letter.enterprise_id,
                    resource=f"grant:{letter.grant_id}",
                    details={"letter_id": letter.id, "reason": BAD_SIGNATURE},
                )
                return False
            letter.provider_signature, letter.signed_at = str(signature), now
            grant = session.get(Grant, letter.grant_id)
            assert grant is not None  # a letter's grant (foreign key)
            grant.letter_signed_at = now
            audit.record(
                session,
                "letter.signed",
                tenant_id=letter.enterprise_id,
                resource=f"grant:{letter.grant_id}",
                details={
                    "letter_id": letter.id,
                    "letter_sha256": letter_sha256(letter.full()),
                    "checked_by": "node",
                },
            )
        return True
