"""Signatures made by Veil's key service, verified offline with the public key alone.

Two algorithms, one sequence of key versions (a switch of crypto profile is a
rotation to a key of the other algorithm):

* ``ed25519`` (profile ``standard``): made by the key server's transit engine;
  written ``veil-ed25519:v<key version>:<base64 signature>``.
* ``sm2`` (profile ``gm``, GB/T 32918 with the default signer id): made in Veil's
  memory with a key read from the key server for that one call; written
  ``veil-sm2:v<key version>:<base64 DER signature>``.

The version says which public key checks a signature, and the algorithm must be
that key's: a signature relabelled to the other algorithm is refused.  Public
keys are exported as PEM (SubjectPublicKeyInfo; for SM2, ``id-ecPublicKey`` on
the SM2 curve) after a ``# veil-<algorithm> key version N`` line, so a security
officer can verify with no access to Veil or the key server; one file may hold
keys of both algorithms.
"""

from __future__ import annotations

import base64
import binascii
import re
import textwrap
from dataclasses import dataclass
from typing import Final

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from keys.errors import InvalidSignature
from keys.gm.sm2 import MAX_SIGNATURE_SIZE, PUBLIC_KEY_SIZE, Sm2PublicKey

ED25519: Final = "ed25519"
SM2: Final = "sm2"
ALGORITHMS: Final = (ED25519, SM2)

_SIGNATURE = re.compile(r"^veil-(ed25519|sm2):v([1-9][0-9]{0,8}):([A-Za-z0-9+/=]{4,96})$")
_VERSION_LINE = re.compile(r"^# veil-(ed25519|sm2) key version ([1-9][0-9]{0,8})$", re.MULTILINE)
_MISSING_LINE = "not a Veil signing key: the '# veil-<algorithm> key version N' line is missing"

# SubjectPublicKeyInfo of an SM2 key: SEQUENCE { SEQUENCE { id-ecPublicKey
# (1.2.840.10045.2.1), sm2p256v1 (1.2.156.10197.1.301) }, BIT STRING 04 || x || y }.
# Every such key has this 27-byte prefix and 64 bytes after it: nothing else is accepted.
_SM2_SPKI_PREFIX: Final = bytes.fromhex("3059301306072a8648ce3d020106082a811ccf5501822d03420004")
# The SM2 curve (GB/T 32918.5): y^2 = x^3 + ax + b over GF(p); the group's order n.
_SM2_P: Final = int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFF", 16)
_SM2_A: Final = _SM2_P - 3
_SM2_B: Final = int("28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93", 16)
_SM2_N: Final = int("FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFF7203DF6B21C6052B53BBF40939D54123", 16)


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown signature algorithm {algorithm!r}: one of {ALGORITHMS}")


@dataclass(frozen=True)
class Signature:
    """A signature, the version of the key that made it, and that key's algorithm."""

    key_version: int
    value: bytes
    algorithm: str = ED25519

    def __post_init__(self) -> None:
        _check_algorithm(self.algorithm)

    def to_text(self) -> str:
        value = base64.b64encode(self.value).decode()
        return f"veil-{self.algorithm}:v{self.key_version}:{value}"

    @classmethod
    def from_text(cls, text: str) -> Signature:
        """Parse a signature's text; :class:`~keys.errors.InvalidSignature` if malformed."""
        match = _SIGNATURE.fullmatch(text.strip())
        if not match:
            raise InvalidSignature()
        algorithm, version, encoded = match.groups()
        try:
            value = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise InvalidSignature() from None
        if algorithm == ED25519 and len(value) != 64:
            raise InvalidSignature()
        if algorithm == SM2 and not _is_sm2_der(value):
            raise InvalidSignature()
        return cls(int(version), value, algorithm)


def _der_integer(data: bytes, at: int) -> tuple[int, int] | None:
    """The positive, minimally encoded INTEGER at ``data[at:]`` below n, and where it ends."""
    if data[at : at + 1] != b"\x02" or at + 2 > len(data):
        return None
    size, start = data[at + 1], at + 2
    body = data[start : start + size]
    if not 1 <= size <= 33 or len(body) != size or body[0] & 0x80:
        return None
    if size > 1 and body[0] == 0 and not body[1] & 0x80:
        return None  # a leading zero that is not needed
    value = int.from_bytes(body, "big")
    return (value, start + size) if 1 <= value < _SM2_N else None


def _is_sm2_der(value: bytes) -> bool:
    """Whether ``value`` is exactly a DER ``SEQUENCE { r INTEGER, s INTEGER }`` of SM2."""
    if not 8 <= len(value) <= MAX_SIGNATURE_SIZE or value[0] != 0x30:
        return False
    if value[1] != len(value) - 2:
        return False
    r = _der_integer(value, 2)
    s = _der_integer(value, r[1]) if r is not None else None
    return s is not None and s[1] == len(value)


