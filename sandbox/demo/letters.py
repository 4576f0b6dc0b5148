"""The demo's commitment letters (docs/commitments.md): letters are on by default, so each
grant the demo makes is in force only once its provider signed the enterprise's letter.

The provider's Ed25519 key is made here; only its public half is sent.  Before signing,
the provider checks that the letter was signed for the enterprise (by Veil's platform key
on the control plane, or by the key of the enterprise's node) and that it names the
provider's own key, as ``veil letters sign`` does.
"""

from __future__ import annotations

import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keys.signing import public_keys_from_pem
from policies.letter_format import sign_as_provider, verify_letter
from sandbox.client import ApiError, VeilClient

RETENTION_DAYS = 365
INSURANCE = "PICC-DEMO-2026"
#: How long a node may take to mirror the provider's key and to publish a letter.
NODE_WAIT_S = 60.0


class ProviderLetters:
    """One provider's letter key: registered once, then signs each grant's letter."""

    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()
        self._registered: dict[str, Any] | None = None

    @property
    def public_pem(self) -> str:
        public = self._key.public_key()
        return public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def register(self, provider: VeilClient) -> dict[str, Any]:
        """Register the public half on the control plane (which relays it to the nodes)."""
        if self._registered is None:
            self._registered = provider.register_letter_key(self.public_pem)
        return self._registered

    def commit(self, enterprise: VeilClient, provider: VeilClient, grant_id: str) -> dict[str, Any]:
        """The enterprise issues ``grant_id``'s letter (on the control plane or on its node,
        whichever ``enterprise`` talks to), the provider checks and signs it: the signed
        letter's status.  A node's grant is in force once the node checked the signature."""
        self.register(provider)
        deadline = time.monotonic() + NODE_WAIT_S
        # A node answers 409 until it mirrors the provider's key, and the control plane 404
        # until the node published the letter: both within a few of the node's polls.
        _retry(lambda: enterprise.issue_letter(grant_id, retention_days=RETENTION_DAYS,
                                               insurance_reference=INSURANCE),
               409, deadline)  # fmt: skip
        view = _retry(lambda: provider.get_letter(grant_id), 404, deadline)
        signer = view.get("enterprise_key_pem") or provider.audit_public_key()
        verify_letter(view["letter"], public_keys_from_pem(signer),
                      provider_key_pem=self.public_pem, require_provider=False)  # fmt: skip
        return provider.sign_letter(grant_id, sign_as_provider(view["letter"], self._key))


def _retry(call: Any, status: int, deadline: float) -> dict[str, Any]:
    while True:
        try:
            return dict(call())
        except ApiError as exc:
            if exc.status != status or time.monotonic() > deadline:
                raise
            time.sleep(0.3)
