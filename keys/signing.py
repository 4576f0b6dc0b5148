"""Ed25519 signatures made by the key server, verified offline with the public key alone.

A signature is written ``veil-ed25519:v<key version>:<base64 signature>``; the
version says which public key (after rotations of the signing key) checks it.
Public keys are exported as PEM (SubjectPublicKeyInfo) with the key version in
a header line, so a security officer can verify with no access to Veil or the
key server.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keys.errors import InvalidSignature

_SIGNATURE = re.compile(r"^veil-ed25519:v([1-9][0-9]{0,8}):([A-Za-z0-9+/=]{86,88})$")
_VERSION_LINE = re.compile(r"^# veil-ed25519 key version ([1-9][0-9]{0,8})$", re.MULTILINE)


@dataclass(frozen=True)
class Signature:
    """An Ed25519 signature and the version of the key that made it."""

    key_version: int
    value: bytes

    def to_text(self) -> str:
        return f"veil-ed25519:v{self.key_version}:{base64.b64encode(self.value).decode()}"

    @classmethod
    def from_text(cls, text: str) -> Signature:
        match = _SIGNATURE.fullmatch(text.strip())
        if not match:
            raise InvalidSignature()
        try:
            value = base64.b64decode(match.group(2), validate=True)
        except binascii.Error:
            raise InvalidSignature() from None
        if len(value) != 64:
            raise InvalidSignature()
        return cls(int(match.group(1)), value)


@dataclass(frozen=True)
class SigningPublicKey:
    """One version of the signing key's public half."""

    key_version: int
    raw: bytes  # 32 bytes

    def to_pem(self) -> str:
        pem = (
            Ed25519PublicKey.from_public_bytes(self.raw)
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        return f"# veil-ed25519 key version {self.key_version}\n{pem}"

    @classmethod
    def from_pem(cls, text: str) -> SigningPublicKey:
        match = _VERSION_LINE.search(text)
        if not match:
            raise ValueError(
                "not a Veil signing key: the '# veil-ed25519 key version N' line is missing"
            )
        body = text[text.index("-----BEGIN") :].encode() if "-----BEGIN" in text else b""
        try:
            key = serialization.load_pem_public_key(body)
        except ValueError:
            raise ValueError("not a Veil signing key: the PEM block cannot be read") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not a Veil signing key: the PEM block is not an Ed25519 public key")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(int(match.group(1)), raw)


def verify_signature(
    public_key: SigningPublicKey, message: bytes, signature: Signature | str
) -> None:
    """Return if ``signature`` is ``public_key``'s signature of ``message``; raise otherwise."""
    sig = Signature.from_text(signature) if isinstance(signature, str) else signature
    if sig.key_version != public_key.key_version:
        raise InvalidSignature()
    try:
        Ed25519PublicKey.from_public_bytes(public_key.raw).verify(sig.value, message)
    except (_CryptoInvalidSignature, ValueError):
        raise InvalidSignature() from None


def public_keys_from_pem(text: str) -> dict[int, SigningPublicKey]:
    """Every key in a file of one or more PEM blocks (one per key version), by version."""
    starts = [m.start() for m in _VERSION_LINE.finditer(text)]
    if not starts:
        raise ValueError(
            "not a Veil signing key: the '# veil-ed25519 key version N' line is missing"
        )
    keys = [
        SigningPublicKey.from_pem(text[a:b])
        for a, b in zip(starts, [*starts[1:], None], strict=True)
    ]
    return {key.key_version: key for key in keys}
