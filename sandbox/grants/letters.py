"""Commitment letters as their users reach them: a provider registers its signing key, an
enterprise issues a grant's letter (Veil signs it for the enterprise), the provider signs it
on its own machine, and the grant comes into force.  Every step is audited.

The letter is signed for the enterprise by the key server's platform key (as receipts):
that is Veil's signing path for an enterprise whose data and grants live on the control
plane.  An enterprise on its own node makes its grants there and issues their letters
there too (this same service on the node's core, so the node's key server signs for it);
issuing one here is refused like every other change of a node's grants (409
``data_on_node``).  The node publishes the letter (``sandbox.nodes.letters``); its provider
reads and signs it here as any other (:func:`get`, :func:`sign`), and the node checks the
signature itself before its grant comes into force there (``node.catalog.letters``).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from i18n import Msg
from keys import InvalidSignature, key_operation
from policies import audit
from policies.capabilities import Capability, require
from policies.errors import Conflict, InvalidRequest, NotFound
from policies.grants import Grant, visible_grant
from policies.letter_format import letter_sha256, sign_for_enterprise, verify_provider_signature
from policies.letters import (
    CommitmentLetter,
    ProviderKey,
    check_obligations,
    letter_body,
    letter_for,
    newest_key,
    register_key,
)
from policies.principals import Principal
from policies.purposes import require_current
from sandbox.runtime.veil import Veil
from sandbox.store.node_models import node_of, refuse_if_on_node

BAD_SIGNATURE = Msg(
    "the signature does not verify: sign the letter exactly as fetched, with the private "
    "key whose public key the letter names ('veil letters sign')"
)


def add_key(veil: Veil, provider: Principal, public_key_pem: str) -> ProviderKey:
    """Register ``provider``'s Ed25519 public key; letters issued from now on name it."""
    require(provider, Capability.SIGN_LETTERS)
    with veil.db.transaction() as session:
        key = register_key(session, provider, public_key_pem, veil.clock())
        audit.record(
            session,
            "provider_key.registered",
            actor=provider,
            resource=f"provider_key:{key.id}",
            details={"fingerprint": key.fingerprint},
        )
    return key


def issue(
    veil: Veil,
    enterprise: Principal,
    grant_id: str,
    retention_days: int,
    insurance_reference: str,
) -> CommitmentLetter:
    """Write and sign (for the enterprise) the letter of one of its grants."""
    require(enterprise, Capability.GRANT_ACCESS)
    reference = check_obligations(retention_days, insurance_reference)
    now = veil.clock()
    with veil.db.transaction() as session:
        refuse_if_on_node(session, enterprise.id)
        grant = visible_grant(session, grant_id, enterprise.id)
        if grant.enterprise_id != enterprise.id:
            raise NotFound("grant", grant_id)
        if letter_for(session, grant.id) is not None:
            raise Conflict(Msg("this grant already has a commitment letter"))
        key = newest_key(session, grant.provider_id)
        if key is None:
            raise Conflict(
                Msg(
                    "the provider has not registered a signing key yet; ask it to run "
                    "'veil letters register-key' first"
                )
            )
        provider = session.get(Principal, grant.provider_id)
        assert provider is not None  # a grant's provider is a principal (foreign key)
        body = letter_body(
            grant=grant,
            enterprise=enterprise,
            provider=provider,
            key=key,
            purposes=require_current(session, grant.purposes),
            retention_days=retention_days,
            insurance_reference=reference,
            now=now,
        )
        with key_operation(f"letter:{body['id']}/1"):  # named in the key server's log
            document = sign_for_enterprise(body, veil.keys.sign)
        letter = CommitmentLetter(
            id=document["id"],
            grant_id=grant.id,
            enterprise_id=enterprise.id,
            provider_id=provider.id,
            provider_key_id=key.id,
            document=document,
            retention_days=retention_days,
            retain_until=grant.valid_until + timedelta(days=retention_days),
            created_at=now,
        )
        session.add(letter)
        try:
            session.flush()  # the unique grant_id: a letter issued meanwhile stops this one
        except IntegrityError:
            raise Conflict(Msg("this grant already has a commitment letter")) from None
        audit.record(
            session,
            "letter.issued",
            actor=enterprise,
            tenant_id=enterprise.id,
            resource=f"grant:{grant.id}",
            details={
                "letter_id": letter.id,
                "provider_id": provider.id,
                "provider_key": key.fingerprint,
                "retention_days": retention_days,
                "letter_sha256": letter_sha256(document),
            },
        )
    return letter


