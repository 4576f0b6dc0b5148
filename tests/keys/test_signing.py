"""Ed25519 signatures from the key server, verified offline with the exported public key."""

from __future__ import annotations

import pytest

from keys import InvalidSignature, KeyService, Signature, SigningPublicKey, verify_signature

CHECKPOINT = b"veil/audit\n1024\nq1w2e3r4t5y6\n"


@pytest.mark.integration
def test_signature_verifies_offline_with_the_public_key_alone(keys: KeyService, tmp_path) -> None:  # type: ignore[no-untyped-def]
    signature = keys.sign(CHECKPOINT).to_text()
    pem = tmp_path / "veil.pub.pem"
    pem.write_text(keys.signing_public_key().to_pem())
    # From here on nothing touches the key server.
    public_key = SigningPublicKey.from_pem(pem.read_text())
    verify_signature(public_key, CHECKPOINT, signature)
    with pytest.raises(InvalidSignature):
        verify_signature(public_key, CHECKPOINT.replace(b"1024", b"1023"), signature)
    other = Signature.from_text(signature)
    with pytest.raises(InvalidSignature):  # a signature that names another key version
        verify_signature(public_key, CHECKPOINT, Signature(other.key_version + 1, other.value))
    flipped = bytes([other.value[0] ^ 1]) + other.value[1:]
    with pytest.raises(InvalidSignature):
        verify_signature(public_key, CHECKPOINT, Signature(other.key_version, flipped))


@pytest.mark.parametrize(
    "text",
    [
        "",
        "vault:v1:abc",
        "veil-ed25519:v0:" + "A" * 88,
        "veil-ed25519:v1:" + "A" * 80,
        "veil-ed25519:v1:" + "!" * 88,
    ],
)
def test_malformed_signatures_are_refused(text: str) -> None:
    with pytest.raises(InvalidSignature):
        Signature.from_text(text)


def test_public_key_pem_round_trip_and_bad_input() -> None:
    key = SigningPublicKey(3, bytes(range(32)))
    assert SigningPublicKey.from_pem(key.to_pem()) == key
    with pytest.raises(ValueError, match="key version"):
        SigningPublicKey.from_pem(key.to_pem().split("\n", 1)[1])
    with pytest.raises(ValueError, match="PEM"):
        SigningPublicKey.from_pem("# veil-ed25519 key version 1\n-----BEGIN PUBLIC KEY-----\nxx\n")
