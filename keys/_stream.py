"""The streaming, chunked AES-256-GCM format for bulk data (private: use ``keys.KeyService``).

Layout (all integers big-endian; see ``docs/encryption-format.md``)::

    header  = magic "VEILSTRM" | format u8 = 1 | algorithm u8 = 1 | chunk_size u32
              | nonce_prefix (7 random bytes)
    chunk_i = AES-256-GCM(key, nonce_i, plaintext_i, aad) = ciphertext_i | tag (16 bytes)
    nonce_i = nonce_prefix | i as u32 | final flag u8 (1 on the last chunk, else 0)
    aad     = header | context

Every chunk but the last holds exactly ``chunk_size`` plaintext bytes; the last
holds 0..chunk_size and carries the final flag.  Because the index and the flag
are inside the nonce, and the header and the context (tenant, object, version)
are inside the associated data, reordering, dropping, duplicating, truncating,
appending, splicing chunks from another object, or editing the header all fail
authentication.  Memory use is two chunks, whatever the size of the stream.

A format may name a size (``StreamFormat.parallel_above``) past which the rest of a
stream is sealed or opened by ``keys._parallel``'s worker processes, a run of chunks
(about 1 MiB) each, written in order: the same chunks under the same nonces, so the
same bytes; memory is then a ring of a few runs a worker (32 MiB at most with chunks of
1 MiB or less).

This module knows nothing of key servers: it takes a raw key.  The chunk loop is
shared by every version of the format (:class:`StreamFormat`); version 2, SM4-GCM,
is ``keys.gm._sm4_stream``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from keys import _parallel
from keys.errors import DecryptionError

MAGIC = b"VEILSTRM"
FORMAT_VERSION = 1
ALGORITHM_AES256GCM_STREAM = 1
HEADER = struct.Struct(">8sBBI7s")
TAG_SIZE = 16
KEY_SIZE = 32
NONCE_PREFIX_SIZE = 7
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 16
MAX_CHUNK_SIZE = 16 << 20
_MAX_CHUNKS = 1 << 32
_CONTEXT_LABEL = b"veil.object.v1"
# The ring of runs the worker processes share with this one: four runs a worker, within
# 32 MiB (a container's /dev/shm is often 64 MiB) unless runs are larger than that allows.
_SLOTS_PER_WORKER = 4
_RING_BUDGET = 32 << 20


def object_context(tenant: str, object_id: str, version: int) -> bytes:
    """Encode what a ciphertext is bound to: tenant, object and version, unambiguously."""
    if version < 0:
        raise ValueError("object version must be zero or positive")
    parts = [_CONTEXT_LABEL, tenant.encode(), object_id.encode()]
    encoded = b"".join(struct.pack(">H", len(p)) + p for p in parts)
    return encoded + struct.pack(">Q", version)


def _nonce(prefix: bytes, index: int, final: bool) -> bytes:
    return prefix + struct.pack(">IB", index, 1 if final else 0)


def _read_full(src: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` from ``src`` unless the stream ends first; return the bytes read."""
    total = 0
    size = len(view)
    while total < size:
        n = src.readinto(view[total:])  # type: ignore[attr-defined]
        if not n:
            break
        total += n
    return total


class ChunkCipher(Protocol):
    """One AEAD under one key, as the chunk loop uses it: each call seals or opens one chunk
    into ``out`` and returns the bytes written (opening raises :class:`InvalidTag`)."""

    def seal_into(self, nonce: bytes, data: memoryview, aad: bytes, out: memoryview) -> int: ...

    def open_into(self, nonce: bytes, sealed: memoryview, aad: bytes, out: memoryview) -> int: ...


@dataclass(frozen=True)
class StreamFormat:
    """A version of the format: its header bytes, key size and AEAD (``slack``: the extra
    room its AEAD wants in output buffers; ``parallel_above``: the bytes of a stream past
    which its rest goes to worker processes, ``None`` for never; ``parallel_run``: about
    how many bytes, whole chunks, a worker seals or opens at a time)."""

    version: int
    algorithm: int
    key_size: int
    cipher: Callable[[bytes], ChunkCipher]
    slack: int = 0
    parallel_above: int | None = None
    parallel_run: int = 1 << 20


