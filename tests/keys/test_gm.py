"""The national-cryptography primitives against the standards' published vectors, and
the SM4-GCM streaming format's construction (its round trips and tamper checks run with
the AES format's, in ``test_stream_format.py``)."""

from __future__ import annotations

import hashlib
import io
import os
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from keys import InvalidSignature
from keys._stream import HEADER, TAG_SIZE, object_context
from keys.gm import (
    DEFAULT_SIGNER_ID,
    Sm2PrivateKey,
    Sm2PublicKey,
    decrypt_stream_sm4,
    encrypt_stream_sm4,
    sm3,
    sm3_chain_hash,
)
from keys.gm._sm4_stream import _sm4_gcm
from policies.audit import chain_hash

# --- GB/T 32907-2016 (SM4), appendix A -------------------------------------------------

SM4_KEY = bytes.fromhex("0123456789abcdeffedcba9876543210")


def _sm4_ecb(key: bytes) -> Cipher[modes.ECB]:
    return Cipher(algorithms.SM4(key), modes.ECB())  # noqa: S305 - one block: the standard's vector


def test_sm4_single_block_vector() -> None:
    encryptor = _sm4_ecb(SM4_KEY).encryptor()
    assert encryptor.update(SM4_KEY).hex() == "681edf34d206965e86b3e94f536e4246"
    decryptor = _sm4_ecb(SM4_KEY).decryptor()
    assert decryptor.update(bytes.fromhex("681edf34d206965e86b3e94f536e4246")) == SM4_KEY


# A million one-block calls: about 0.7 s here, so it stays in `make test` (not `slow`).
def test_sm4_million_iterations_vector() -> None:
    encryptor = _sm4_ecb(SM4_KEY).encryptor()
    block = SM4_KEY
    for _ in range(1_000_000):
        block = encryptor.update(block)
    assert block.hex() == "595298c7c6fd271f0402f804c33d3f66"


def test_sm4_gcm_rfc8998_vector() -> None:
    """RFC 8998 appendix A.1: SM4 in GCM mode, as the streaming format uses it."""
    key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
    nonce = bytes.fromhex("00001234567800000000ABCD")
    aad = bytes.fromhex("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2")
    plaintext = bytes.fromhex(
        "AA" * 8 + "BB" * 8 + "CC" * 8 + "DD" * 8 + "EE" * 8 + "FF" * 8 + "EE" * 8 + "AA" * 8
    )
    encryptor = _sm4_gcm(key, nonce).encryptor()
    encryptor.authenticate_additional_data(aad)
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    assert ciphertext.hex().upper() == (
        "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735"
        "D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
    )
    assert encryptor.tag.hex().upper() == "83DE3541E4C2B58177E065A9BF7B62EC"


# --- GB/T 32905-2016 (SM3), appendix A ---------------------------------------------------


def test_sm3_vectors() -> None:
    assert sm3(b"abc").hex() == ("66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0")
    assert sm3(b"abcd" * 16).hex() == (
        "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"
    )


def test_sm3_chain_hash_mirrors_the_audit_chain() -> None:
    """The same construction as ``policies.audit.chain_hash``, only the hash differs."""
    prev, event = "00" * 32, b'{"action":"dataset.uploaded","seq":1}'
    assert sm3_chain_hash(prev, event) == sm3(bytes(32) + event).hex()
    assert chain_hash(prev, event) == hashlib.sha256(bytes(32) + event).hexdigest()
    assert sm3_chain_hash(prev, event) != chain_hash(prev, event)
    head = prev
    for n in range(3):
        head = sm3_chain_hash(head, b"event %d" % n)
    assert len(head) == 64 and head == head.lower()
    # Changing any earlier event changes the head.
    other = prev
    for n, event_bytes in enumerate([b"event 0", b"event X", b"event 2"]):
        other = sm3_chain_hash(other, event_bytes)
        assert n < 1 or other != head


# --- GB/T 32918 (SM2): the example of part 5 (GM/T 0003.5), recommended curve ------------