def _visible_letter(session: Session, principal: Principal, grant_id: str) -> CommitmentLetter:
    grant = visible_grant(session, grant_id, principal.id)
    letter = letter_for(session, grant.id)
    if letter is None:
        raise NotFound("commitment letter", grant_id)
    return letter


def get(veil: Veil, principal: Principal, grant_id: str) -> CommitmentLetter:
    """A grant's letter, for its enterprise or its provider (404 for anyone else)."""
    require(principal, Capability.READ_GRANTS)
    with veil.db.read() as session:
        return _visible_letter(session, principal, grant_id)


def enterprise_key(veil: Veil, letter: CommitmentLetter) -> str | None:
    """The public key(s), PEM, that signed ``letter`` for its enterprise when that was the
    enterprise's node (the key it enrolled with); None for the platform's own key."""
    with veil.db.read() as session:
        grant = session.get(Grant, letter.grant_id)
        node = node_of(session, letter.enterprise_id)
        if grant is None or grant.node_signed is None or node is None:
            return None
        return node.signing_key


def sign(veil: Veil, provider: Principal, grant_id: str, signature: str) -> CommitmentLetter:
    """Check the provider's signature of the letter as stored; store it and put the grant
    in force.  A signature that does not verify is refused (422) and the refusal audited."""
    require(provider, Capability.SIGN_LETTERS)
    now = veil.clock()
    with veil.db.transaction() as session:
        letter = _visible_letter(session, provider, grant_id)
        if letter.provider_id != provider.id:
            raise NotFound("commitment letter", grant_id)
        if letter.signed_at is not None:
            raise Conflict(Msg("this letter is signed already"))
        try:
            verify_provider_signature(letter.document, signature)
        except InvalidSignature:
            refused = True
        else:
            refused = False
            letter.provider_signature, letter.signed_at = signature, now
            grant = session.get(Grant, letter.grant_id)
            assert grant is not None
            grant.letter_signed_at = now
            audit.record(
                session,
                "letter.signed",
                actor=provider,
                tenant_id=letter.enterprise_id,
                resource=f"grant:{letter.grant_id}",
                details={"letter_id": letter.id, "letter_sha256": letter_sha256(letter.full())},
            )
    if refused:
        _record_refusal(veil, provider, letter)
        raise InvalidRequest(BAD_SIGNATURE, code="invalid_signature")
    return letter


def _record_refusal(veil: Veil, provider: Principal, letter: CommitmentLetter) -> None:
    with veil.db.transaction() as session:
        audit.record(
            session,
            "letter.signature_refused",
            actor=provider,
            outcome=audit.Outcome.DENIED,
            tenant_id=letter.enterprise_id,
            resource=f"grant:{letter.grant_id}",
            details={"letter_id": letter.id, "reason": str(BAD_SIGNATURE)},
        )


def by_grant(veil: Veil, principal: Principal) -> dict[str, CommitmentLetter]:
    """The letters of the principal's grants (its own as enterprise, or given to it as
    provider), by grant id, for the console's pages."""
    require(principal, Capability.READ_GRANTS)
    with veil.db.read() as session:
        rows = session.scalars(
            select(CommitmentLetter).where(
                (CommitmentLetter.enterprise_id == principal.id)
                | (CommitmentLetter.provider_id == principal.id)
            )
        )
        return {letter.grant_id: letter for letter in rows}


def awaiting(veil: Veil, provider: Principal) -> list[tuple[Grant, CommitmentLetter | None]]:
    """The provider's grants that need its signature: in force only once it signs."""
    require(provider, Capability.READ_GRANTS)
    with veil.db.read() as session:
        grants = session.scalars(
            select(Grant).where(
                Grant.provider_id == provider.id,
                Grant.letter_required.is_(True),
                Grant.letter_signed_at.is_(None),
                Grant.revoked_at.is_(None),
            )
        )
        return [(g, letter_for(session, g.id)) for g in grants]
