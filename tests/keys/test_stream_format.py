"""The streaming format on its own, both versions (1: AES-256-GCM, 2: SM4-GCM, the latter
also with all but its first chunk on worker processes): round trips, and every tamper
fails with one opaque error."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import BinaryIO

import pytest

from keys import DecryptionError
from keys._stream import (
    HEADER,
    TAG_SIZE,
    decrypt_stream,
    decrypt_with,
    encrypt_stream,
    encrypt_with,
    object_context,
)
from keys.gm import decrypt_stream_sm4, encrypt_stream_sm4
from keys.gm._sm4_stream import SM4GCM_STREAM

CTX = object_context("acme", "dataset-1", 3)
CHUNK = 64
SEALED = CHUNK + TAG_SIZE
# SM4-GCM with every chunk after the first sealed and opened by worker processes, two
# chunks a run: the tampers below then fall inside runs, across them and at their ends.
SM4_WORKERS = replace(SM4GCM_STREAM, parallel_above=0, parallel_run=2 * SEALED)


@dataclass(frozen=True)
class Format:
    """One version of the streaming format, as the tests drive it."""

    version: int  # the header's format byte (= its algorithm byte)
    key: bytes
    encrypt: Callable[..., int]
    decrypt: Callable[[bytes, bytes, BinaryIO, BinaryIO], int]


FORMATS = {
    "v1-aes256gcm": Format(1, bytes(range(32)), encrypt_stream, decrypt_stream),
    "v2-sm4gcm": Format(2, bytes(range(16)), encrypt_stream_sm4, decrypt_stream_sm4),
    "v2-sm4gcm-workers": Format(
        2,
        bytes(range(16)),
        lambda *a, **kw: encrypt_with(SM4_WORKERS, *a, **kw),
        lambda *a: decrypt_with(SM4_WORKERS, *a),
    ),
}


@pytest.fixture(params=sorted(FORMATS))
def fmt(request: pytest.FixtureRequest) -> Format:
    return FORMATS[request.param]


def seal(fmt: Format, data: bytes, key: bytes | None = None, ctx: bytes = CTX) -> bytes:
    out = io.BytesIO()
    fmt.encrypt(fmt.key if key is None else key, ctx, io.BytesIO(data), out, chunk_size=CHUNK)
    return out.getvalue()


def unseal(fmt: Format, blob: bytes, key: bytes | None = None, ctx: bytes = CTX) -> bytes:
    out = io.BytesIO()
    n = fmt.decrypt(fmt.key if key is None else key, ctx, io.BytesIO(blob), out)
    assert n == len(out.getvalue())
    return out.getvalue()


def chunks(blob: bytes) -> tuple[bytes, list[bytes]]:
    header, body = blob[: HEADER.size], blob[HEADER.size :]
    return header, [body[i : i + SEALED] for i in range(0, len(body), SEALED)]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 7])
def test_round_trip(fmt: Format, size: int) -> None:
    data = os.urandom(size)
    blob = seal(fmt, data)
    assert unseal(fmt, blob) == data
    assert blob[8:10] == bytes([fmt.version, fmt.version])  # format and algorithm
    expected_chunks = max(1, -(-size // CHUNK))
    assert len(blob) == HEADER.size + size + expected_chunks * TAG_SIZE


def test_ciphertext_hides_the_plaintext_and_is_fresh_each_time(fmt: Format) -> None:
    data = b"recipe-parameter-A=0.4431;" * 20
    first, second = seal(fmt, data), seal(fmt, data)
    assert b"recipe" not in first
    assert first != second  # fresh nonce prefix per stream


def _opaque(fmt: Format, blob: bytes, key: bytes | None = None, ctx: bytes = CTX) -> str:
    with pytest.raises(DecryptionError) as info:
        unseal(fmt, blob, key, ctx)
    return str(info.value)


def tampered_variants(fmt: Format) -> dict[str, bytes]:
    blob = seal(fmt, os.urandom(4 * CHUNK + 10))  # five chunks, the last one short
    header, parts = chunks(blob)
    other = seal(fmt, os.urandom(4 * CHUNK + 10))  # same key and context, another stream
    claimed = bytes([3 - fmt.version])  # the other version's byte
    _, other_parts = chunks(other)
    flip = lambda b, i: b[:i] + bytes([b[i] ^ 1]) + b[i + 1 :]  # noqa: E731
    return {
        "bit flipped in a chunk": flip(blob, HEADER.size + 5),
        "bit flipped in a tag": flip(blob, HEADER.size + SEALED - 1),
        "bit flipped in the header chunk size": flip(blob, 12),
        "bit flipped in the nonce prefix": flip(blob, HEADER.size - 1),
        "bad magic": b"X" + blob[1:],
        "unknown format version": blob[:8] + b"\x03" + blob[9:],
        "the other format version claimed": blob[:8] + claimed + blob[9:],
        "the other algorithm claimed": blob[:9] + claimed + blob[10:],
        "final chunk dropped": header + b"".join(parts[:-1]),
        "cut inside the last chunk": blob[:-3],
        "cut inside the header": blob[: HEADER.size - 2],
        "empty input": b"",
        "middle chunk dropped": header + b"".join(parts[:2] + parts[3:]),
        "chunks swapped": header + b"".join([parts[1], parts[0], *parts[2:]]),
        "chunk duplicated": header + b"".join([parts[0], *parts]),
        "bytes appended": blob + b"\x00" * 20,
        "whole chunk appended": blob + parts[1],
        "chunk spliced from another stream": header + b"".join([other_parts[0], *parts[1:]]),
        "header from another stream": other[: HEADER.size] + blob[HEADER.size :],
    }


@pytest.mark.parametrize("case", sorted(tampered_variants(FORMATS["v1-aes256gcm"])))
def test_tampering_is_detected(fmt: Format, case: str) -> None:
    message = _opaque(fmt, tampered_variants(fmt)[case])
    assert message == str(DecryptionError())  # the same words whatever failed: no oracle


@pytest.mark.parametrize(
    "ctx",
    [
        object_context("globex", "dataset-1", 3),
        object_context("acme", "dataset-2", 3),
        object_context("acme", "dataset-1", 4),
    ],
    ids=["other tenant", "other object", "other version"],
)
def test_context_is_bound(fmt: Format, ctx: bytes) -> None:
    _opaque(fmt, seal(fmt, b"rows"), ctx=ctx)


def test_wrong_key_is_refused(fmt: Format) -> None:
    _opaque(fmt, seal(fmt, b"rows"), key=bytes(len(fmt.key)))
    _opaque(fmt, seal(fmt, b"rows"), key=bytes(48 - len(fmt.key)))  # the other format's size


def test_the_two_formats_refuse_each_other() -> None:
    aes, sm4 = FORMATS["v1-aes256gcm"], FORMATS["v2-sm4gcm"]
    _opaque(sm4, seal(aes, b"rows"))
    _opaque(aes, seal(sm4, b"rows"))


def test_context_encoding_is_unambiguous() -> None:
    assert object_context("ab", "c", 1) != object_context("a", "bc", 1)
    assert object_context("a", "b", 1) != object_context("a", "b", 256)


def test_chunk_size_limits(fmt: Format) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        fmt.encrypt(fmt.key, CTX, io.BytesIO(b""), io.BytesIO(), chunk_size=1)
    with pytest.raises(ValueError, match=f"{len(fmt.key)} bytes"):
        fmt.encrypt(b"short", CTX, io.BytesIO(b""), io.BytesIO())


class TrickleReader(io.RawIOBase):
    """A source that returns at most 7 bytes per read, like a slow pipe."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        chunk = self._data.read(min(7, len(buffer)))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_short_reads_from_the_source_are_handled(fmt: Format) -> None:
    data = os.urandom(3 * CHUNK + 5)
    out = io.BytesIO()
    fmt.encrypt(fmt.key, CTX, TrickleReader(data), out, chunk_size=CHUNK)
    back = io.BytesIO()
    fmt.decrypt(fmt.key, CTX, TrickleReader(out.getvalue()), back)  # type: ignore[arg-type]
    assert back.getvalue() == data
