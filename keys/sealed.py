"""Sealing bytes to one party's X25519 key, bound to a context (an HPKE-style base mode).

``seal(public, plain, context)`` makes a fresh X25519 key pair, derives an AES-256-GCM key
from the Diffie-Hellman secret with HKDF-SHA256 (the info binds the context and both public
keys), and encrypts with the context as associated data.  Only the holder of the matching
private key opens it (``open_sealed``), and only under the same context: a box relayed into
another run, phase or direction fails to open.  Supply-chain analyses use it to send the
intersection to the other node and the approved columns of the intersecting rows to the
compute run's ephemeral key (``node.work.pairs``); the relay (the control plane) sees only
the box's length.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from keys.errors import KeysError

_VERSION = b"veil-sealed-1"
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class SealedError(KeysError):
    """The box is malformed, for another key or context, or was altered."""


def public_bytes(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(*_RAW)


def _key(secret: bytes, ephemeral: bytes, recipient: bytes, context: bytes) -> bytes:
    info = b"|".join((_VERSION, context, ephemeral, recipient))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def seal(recipient: bytes, plain: bytes, context: bytes) -> bytes:
    """``plain`` sealed to the raw X25519 public key ``recipient`` under ``context``."""
    try:
        peer = X25519PublicKey.from_public_bytes(recipient)
    except ValueError:
        raise SealedError("the recipient's key is not an X25519 public key") from None
    ephemeral = X25519PrivateKey.generate()
    mine = public_bytes(ephemeral)
    key = _key(ephemeral.exchange(peer), mine, recipient, context)
    nonce = os.urandom(12)
    return mine + nonce + AESGCM(key).encrypt(nonce, plain, _VERSION + context)


def open_sealed(private: X25519PrivateKey, box: bytes, context: bytes) -> bytes:
    """The bytes sealed in ``box`` to ``private``'s public key under ``context``."""
    if len(box) < 32 + 12 + 16:
        raise SealedError("the sealed box is too short")
    ephemeral, nonce, body = box[:32], box[32:44], box[44:]
    try:
        secret = private.exchange(X25519PublicKey.from_public_bytes(ephemeral))
        key = _key(secret, ephemeral, public_bytes(private), context)
        return AESGCM(key).decrypt(nonce, body, _VERSION + context)
    except (InvalidTag, ValueError):
        raise SealedError("the sealed box does not open with this key and context") from None
