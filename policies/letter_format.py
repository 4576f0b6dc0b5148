"""A commitment letter's format: canonical bytes, both signatures, offline verification.

A letter (``veil-commitment-letter/1``) is one JSON object.  Two signatures cover it:

- the **enterprise's**, made by Veil's signing path for the enterprise (the key server's
  Ed25519 platform key, as receipts; ``veil audit public-key`` exports it), over
  ``b"veil/commitment-letter/enterprise\\n"`` + canonical JSON of every field but
  ``enterprise_signature`` and ``provider_signature``; the letter names the provider's
  registered public key, so that key is covered too;
- the **provider's**, made with the private key whose public half the letter names, over
  ``b"veil/commitment-letter/provider\\n"`` + canonical JSON of every field but
  ``provider_signature`` (so it covers the enterprise's signature as well).

Nothing here needs the server: ``veil letters verify`` uses it with the letter file and
the platform's public key alone.  Checks raise; there is no boolean answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any, Final

from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from i18n import Msg
from keys import InvalidSignature, Signature, SigningPublicKey, verify_signature
from policies.errors import InvalidRequest

FORMAT: Final = "veil-commitment-letter/1"
ENTERPRISE_CONTEXT: Final = b"veil/commitment-letter/enterprise\n"
PROVIDER_CONTEXT: Final = b"veil/commitment-letter/provider\n"
PROVIDER_SIGNATURE_PREFIX: Final = "ed25519:"


class InvalidLetter(InvalidRequest):
    """A letter that cannot be checked: not a letter, unsigned, or no key for its version."""


def canonical(value: Mapping[str, Any]) -> bytes:
    """Sorted keys, no spaces, ASCII: the encoding receipts and the audit log use."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def dumps(letter: Mapping[str, Any]) -> str:
    """The letter as a readable JSON file (verification does not depend on the layout)."""
    return json.dumps(letter, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def letter_sha256(letter: Mapping[str, Any]) -> str:
    """SHA-256 of the whole letter in canonical form (what the audit events record)."""
    return hashlib.sha256(canonical(letter)).hexdigest()


def enterprise_message(letter: Mapping[str, Any]) -> bytes:
    """What the enterprise's signature covers."""
    body = {
        k: v for k, v in letter.items() if k not in ("enterprise_signature", "provider_signature")
    }
    return ENTERPRISE_CONTEXT + canonical(body)


def provider_message(letter: Mapping[str, Any]) -> bytes:
    """What the provider's signature covers: the letter as the enterprise signed it."""
    body = {k: v for k, v in letter.items() if k != "provider_signature"}
    return PROVIDER_CONTEXT + canonical(body)


def sign_for_enterprise(
    body: Mapping[str, Any], sign: Callable[[bytes], Signature]
) -> dict[str, Any]:
    """``body`` with the enterprise's signature (``sign``: the key server's platform key)."""
    signature = sign(enterprise_message(body))
    return {**body, "enterprise_signature": signature.to_text()}


# ---------------------------------------------------------------- the provider's key


def public_key_fingerprint(pem: str) -> str:
    """SHA-256 (hex) of the raw 32-byte Ed25519 public key in ``pem``."""
    return hashlib.sha256(_raw_public(load_provider_key(pem))).hexdigest()


def load_provider_key(pem: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo); :class:`InvalidLetter` else."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidLetter(
            Msg(
                "not an Ed25519 public key in PEM form; write one with "
                "'veil letters keygen' (or: openssl genpkey -algorithm ed25519)"
            )
        )
    return key


def normalised_pem(pem: str) -> str:
    """The key in ``pem`` written out again, one form for every input layout."""
    return (
        load_provider_key(pem)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign_as_provider(letter: Mapping[str, Any], private_key: Ed25519PrivateKey) -> str:
    """The provider's signature of ``letter`` (made on the provider's machine)."""
    value = private_key.sign(provider_message(letter))
    return PROVIDER_SIGNATURE_PREFIX + base64.b64encode(value).decode()


def verify_provider_signature(letter: Mapping[str, Any], signature: str) -> None:
    """Return if ``signature`` is the letter's named provider key's signature; else raise
    :class:`keys.InvalidSignature` (one answer for every malformed or wrong signature)."""
    pem = _provider_pem(letter)
    if not isinstance(signature, str) or not signature.startswith(PROVIDER_SIGNATURE_PREFIX):
        raise InvalidSignature()
    encoded = signature[len(PROVIDER_SIGNATURE_PREFIX) :]
    try:
        value = base64.b64decode(encoded, validate=True)
        # One spelling per signature: base64's unused low bits could otherwise be changed
        # without changing the signature, and the file would differ yet verify.
        if base64.b64encode(value).decode() != encoded:
            raise ValueError("not canonical base64")
        load_provider_key(pem).verify(value, provider_message(letter))
    except (binascii.Error, ValueError, InvalidLetter, _CryptoInvalidSignature):
        raise InvalidSignature() from None


def _provider_pem(letter: Mapping[str, Any]) -> str:
    provider = letter.get("provider")
    key = provider.get("signing_key") if isinstance(provider, Mapping) else None
    pem = key.get("public_key_pem") if isinstance(key, Mapping) else None
    if not isinstance(pem, str):
        raise InvalidLetter(Msg("the letter names no provider signing key"))
    return pem


# ---------------------------------------------------------------- offline verification


def verify_letter(
    letter: Mapping[str, Any],
    platform_keys: Mapping[int, SigningPublicKey],
    *,
    provider_key_pem: str | None = None,
    require_provider: bool = True,
) -> None:
    """Return if the letter is unaltered and signed by both parties; raise otherwise.

    ``platform_keys``: the platform's public keys by version (``veil audit public-key``).
    ``provider_key_pem``: if given, the provider key the letter names must be this one.
    Raises :class:`InvalidLetter` when it cannot be checked and :class:`keys.InvalidSignature`
    when it was altered or signed by another key.
    """
    if not isinstance(letter, Mapping) or letter.get("format") != FORMAT:
        raise InvalidLetter(
            Msg("not a Veil commitment letter (its format must be '{format}')", format=FORMAT)
        )
    text = letter.get("enterprise_signature")
    if not isinstance(text, str):
        raise InvalidLetter(Msg("the letter has no enterprise signature"))
    signature = Signature.from_text(text)
    if signature.to_text() != text:  # one spelling per signature, as the provider's
        raise InvalidSignature()
    key = platform_keys.get(signature.key_version)
    if key is None:
        raise InvalidLetter(
            Msg(
                "no public key of version {key_version} was given; export every version "
                "with 'veil audit public-key'",
                key_version=signature.key_version,
            )
        )
    verify_signature(key, enterprise_message(letter), signature)
    named = _provider_pem(letter)
    fingerprint = letter["provider"]["signing_key"].get("fingerprint")
    if fingerprint != public_key_fingerprint(named):
        raise InvalidSignature()
    if provider_key_pem is not None and public_key_fingerprint(provider_key_pem) != fingerprint:
        raise InvalidLetter(
            Msg("the letter names another provider key than the one given with --provider-key")
        )
    provider_signature = letter.get("provider_signature")
    if provider_signature is None and not require_provider:
        return
    if not isinstance(provider_signature, str):
        raise InvalidLetter(Msg("the provider has not signed this letter yet"))
    verify_provider_signature(letter, provider_signature)
