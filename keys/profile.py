"""Which algorithms a deployment uses: its crypto profile (``VEIL_CRYPTO_PROFILE``).

* ``standard`` (the default): AES-256-GCM data encryption (streaming format
  version 1, data keys from OpenBao's transit engine), a SHA-256 audit chain,
  Ed25519 signatures made by OpenBao's transit engine.
* ``gm`` (国密, the national algorithms): SM4-GCM data encryption (streaming
  format version 2), an SM3 audit chain, SM2 signatures.  ``docs/keys.md``
  says where the SM keys live and what that means for a compliance assessment.

The profile decides what is **made** from now on.  What was made under the other
profile stays readable and verifiable: every stored object, wrapped key, chain
event and signature says which algorithm made it.
"""

from __future__ import annotations

import enum


class CryptoProfile(enum.StrEnum):
    """The algorithms new encryptions, chain events and signatures use."""

    STANDARD = "standard"
    GM = "gm"


#: How a wrapped data key of each profile starts: ``vault:v<N>:`` (OpenBao transit) or
#: ``veil-sm4:v<N>:`` (an SM4 key-encryption key).
_WRAPPED_PREFIXES = {"vault:": CryptoProfile.STANDARD, "veil-sm4:": CryptoProfile.GM}  # keys._kek


def wrapped_key_profile(wrapped_key: str) -> CryptoProfile | None:
    """The profile whose key wrapped ``wrapped_key``; None if it is neither's."""
    for prefix, profile in _WRAPPED_PREFIXES.items():
        if wrapped_key.startswith(prefix):
            return profile
    return None