class _AesGcm:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal_into(self, nonce: bytes, data: memoryview, aad: bytes, out: memoryview) -> int:
        return self._aead.encrypt_into(nonce, data, aad, out[: len(data) + TAG_SIZE])

    def open_into(self, nonce: bytes, sealed: memoryview, aad: bytes, out: memoryview) -> int:
        return self._aead.decrypt_into(nonce, sealed, aad, out[: len(sealed) - TAG_SIZE])


AES256GCM_STREAM = StreamFormat(FORMAT_VERSION, ALGORITHM_AES256GCM_STREAM, KEY_SIZE, _AesGcm)


def encrypt_stream(
    key: bytes,
    context: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Encrypt everything readable from ``src`` into ``dst``; return the plaintext length."""
    return encrypt_with(AES256GCM_STREAM, key, context, src, dst, chunk_size=chunk_size)


def decrypt_stream(key: bytes, context: bytes, src: BinaryIO, dst: BinaryIO) -> int:
    """Decrypt a stream made by :func:`encrypt_stream`; return the plaintext length.

    Each chunk reaches ``dst`` only after its tag verified, but the stream as a
    whole is authentic only if this returns: on :class:`DecryptionError` the
    caller must discard whatever was written.
    """
    return decrypt_with(AES256GCM_STREAM, key, context, src, dst)


def encrypt_with(
    fmt: StreamFormat,
    key: bytes,
    context: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Encrypt ``src`` into ``dst`` in format ``fmt``; return the plaintext length."""
    if len(key) != fmt.key_size:
        raise ValueError(f"the data key must be {fmt.key_size} bytes")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes")
    prefix = os.urandom(NONCE_PREFIX_SIZE)
    header = HEADER.pack(MAGIC, fmt.version, fmt.algorithm, chunk_size, prefix)
    aad = header + context
    cipher = fmt.cipher(key)
    dst.write(header)

    # Read one chunk ahead: a chunk is final only when the next read finds nothing.
    current, following = bytearray(chunk_size), bytearray(chunk_size)
    out = memoryview(bytearray(chunk_size + TAG_SIZE + fmt.slack))
    n = _read_full(src, memoryview(current))
    index = 0
    total = 0
    parallel_above = fmt.parallel_above
    while True:
        m = _read_full(src, memoryview(following)) if n == chunk_size else 0
        final = m == 0
        if index >= _MAX_CHUNKS:
            raise ValueError("the stream is too long for this chunk size; use larger chunks")
        written = cipher.seal_into(_nonce(prefix, index, final), memoryview(current)[:n], aad, out)
        dst.write(out[:written])
        total += n
        if final:
            return total
        index += 1
        current, following, n = following, current, m
        if parallel_above is not None and total >= parallel_above:
            parallel_above = None  # one try: without shared memory, stay serial
            args = (fmt, key, aad, prefix, chunk_size)
            rest = _in_parallel(
                _seal_run, args, chunk_size, chunk_size + TAG_SIZE, fmt,
                memoryview(current)[:n], index, src, dst,
            )  # fmt: skip
            if rest is not None:
                return total + rest[0]


def decrypt_with(
    fmt: StreamFormat, key: bytes, context: bytes, src: BinaryIO, dst: BinaryIO
) -> int:
    """Decrypt a stream of format ``fmt`` (any other header is refused); return its length."""
    if len(key) != fmt.key_size:
        raise DecryptionError()
    header_buf = bytearray(HEADER.size)
    if _read_full(src, memoryview(header_buf)) != HEADER.size:
        raise DecryptionError()
    raw_header = bytes(header_buf)
    magic, version, algorithm, chunk_size, prefix = HEADER.unpack(raw_header)
    if (
        magic != MAGIC
        or version != fmt.version
        or algorithm != fmt.algorithm
        or not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE
    ):
        raise DecryptionError()
    aad = raw_header + context
    cipher = fmt.cipher(key)
    sealed = chunk_size + TAG_SIZE
    current, following = bytearray(sealed), bytearray(sealed)
    out = memoryview(bytearray(chunk_size + fmt.slack))
    n = _read_full(src, memoryview(current))
    index = 0
    total = 0
    parallel_above = fmt.parallel_above
    while True:
        m = _read_full(src, memoryview(following)) if n == sealed else 0
        final = m == 0
        if n < TAG_SIZE or index >= _MAX_CHUNKS:
            raise DecryptionError()
        try:
            written = cipher.open_into(
                _nonce(prefix, index, final), memoryview(current)[:n], aad, out
            )
        except InvalidTag:
            raise DecryptionError() from None
        # Only now, the tag checked, may the chunk leave.
        dst.write(out[:written])
        total += written
        if final:
            return total
        index += 1
        current, following, n = following, current, m
        if parallel_above is not None and total >= parallel_above:
            parallel_above = None
            args = (fmt, key, aad, prefix, chunk_size)
            try:
                rest = _in_parallel(
                    _open_run, args, sealed, chunk_size, fmt,
                    memoryview(current)[:n], index, src, dst,
                )  # fmt: skip
            except (InvalidTag, _TooLong):
                raise DecryptionError() from None
            if rest is not None:
                return total + rest[1]


class _TooLong(ValueError):
    def __init__(self) -> None:
        super().__init__("the stream is too long for this chunk size; use larger chunks")


def _in_parallel(
    fn: _parallel.RunFunction, args: tuple[object, ...], unit: int, out_unit: int,
    fmt: StreamFormat, carry: memoryview, index: int, src: BinaryIO, dst: BinaryIO,
) -> tuple[int, int] | None:  # fmt: skip
    """Feed the rest of ``src`` (after ``carry``, chunk ``index``, already read) to worker
    processes, runs of whole ``unit``-byte chunks at a time; return the bytes read and
    written, or ``None``, having consumed nothing, when no shared memory can be had."""
    if _parallel.worker_count() < 2:
        return None
    per_run = max(1, fmt.parallel_run // unit)
    run = per_run * unit
    out_size = per_run * out_unit + fmt.slack
    # Runs queued at each worker, so that one slowed by other work does not stall the
    # ring (as deep as the budget allows), one being filled and one written by this process.
    workers = _parallel.worker_count()
    fit = _RING_BUDGET // (run + out_size)
    slots = max(workers + 2, min(_SLOTS_PER_WORKER * workers + 2, fit))
    try:
        pipeline = _parallel.Pipeline(slots, run, out_size, dst)
    except OSError:
        return None
    read = 0
    with pipeline:
        slot = pipeline.take()
        slot.input[: len(carry)] = carry
        n = len(carry) + (
            _read_full(src, slot.input[len(carry) : run]) if len(carry) == unit else 0
        )
        while True:
            following = pipeline.take() if n == run else None
            m = _read_full(src, following.input[:run]) if following is not None else 0
            final = m == 0
            chunks = -(-n // unit)
            if index + chunks > _MAX_CHUNKS:
                raise _TooLong()
            pipeline.submit(slot, n, fn, *args, index, final)
            read += n
            if final or following is None:
                break
            index += chunks
            slot, n = following, m
    return read, pipeline.written


def _seal_run(
    data: memoryview, out: memoryview, fmt: StreamFormat, key: bytes, aad: bytes, prefix: bytes,
    chunk_size: int, index: int, final: bool,
) -> int:  # fmt: skip
    """Seal the chunks of ``data`` (chunk ``index`` on; the last is the stream's last if
    ``final``) into ``out``, as :func:`encrypt_with` would; return the bytes written."""
    cipher = fmt.cipher(key)
    written = 0
    for start in range(0, len(data), chunk_size):
        last = final and start + chunk_size >= len(data)
        piece = data[start : start + chunk_size]
        written += cipher.seal_into(_nonce(prefix, index, last), piece, aad, out[written:])
        index += 1
    return written


def _open_run(
    data: memoryview, out: memoryview, fmt: StreamFormat, key: bytes, aad: bytes, prefix: bytes,
    chunk_size: int, index: int, final: bool,
) -> int:  # fmt: skip
    """Open the sealed chunks of ``data`` into ``out`` as :func:`decrypt_with` would
    (raising :class:`InvalidTag` on the first that does not verify); return the bytes."""
    cipher = fmt.cipher(key)
    sealed = chunk_size + TAG_SIZE
    written = 0
    for start in range(0, len(data), sealed):
        piece = data[start : start + sealed]
        if len(piece) < TAG_SIZE:
            raise InvalidTag()
        last = final and start + sealed >= len(data)
        written += cipher.open_into(_nonce(prefix, index, last), piece, aad, out[written:])
        index += 1
    return written
