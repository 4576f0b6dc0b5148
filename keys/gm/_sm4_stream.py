"""The streaming, chunked SM4-GCM format: version 2 of ``docs/encryption-format.md``.

The same STREAM construction as the AES-256-GCM format of ``keys._stream``, with
SM4 (GB/T 32907) in place of AES::

    header  = magic "VEILSTRM" | format u8 = 2 | algorithm u8 = 2 | chunk_size u32
              | nonce_prefix (7 random bytes)
    chunk_i = SM4-GCM(key, nonce_i, plaintext_i, aad) = ciphertext_i | tag (16 bytes)
    nonce_i = nonce_prefix | i as u32 | final flag u8 (1 on the last chunk, else 0)
    aad     = header | context          (context: ``keys._stream.object_context``)

Only the header's format and algorithm bytes, the key size (SM4 keys are 128
bits) and the per-chunk cipher differ: the chunk loop, the nonces and the
associated data are the AES format's own (``keys._stream.encrypt_with``), so
every tamper the AES format detects this one detects too.  The format byte keeps
the two apart: the AES decoder refuses a version-2 stream and this one a
version-1 stream, with the same opaque error.

``cryptography`` has no one-shot AEAD class for SM4-GCM, so each chunk uses
``Cipher(SM4, GCM)``; a decrypted chunk reaches ``dst`` only after ``finalize``
has checked its tag.  ``KeyService`` writes it under the GM profile.

SM4 has no instructions on x86-64 and OpenSSL no assembly for it there, so it runs as
portable C, one core at ~130 MiB/s.  Past :data:`PARALLEL_ABOVE` bytes the rest of a
stream is sealed (or opened) a run of chunks at a time by a pool of Veil's own worker
processes (``keys._parallel``), in order, with the same nonces: the same bytes as
the serial loop, and still no plaintext before its chunk's tag has verified.
"""

from __future__ import annotations

from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from keys._stream import (
    DEFAULT_CHUNK_SIZE,
    TAG_SIZE,
    StreamFormat,
    decrypt_with,
    encrypt_with,
)

FORMAT_VERSION_SM4 = 2
ALGORITHM_SM4GCM_STREAM = 2
SM4_KEY_SIZE = 16
# ``update_into`` wants room for one more block than it writes.
_SLACK = 16


def _sm4_gcm(key: bytes, nonce: bytes, tag: bytes | None = None) -> Cipher[modes.GCM]:
    return Cipher(algorithms.SM4(key), modes.GCM(nonce, tag, min_tag_length=TAG_SIZE))


class _Sm4Gcm:
    """SM4-GCM per chunk (``cryptography`` has no one-shot AEAD class for it)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def seal_into(self, nonce: bytes, data: memoryview, aad: bytes, out: memoryview) -> int:
        encryptor = _sm4_gcm(self._key, nonce).encryptor()
        encryptor.authenticate_additional_data(aad)
        written = encryptor.update_into(data, out)
        encryptor.finalize()  # GCM is a stream mode: nothing is held back
        out[written : written + TAG_SIZE] = encryptor.tag
        return written + TAG_SIZE

    def open_into(self, nonce: bytes, sealed: memoryview, aad: bytes, out: memoryview) -> int:
        size = len(sealed) - TAG_SIZE
        decryptor = _sm4_gcm(self._key, nonce, bytes(sealed[size:])).decryptor()
        decryptor.authenticate_additional_data(aad)
        written = decryptor.update_into(sealed[:size], out)
        decryptor.finalize()  # raises InvalidTag: the caller writes nothing of this chunk
        return written


# Past this, the rest of a stream is sealed / opened on worker processes (``keys._parallel``):
# SM4 runs at ~130 MiB/s a core here, and holds the GIL.  Below it (~30 ms of work), no
# process is started.
PARALLEL_ABOVE = 4 << 20

SM4GCM_STREAM = StreamFormat(
    FORMAT_VERSION_SM4,
    ALGORITHM_SM4GCM_STREAM,
    SM4_KEY_SIZE,
    _Sm4Gcm,
    slack=_SLACK,
    parallel_above=PARALLEL_ABOVE,
)


def encrypt_stream_sm4(
    key: bytes,
    context: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Encrypt everything readable from ``src`` into ``dst`` with SM4-GCM; return the length."""
    return encrypt_with(SM4GCM_STREAM, key, context, src, dst, chunk_size=chunk_size)


def decrypt_stream_sm4(key: bytes, context: bytes, src: BinaryIO, dst: BinaryIO) -> int:
    """Decrypt a stream made by :func:`encrypt_stream_sm4`; return the plaintext length.

    Each chunk reaches ``dst`` only after its tag verified, but the stream as a
    whole is authentic only if this returns: on :class:`DecryptionError` the
    caller must discard whatever was written.
    """
    return decrypt_with(SM4GCM_STREAM, key, context, src, dst)
