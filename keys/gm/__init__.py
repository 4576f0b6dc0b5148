"""The national-cryptography (国密) primitives: SM4-GCM streaming, SM3, SM2.

The national-cryptography profile's algorithms (``VEIL_CRYPTO_PROFILE=gm``,
``keys.profile``), tested against the standards' published vectors and benchmarked.
``KeyService`` encrypts with SM4-GCM and signs with SM2 under that profile, and the audit
chain hashes with SM3; see ``docs/keys.md``, "The national-cryptography (国密) profile".

* :func:`encrypt_stream_sm4` / :func:`decrypt_stream_sm4` — version 2 of the
  streaming format (``docs/encryption-format.md``): SM4-GCM (GB/T 32907) in the
  same STREAM construction as the AES-256-GCM version 1.
* :func:`sm3`, :func:`sm3_chain_hash` — SM3 (GB/T 32905), and the audit chain's
  step with SM3 in place of SHA-256.
* :class:`Sm2PrivateKey`, :class:`Sm2PublicKey` — SM2 signatures (GB/T 32918).
"""

from keys.gm._sm4_stream import (
    ALGORITHM_SM4GCM_STREAM,
    FORMAT_VERSION_SM4,
    SM4_KEY_SIZE,
    decrypt_stream_sm4,
    encrypt_stream_sm4,
)
from keys.gm.sm2 import DEFAULT_SIGNER_ID, Sm2PrivateKey, Sm2PublicKey
from keys.gm.sm3 import sm3, sm3_chain_hash

__all__ = [
    "ALGORITHM_SM4GCM_STREAM",
    "DEFAULT_SIGNER_ID",
    "FORMAT_VERSION_SM4",
    "SM4_KEY_SIZE",
    "Sm2PrivateKey",
    "Sm2PublicKey",
    "decrypt_stream_sm4",
    "encrypt_stream_sm4",
    "sm3",
    "sm3_chain_hash",
]
