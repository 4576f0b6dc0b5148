"""SM3 (GB/T 32905), and the audit chain's hash step with SM3 in place of SHA-256.

``sm3_chain_hash`` mirrors ``policies.audit.chain_hash`` exactly —
``hash_n = H(hash_{n-1} || canonical JSON of event n)`` as lower-case hex — so
that a chain kept under the national profile differs only in ``H``.  SM3 comes
from ``cryptography`` (OpenSSL's implementation); the audit chain uses
``hashlib``'s SM3 where Python's OpenSSL has it and this one else
(``policies.audit.HASHERS``, held equal by the tests).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes

SM3_DIGEST_SIZE = 32


def sm3(data: bytes) -> bytes:
    """The 32-byte SM3 digest of ``data``."""
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def sm3_chain_hash(prev_hash: str, canonical: bytes) -> str:
    """The next link of a hash chain: SM3 of the previous hash's bytes and the event's."""
    return sm3(bytes.fromhex(prev_hash) + canonical).hex()
