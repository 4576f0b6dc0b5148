"""SM2 signatures (GB/T 32918.2), through ``gmssl-pyx`` (a C extension over GmSSL).

Why this library, and what else was compared: ``docs/keys.md``, "The
national-cryptography (国密) primitives".  This module keeps it at the edge, as
``keys.signing`` keeps ``cryptography``'s Ed25519: checks **raise**
:class:`keys.InvalidSignature` (the library returns a ``bool``), and every
library error on a signature, a key or a message becomes that same error.

* Keys: a private key is 32 bytes; a public key 64 bytes ``x || y`` (an
  uncompressed ``04 || x || y`` is accepted too).
* Signatures are DER ``SEQUENCE { r INTEGER, s INTEGER }`` (GB/T 35276), at most
  72 bytes, over ``SM3(Z || message)`` where ``Z`` binds the signer's id (the
  standard's default ``1234567812345678`` unless given) and public key.
* The library refuses to sign an empty message; so does :meth:`Sm2PrivateKey.sign`
  (``ValueError``).  Veil signs no empty message.
* GmSSL writes a line to standard error for each verification that fails.

Veil signs with SM2 under the ``gm`` crypto profile (``keys.signing``,
``keys._sm2_key``).
"""

from __future__ import annotations

import gmssl_pyx

from keys.errors import InvalidSignature

#: The default signer id of GB/T 35276 (and of the standard's examples).
DEFAULT_SIGNER_ID = b"1234567812345678"
PRIVATE_KEY_SIZE = 32
PUBLIC_KEY_SIZE = 64
MAX_SIGNATURE_SIZE = 72
_MAX_SIGNER_ID_SIZE = 8191  # Z encodes the id's length in bits as 16 bits
_PROBE = b"veil.sm2.key-pair-check"
_LIBRARY_ERRORS = (gmssl_pyx.InvalidValueError, gmssl_pyx.GmsslInnerError)


def _check_signer_id(signer_id: bytes) -> None:
    if not 1 <= len(signer_id) <= _MAX_SIGNER_ID_SIZE:
        raise ValueError(f"the SM2 signer id must be 1 to {_MAX_SIGNER_ID_SIZE} bytes")


class Sm2PublicKey:
    """An SM2 public key: verifies signatures, raising on any mismatch."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        if len(raw) == PUBLIC_KEY_SIZE + 1 and raw[0] == 4:
            raw = raw[1:]
        if len(raw) != PUBLIC_KEY_SIZE:
            raise ValueError("an SM2 public key is 64 bytes (x || y), or 65 starting with 04")
        self._raw = bytes(raw)

    @property
    def raw(self) -> bytes:
        """The 64 bytes ``x || y``."""
        return self._raw

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sm2PublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"Sm2PublicKey({self._raw.hex()})"

    def verify(
        self, signature: bytes, message: bytes, *, signer_id: bytes = DEFAULT_SIGNER_ID
    ) -> None:
        """Return if ``signature`` is this key's signature of ``message``; raise otherwise."""
        if not 0 < len(signature) <= MAX_SIGNATURE_SIZE or not message:
            raise InvalidSignature()
        _check_signer_id(signer_id)
        try:
            ok = gmssl_pyx.sm2_verify(self._raw, message, signature, signer_id=signer_id)
        except _LIBRARY_ERRORS:
            raise InvalidSignature() from None
        if ok is not True:
            raise InvalidSignature()


class Sm2PrivateKey:
    """An SM2 key pair that signs.  Its secret half never appears in ``repr``."""

    __slots__ = ("_private", "_public")

    def __init__(self, private: bytes, public: Sm2PublicKey) -> None:
        """Pair ``private`` with ``public``; raise ``ValueError`` if they do not belong together."""
        if len(private) != PRIVATE_KEY_SIZE:
            raise ValueError("an SM2 private key is 32 bytes")
        self._private = bytes(private)
        self._public = public
        # The library derives the public key from the private one when signing,
        # so a wrong pairing would sign fine and fail every verification later.
        try:
            public.verify(self.sign(_PROBE), _PROBE)
        except (InvalidSignature, ValueError):
            raise ValueError("the SM2 private and public keys do not belong together") from None

    @classmethod
    def generate(cls) -> Sm2PrivateKey:
        """A fresh key pair from GmSSL's random source."""
        public, private = gmssl_pyx.sm2_key_generate()
        return cls(private, Sm2PublicKey(public))

    def __repr__(self) -> str:
        return f"Sm2PrivateKey(public={self._public.raw.hex()})"

    def private_bytes(self) -> bytes:
        """The 32-byte secret scalar (for wrapping by a key server or an HSM; handle with care)."""
        return self._private

    def public_key(self) -> Sm2PublicKey:
        return self._public

    def sign(self, message: bytes, *, signer_id: bytes = DEFAULT_SIGNER_ID) -> bytes:
        """The DER signature of ``message`` (a fresh random ``k`` each time)."""
        if not message:
            raise ValueError("SM2 signs no empty message")
        _check_signer_id(signer_id)
        try:
            signature: bytes = gmssl_pyx.sm2_sign(
                self._private, self._public.raw, message, signer_id=signer_id
            )
        except _LIBRARY_ERRORS:
            raise ValueError("the SM2 private key is not valid") from None
        return signature
