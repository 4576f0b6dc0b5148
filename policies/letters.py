"""Commitment letters (安全承诺函) and the providers' signing keys: the records and their rules.

An enterprise issues a letter for one of its grants: it names the enterprise, the
provider and the provider's registered signing key, the grant's terms, its purposes (from
the city's vocabulary, with their names), the obligations (no third-party sharing, use
only for the listed purposes, results and models shredded at the end of the retention
period) and an insurance reference.  A grant made while letters are required
(``Grant.letter_required``) is in force only once the provider signed its letter
(``Grant.letter_signed_at``).  The format and both signatures: :mod:`policies.letter_format`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

from sqlalchemy import JSON, ForeignKey, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from i18n import Msg
from policies.db import Base, UTCDateTime, new_id, utcnow
from policies.errors import Conflict, InvalidRequest
from policies.grants import Grant
from policies.letter_format import FORMAT, normalised_pem, public_key_fingerprint
from policies.principals import Principal
from policies.purposes import Purpose

MAX_RETENTION_DAYS: Final = 3650
INSURANCE_MAX: Final = 200
#: The undertaking, in both languages: what the provider commits to by signing.
UNDERTAKING: Final = {
    "zh": (
        "服务商承诺：仅为本函所列用途使用授权数据及其分析结果；"  # noqa: RUF001
        "不向任何第三方提供、共享或转让；"  # noqa: RUF001
        "在保留期届满时删除由本授权产生的全部结果与模型；"  # noqa: RUF001
        "已就数据安全责任投保（保险凭证见本函）。"  # noqa: RUF001
    ),
    "en": (
        "The provider undertakes to use the granted data and the results derived from it "
        "only for the purposes listed in this letter; not to provide, share or transfer "
        "them to any third party; to have every result and model derived under this grant "
        "deleted when the retention period ends; and to hold insurance for its data-security "
        "liability (reference in this letter)."
    ),
}


class ProviderKey(Base):
    """A provider's Ed25519 public key, registered to sign commitment letters."""

    __tablename__ = "provider_signing_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    public_key_pem: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CommitmentLetter(Base):
    """One grant's letter: the document as the enterprise signed it, and the provider's
    signature once given."""

    __tablename__ = "commitment_letters"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.id"), unique=True)
    enterprise_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    provider_id: Mapped[str] = mapped_column(ForeignKey("principals.id"), index=True)
    provider_key_id: Mapped[str] = mapped_column(ForeignKey("provider_signing_keys.id"))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    retention_days: Mapped[int] = mapped_column(Integer)
    retain_until: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    provider_signature: Mapped[str | None] = mapped_column(Text, default=None)
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    shredded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def full(self) -> dict[str, Any]:
        """The letter as a file: the document, with the provider's signature once given."""
        letter = dict(self.document)
        if self.provider_signature is not None:
            letter["provider_signature"] = self.provider_signature
        return letter


def register_key(session: Session, provider: Principal, pem: str, now: datetime) -> ProviderKey:
    """Store ``provider``'s public key (:class:`InvalidLetter` if it is not Ed25519 PEM)."""
    clean = normalised_pem(pem)
    key = ProviderKey(
        id=new_id("pkey"),
        provider_id=provider.id,
        public_key_pem=clean,
        fingerprint=public_key_fingerprint(clean),
        created_at=now,
    )
    session.add(key)
    session.flush()
    return key


def newest_key(session: Session, provider_id: str) -> ProviderKey | None:
    """The provider's most recently registered key (a letter names the newest)."""
    return session.scalars(
        select(ProviderKey)
        .where(ProviderKey.provider_id == provider_id)
        .order_by(ProviderKey.created_at.desc(), ProviderKey.id)
    ).first()


def letter_for(session: Session, grant_id: str) -> CommitmentLetter | None:
    return session.scalars(
        select(CommitmentLetter).where(CommitmentLetter.grant_id == grant_id)
    ).first()


def check_obligations(retention_days: int, insurance_reference: str) -> str:
    """The insurance reference, trimmed, once both are acceptable."""
    if not 1 <= retention_days <= MAX_RETENTION_DAYS:
        raise InvalidRequest(
            Msg(
                "retention_days must be a whole number of days from 1 to {most}",
                most=MAX_RETENTION_DAYS,
            )
        )
    reference = insurance_reference.strip()
    if not reference or len(reference) > INSURANCE_MAX or not reference.isprintable():
        raise InvalidRequest(
            Msg("insurance_reference must be 1-200 printable characters (the policy number)")
        )
    return reference


def letter_body(
    *,
    grant: Grant,
    enterprise: Principal,
    provider: Principal,
    key: ProviderKey,
    purposes: list[Purpose],
    retention_days: int,
    insurance_reference: str,
    now: datetime,
) -> dict[str, Any]:
    """The letter's fields before the enterprise signs (see :mod:`policies.letter_format`).

    The retention period runs from the end of the grant's validity: results and models
    derived under the grant are kept for ``retention_days`` after it, then shredded.
    """
    if grant.revoked_at is not None:
        raise Conflict(Msg("a revoked grant cannot get a commitment letter"))
    retain_until = grant.valid_until + timedelta(days=retention_days)
    return {
        "format": FORMAT,
        "id": new_id("ltr"),
        "issued_at": _time(now),
        "issuer": {"name": "Veil", "signing_key": "veil-platform/audit-signing"},
        "enterprise": {"id": enterprise.id, "name": enterprise.name},
        "provider": {
            "id": provider.id,
            "name": provider.name,
            "signing_key": {
                "id": key.id,
                "fingerprint": key.fingerprint,
                "public_key_pem": key.public_key_pem,
            },
        },
        "grant": {
            "id": grant.id,
            "dataset_ids": list(grant.dataset_ids),
            "columns": list(grant.columns),
            "tiers": list(grant.tiers),
            "valid_from": _time(grant.valid_from),
            "valid_until": _time(grant.valid_until),
        },
        "purposes": [
            {"code": p.code, "name_zh": p.name_zh, "name_en": p.name_en} for p in purposes
        ],
        "obligations": {
            "purposes_only": True,
            "no_third_party_sharing": True,
            "retention_days": retention_days,
            "retain_until": _time(retain_until),
            "shred_after_retention": True,
        },
        "insurance_reference": insurance_reference,
        "undertaking": dict(UNDERTAKING),
    }


def _time(value: datetime) -> str:
    return value.isoformat()