SM2_D = bytes.fromhex("3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8")
SM2_PUBLIC = bytes.fromhex(
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
SM2_MESSAGE = b"message digest"
# With k = 59276E27...DEAC1BC21 and the default signer id 1234567812345678:
SM2_R = int("F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3", 16)
SM2_S = int("B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA", 16)


def _der(r: int, s: int) -> bytes:
    def integer(value: int) -> bytes:
        body = value.to_bytes(33, "big").lstrip(b"\0")
        body = b"\0" + body if body[0] & 0x80 else body
        return b"\x02" + bytes([len(body)]) + body

    content = integer(r) + integer(s)
    return b"\x30" + bytes([len(content)]) + content


def test_sm2_verifies_the_standards_example() -> None:
    assert DEFAULT_SIGNER_ID == b"1234567812345678"
    Sm2PublicKey(SM2_PUBLIC).verify(_der(SM2_R, SM2_S), SM2_MESSAGE)
    Sm2PublicKey(b"\x04" + SM2_PUBLIC).verify(_der(SM2_R, SM2_S), SM2_MESSAGE)


@pytest.mark.parametrize(
    ("signature", "message", "signer_id"),
    [
        (_der(SM2_R, SM2_S), b"message digesT", DEFAULT_SIGNER_ID),
        (_der(SM2_R, SM2_S), SM2_MESSAGE, b"ALICE123@YAHOO.COM"),
        (_der(SM2_R ^ 1, SM2_S), SM2_MESSAGE, DEFAULT_SIGNER_ID),
        (_der(SM2_R, SM2_S ^ 1), SM2_MESSAGE, DEFAULT_SIGNER_ID),
        (_der(SM2_R, SM2_S)[:-1], SM2_MESSAGE, DEFAULT_SIGNER_ID),
        (b"", SM2_MESSAGE, DEFAULT_SIGNER_ID),
        (b"\x30" * 100, SM2_MESSAGE, DEFAULT_SIGNER_ID),
        (_der(SM2_R, SM2_S), b"", DEFAULT_SIGNER_ID),
    ],
    ids=[
        "other message",
        "other signer id",
        "r changed",
        "s changed",
        "cut",
        "empty",
        "too long",
        "empty message",
    ],
)
def test_sm2_example_tampered_is_refused(
    signature: bytes, message: bytes, signer_id: bytes
) -> None:
    with pytest.raises(InvalidSignature):
        Sm2PublicKey(SM2_PUBLIC).verify(signature, message, signer_id=signer_id)


def test_sm2_standard_key_pair_signs_what_its_public_key_verifies() -> None:
    key = Sm2PrivateKey(SM2_D, Sm2PublicKey(SM2_PUBLIC))
    signature = key.sign(SM2_MESSAGE)
    key.public_key().verify(signature, SM2_MESSAGE)
    assert key.sign(SM2_MESSAGE) != signature  # a fresh k each time


def test_sm2_round_trip_and_wrong_key() -> None:
    key, other = Sm2PrivateKey.generate(), Sm2PrivateKey.generate()
    message = b"veil/audit-checkpoint\n42\n" + bytes(32).hex().encode()
    signature = key.sign(message, signer_id=b"veil-platform")
    key.public_key().verify(signature, message, signer_id=b"veil-platform")
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature, message)  # the default signer id
    with pytest.raises(InvalidSignature):
        other.public_key().verify(signature, message, signer_id=b"veil-platform")
    assert key.private_bytes().hex() not in repr(key)


def test_sm2_key_checks() -> None:
    with pytest.raises(ValueError, match="do not belong together"):
        Sm2PrivateKey(SM2_D, Sm2PrivateKey.generate().public_key())
    with pytest.raises(ValueError, match="32 bytes"):
        Sm2PrivateKey(SM2_D[:31], Sm2PublicKey(SM2_PUBLIC))
    with pytest.raises(ValueError, match="64 bytes"):
        Sm2PublicKey(SM2_PUBLIC[:63])
    with pytest.raises(ValueError, match="empty message"):
        Sm2PrivateKey.generate().sign(b"")
    with pytest.raises(InvalidSignature):  # not a point of the curve
        Sm2PublicKey(b"\x01" * 64).verify(_der(SM2_R, SM2_S), SM2_MESSAGE)


# --- the SM4-GCM streaming format (version 2) ------------------------------------------

KEY = bytes(range(16))
CTX = object_context("acme", "dataset-1", 3)
CHUNK = 64
SEALED = CHUNK + TAG_SIZE


def seal(data: bytes, key: bytes = KEY, ctx: bytes = CTX) -> bytes:
    out = io.BytesIO()
    encrypt_stream_sm4(key, ctx, io.BytesIO(data), out, chunk_size=CHUNK)
    return out.getvalue()


def unseal(blob: bytes, key: bytes = KEY, ctx: bytes = CTX) -> bytes:
    out = io.BytesIO()
    n = decrypt_stream_sm4(key, ctx, io.BytesIO(blob), out)
    assert n == len(out.getvalue())
    return out.getvalue()


def chunks(blob: bytes) -> tuple[bytes, list[bytes]]:
    header, body = blob[: HEADER.size], blob[HEADER.size :]
    return header, [body[i : i + SEALED] for i in range(0, len(body), SEALED)]


def test_sm4_stream_is_the_documented_construction() -> None:
    """Each chunk is SM4-GCM under nonce prefix | index | final flag, with header | context."""
    data = os.urandom(2 * CHUNK + 5)
    blob = seal(data)
    header, parts = chunks(blob)
    prefix = header[-7:]
    for index, part in enumerate(parts):
        final = index == len(parts) - 1
        nonce = prefix + struct.pack(">IB", index, 1 if final else 0)
        encryptor = _sm4_gcm(KEY, nonce).encryptor()
        encryptor.authenticate_additional_data(header + CTX)
        plain = data[index * CHUNK : (index + 1) * CHUNK]
        assert encryptor.update(plain) + encryptor.finalize() + encryptor.tag == part