def _sm2_point_on_curve(raw: bytes) -> bool:
    x, y = int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")
    if not (x < _SM2_P and y < _SM2_P):
        return False
    return (y * y - (x * x * x + _SM2_A * x + _SM2_B)) % _SM2_P == 0


@dataclass(frozen=True)
class SigningPublicKey:
    """One version of the signing key's public half: 32 bytes (Ed25519) or 64 ``x || y`` (SM2)."""

    key_version: int
    raw: bytes
    algorithm: str = ED25519

    def __post_init__(self) -> None:
        _check_algorithm(self.algorithm)

    def to_pem(self) -> str:
        if self.algorithm == SM2:
            body = base64.b64encode(_SM2_SPKI_PREFIX + self.raw).decode()
            lines = "\n".join(textwrap.wrap(body, 64))
            pem = f"-----BEGIN PUBLIC KEY-----\n{lines}\n-----END PUBLIC KEY-----\n"
        else:
            pem = (
                Ed25519PublicKey.from_public_bytes(self.raw)
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                .decode()
            )
        return f"# veil-{self.algorithm} key version {self.key_version}\n{pem}"

    @classmethod
    def from_pem(cls, text: str) -> SigningPublicKey:
        """Read one key (its version line, then its PEM block); ``ValueError`` otherwise."""
        match = _VERSION_LINE.search(text)
        if not match:
            raise ValueError(_MISSING_LINE)
        algorithm, version = match.group(1), int(match.group(2))
        body = text[text.index("-----BEGIN") :] if "-----BEGIN" in text else ""
        if algorithm == SM2:
            return cls(version, _sm2_raw_from_pem(body), SM2)
        try:
            key = serialization.load_pem_public_key(body.encode())
        except ValueError:
            raise ValueError("not a Veil signing key: the PEM block cannot be read") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not a Veil signing key: the PEM block is not an Ed25519 public key")
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return cls(version, raw)


def _sm2_raw_from_pem(block: str) -> bytes:
    """The 64 bytes ``x || y`` of an SM2 SubjectPublicKeyInfo PEM block, read strictly
    (``cryptography`` cannot load the SM2 curve)."""
    lines = block.strip().splitlines()
    if (
        len(lines) < 3
        or lines[0] != "-----BEGIN PUBLIC KEY-----"
        or lines[-1] != "-----END PUBLIC KEY-----"
    ):
        raise ValueError("not a Veil signing key: the PEM block cannot be read")
    try:
        der = base64.b64decode("".join(line.strip() for line in lines[1:-1]), validate=True)
    except binascii.Error:
        raise ValueError("not a Veil signing key: the PEM block cannot be read") from None
    raw = der[len(_SM2_SPKI_PREFIX) :]
    if not der.startswith(_SM2_SPKI_PREFIX) or len(raw) != PUBLIC_KEY_SIZE:
        raise ValueError("not a Veil signing key: the PEM block is not an SM2 public key")
    if not _sm2_point_on_curve(raw):
        raise ValueError("not a Veil signing key: the SM2 public key is not on the curve")
    return raw


def verify_signature(
    public_key: SigningPublicKey, message: bytes, signature: Signature | str
) -> None:
    """Return if ``signature`` is ``public_key``'s signature of ``message``; raise otherwise.

    The signature must name the key's version and algorithm: anything else is
    refused with the same :class:`~keys.errors.InvalidSignature`.
    """
    sig = Signature.from_text(signature) if isinstance(signature, str) else signature
    if sig.key_version != public_key.key_version or sig.algorithm != public_key.algorithm:
        raise InvalidSignature()
    if public_key.algorithm == SM2:
        if not _is_sm2_der(sig.value):
            raise InvalidSignature()
        try:
            key = Sm2PublicKey(public_key.raw)
        except ValueError:
            raise InvalidSignature() from None
        key.verify(sig.value, message)
        return
    try:
        Ed25519PublicKey.from_public_bytes(public_key.raw).verify(sig.value, message)
    except (_CryptoInvalidSignature, ValueError):
        raise InvalidSignature() from None


def public_keys_from_pem(text: str) -> dict[int, SigningPublicKey]:
    """Every key in a file of one or more PEM blocks (one per key version, of either
    algorithm), by version; ``ValueError`` if a version appears twice."""
    starts = [m.start() for m in _VERSION_LINE.finditer(text)]
    if not starts:
        raise ValueError(_MISSING_LINE)
    keys: dict[int, SigningPublicKey] = {}
    for a, b in zip(starts, [*starts[1:], None], strict=True):
        key = SigningPublicKey.from_pem(text[a:b])
        if key.key_version in keys:
            raise ValueError(
                f"not a Veil signing key file: key version {key.key_version} appears twice"
            )
        keys[key.key_version] = key
    return keys
