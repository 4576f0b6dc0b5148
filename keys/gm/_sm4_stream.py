"""The streaming, chunked SM4-GCM format: version 2 of ``docs/encryption-format.md``.

The same STREAM construction as the AES-256-GCM format of ``keys._stream``, with
SM4 (GB/T 32907) in place of AES::

    header  = magic "VEILSTRM" | format u8 = 2 | algorithm u8 = 2 | chunk_size u32
              | nonce_prefix (7 random bytes)
    chunk_i = SM4-GCM(key, nonce_i, plaintext_i, aad) = ciphertext_i | tag (16 bytes)
    nonce_i = nonce_prefix | i as u32 | final flag u8 (1 on the last chunk, else 0)
    aad     = header | context          (context: ``keys._stream.object_context``)

Only the header's format and algorithm bytes and the key size (SM4 keys are 128
bits) differ; the nonces, the associated data and the chunking are the AES
format's own helpers, so every tamper the AES format detects this one detects
too.  The format byte keeps the two apart: the AES decoder refuses a version-2
stream and this one a version-1 stream, with the same opaque error.

``cryptography`` has no one-shot AEAD class for SM4-GCM, so each chunk uses
``Cipher(SM4, GCM)``; a decrypted chunk reaches ``dst`` only after ``finalize``
has checked its tag.  Part of the national-cryptography foundation (issue 23):
nothing in Veil encrypts with it yet.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from keys._stream import (
    _MAX_CHUNKS,
    DEFAULT_CHUNK_SIZE,
    HEADER,
    MAGIC,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    NONCE_PREFIX_SIZE,
    TAG_SIZE,
    _nonce,
    _read_full,
)
from keys.errors import DecryptionError

FORMAT_VERSION_SM4 = 2
ALGORITHM_SM4GCM_STREAM = 2
SM4_KEY_SIZE = 16
# ``update_into`` wants room for one more block than it writes.
_SLACK = 16


def _sm4_gcm(key: bytes, nonce: bytes, tag: bytes | None = None) -> Cipher[modes.GCM]:
    return Cipher(algorithms.SM4(key), modes.GCM(nonce, tag, min_tag_length=TAG_SIZE))


def encrypt_stream_sm4(
    key: bytes,
    context: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Encrypt everything readable from ``src`` into ``dst`` with SM4-GCM; return the length."""
    if len(key) != SM4_KEY_SIZE:
        raise ValueError("the SM4 data key must be 16 bytes")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes")
    prefix = os.urandom(NONCE_PREFIX_SIZE)
    header = HEADER.pack(MAGIC, FORMAT_VERSION_SM4, ALGORITHM_SM4GCM_STREAM, chunk_size, prefix)
    aad = header + context
    dst.write(header)

    # Read one chunk ahead: a chunk is final only when the next read finds nothing.
    current, following = bytearray(chunk_size), bytearray(chunk_size)
    out = memoryview(bytearray(chunk_size + TAG_SIZE + _SLACK))
    n = _read_full(src, memoryview(current))
    index = 0
    total = 0
    while True:
        m = _read_full(src, memoryview(following)) if n == chunk_size else 0
        final = m == 0
        if index >= _MAX_CHUNKS:
            raise ValueError("the stream is too long for this chunk size; use larger chunks")
        encryptor = _sm4_gcm(key, _nonce(prefix, index, final)).encryptor()
        encryptor.authenticate_additional_data(aad)
        written = encryptor.update_into(memoryview(current)[:n], out)
        encryptor.finalize()  # GCM is a stream mode: nothing is held back
        out[written : written + TAG_SIZE] = encryptor.tag
        dst.write(out[: written + TAG_SIZE])
        total += n
        if final:
            return total
        index += 1
        current, following, n = following, current, m


def decrypt_stream_sm4(key: bytes, context: bytes, src: BinaryIO, dst: BinaryIO) -> int:
    """Decrypt a stream made by :func:`encrypt_stream_sm4`; return the plaintext length.

    Each chunk reaches ``dst`` only after its tag verified, but the stream as a
    whole is authentic only if this returns: on :class:`DecryptionError` the
    caller must discard whatever was written.
    """
    if len(key) != SM4_KEY_SIZE:
        raise DecryptionError()
    header_buf = bytearray(HEADER.size)
    if _read_full(src, memoryview(header_buf)) != HEADER.size:
        raise DecryptionError()
    raw_header = bytes(header_buf)
    magic, fmt, algorithm, chunk_size, prefix = HEADER.unpack(raw_header)
    if (
        magic != MAGIC
        or fmt != FORMAT_VERSION_SM4
        or algorithm != ALGORITHM_SM4GCM_STREAM
        or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE
    ):
        raise DecryptionError()
    aad = raw_header + context
    sealed = chunk_size + TAG_SIZE
    current, following = bytearray(sealed), bytearray(sealed)
    out = memoryview(bytearray(chunk_size + _SLACK))
    n = _read_full(src, memoryview(current))
    index = 0
    total = 0
    while True:
        m = _read_full(src, memoryview(following)) if n == sealed else 0
        final = m == 0
        if n < TAG_SIZE or index >= _MAX_CHUNKS:
            raise DecryptionError()
        size = n - TAG_SIZE
        tag = bytes(current[size:n])
        decryptor = _sm4_gcm(key, _nonce(prefix, index, final), tag).decryptor()
        decryptor.authenticate_additional_data(aad)
        written = decryptor.update_into(memoryview(current)[:size], out)
        try:
            decryptor.finalize()
        except InvalidTag:
            raise DecryptionError() from None
        # Only now, the tag checked, may the chunk leave.
        dst.write(out[:written])
        total += written
        if final:
            return total
        index += 1
        current, following, n = following, current, m
