"""The demo's commitment letters (docs/commitments.md): letters are on by default, so each
grant the demo makes is in force only once its provider signed the enterprise's letter.

The provider's Ed25519 key is made here; only its public half is sent.  Before signing,
the provider checks that Veil signed the letter for the enterprise and that it names the
provider's own key, as ``veil letters sign`` does.
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.signing import public_keys_from_pem
from policies.letter_format import sign_as_provider, verify_letter
from sandbox.client import VeilClient

RETENTION_DAYS = 365
INSURANCE = "PICC-DEMO-2026"


class ProviderLetters:
    """One provider's letter key: registered on first use, then signs each grant's letter."""

    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()
        self._registered = False

    @property
    def public_pem(self) -> str:
        return (
            self._key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def commit(self, enterprise: VeilClient, provider: VeilClient, grant_id: str) -> dict[str, Any]:
        """The enterprise issues ``grant_id``'s letter, the provider checks and signs it: the
        signed letter's status (the grant is then in force)."""
        if not self._registered:
            provider.register_letter_key(self.public_pem)
            self._registered = True
        enterprise.issue_letter(grant_id, retention_days=RETENTION_DAYS,
                                insurance_reference=INSURANCE)  # fmt: skip
        letter = provider.get_letter(grant_id)["letter"]
        platform = public_keys_from_pem(provider.audit_public_key())
        verify_letter(letter, platform, provider_key_pem=self.public_pem, require_provider=False)
        return provider.sign_letter(grant_id, sign_as_provider(letter, self._key))
