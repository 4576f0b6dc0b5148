"""The streaming format's worker processes (``keys._parallel``): a stream sealed or opened
partly by them is byte for byte the stream of the serial loop, a tag that fails stops
the output at the last verified run, and without shared memory or cores the serial
loop does it all."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace

import pytest

from keys import DecryptionError, _parallel, _stream
from keys._stream import (
    HEADER,
    TAG_SIZE,
    StreamFormat,
    decrypt_with,
    encrypt_with,
    object_context,
)
from keys.gm._sm4_stream import PARALLEL_ABOVE, SM4GCM_STREAM

CTX = object_context("acme", "dataset-1", 3)
KEY = bytes(range(16))
PREFIX = bytes.fromhex("a1b2c3d4e5f607")
SERIAL = replace(SM4GCM_STREAM, parallel_above=None)


@pytest.fixture
def fixed_prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The same nonce prefix for every stream, so that two encryptions can be compared."""
    monkeypatch.setattr(_stream, "os", SimpleNamespace(urandom=lambda n: PREFIX[:n]))
    yield


def seal(fmt: StreamFormat, data: bytes, chunk_size: int) -> bytes:
    out = io.BytesIO()
    assert encrypt_with(fmt, KEY, CTX, io.BytesIO(data), out, chunk_size=chunk_size) == len(data)
    return out.getvalue()


def unseal(fmt: StreamFormat, blob: bytes, dst: io.BytesIO | None = None) -> bytes:
    out = io.BytesIO() if dst is None else dst
    n = decrypt_with(fmt, KEY, CTX, io.BytesIO(blob), out)
    assert n == len(out.getvalue())
    return out.getvalue()


# (chunk size, run size, after how many bytes the workers take over, plaintext length)
CASES = [
    (64, 128, 0, 0),  # empty: the serial loop's one final chunk, no worker
    (64, 128, 0, 64),  # one chunk, exactly full
    (64, 128, 0, 65),  # two chunks: the second, one byte, to the workers
    (64, 128, 0, 64 * 37),  # many runs, the last chunk full
    (64, 128, 0, 64 * 37 + 5),  # many runs, the last chunk short
    (64, 128, 0, 64 * 3),  # the last run half full
    (64, 128, 64 * 4, 64 * 40 + 63),  # serial, then workers
    (100, 1000, 0, 100 * 200 + 1),  # ten chunks a run, chunk size not a power of two
    (1 << 16, 1 << 20, 1 << 20, (5 << 20) + 12345),  # realistic sizes
    (1 << 20, 1 << 20, PARALLEL_ABOVE, PARALLEL_ABOVE + (3 << 20) + 7),  # the defaults
]


@pytest.mark.parametrize(("chunk", "run", "above", "size"), CASES)
def test_workers_write_the_serial_bytes(
    fixed_prefix: None, chunk: int, run: int, above: int, size: int
) -> None:
    data = os.urandom(size)
    fast = replace(SM4GCM_STREAM, parallel_above=above, parallel_run=run)
    reference = seal(SERIAL, data, chunk)
    assert seal(fast, data, chunk) == reference
    assert unseal(fast, reference) == data
    assert unseal(SERIAL, reference) == data


def test_the_default_format_hands_large_streams_to_the_workers(fixed_prefix: None) -> None:
    assert SM4GCM_STREAM.parallel_above == PARALLEL_ABOVE
    data = os.urandom(PARALLEL_ABOVE + (2 << 20) + 1)
    blob = seal(SM4GCM_STREAM, data, 1 << 20)
    assert blob == seal(SERIAL, data, 1 << 20)
    assert unseal(SM4GCM_STREAM, blob) == data
    assert _parallel._idle  # the workers wait for the next stream


@pytest.mark.parametrize("bad_chunk", [1, 2, 5, 9])
def test_nothing_after_a_failed_tag_reaches_dst(bad_chunk: int) -> None:
    chunk, sealed = 64, 64 + TAG_SIZE
    fast = replace(SM4GCM_STREAM, parallel_above=0, parallel_run=2 * sealed)
    data = os.urandom(10 * chunk + 3)
    blob = bytearray(seal(fast, data, chunk))
    blob[HEADER.size + bad_chunk * sealed + 3] ^= 1
    out = io.BytesIO()
    with pytest.raises(DecryptionError):
        unseal(fast, bytes(blob), out)
    written = out.getvalue()
    # Whole chunks that verified, in order, and none from the tampered one on.
    assert len(written) % chunk == 0
    assert len(written) <= bad_chunk * chunk
    assert written == data[: len(written)]


def _no_pipeline(*args: object) -> None:
    raise OSError("no /dev/shm")


@pytest.mark.parametrize(
    ("name", "stand_in"),
    [("Pipeline", _no_pipeline), ("worker_count", lambda: 1)],
    ids=["no shared memory", "one core"],
)
def test_without_workers_the_serial_loop_does_it_all(
    fixed_prefix: None, monkeypatch: pytest.MonkeyPatch, name: str, stand_in: object
) -> None:
    fast = replace(SM4GCM_STREAM, parallel_above=0, parallel_run=128)
    data = os.urandom(64 * 20 + 1)
    reference = seal(SERIAL, data, 64)
    monkeypatch.setattr(_parallel, name, stand_in)
    assert seal(fast, data, 64) == reference
    assert unseal(fast, reference) == data


def test_a_lost_worker_fails_the_stream_and_the_next_one_starts_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast = replace(SM4GCM_STREAM, parallel_above=0, parallel_run=128)
    data = os.urandom(64 * 50)
    assert unseal(fast, seal(fast, data, 64)) == data  # workers started, now idle
    for worker in _parallel._idle:
        worker._process.kill()
        worker._process.wait()
    assert unseal(fast, seal(fast, data, 64)) == data  # idle ones found dead are replaced
    monkeypatch.setattr(_parallel, "_check_out", lambda count: [_Dead() for _ in range(count)])
    with pytest.raises(_parallel.WorkerLost):
        seal(fast, data, 64)


class _Dead:
    """A worker whose process ended mid-stream."""

    def send(self, message: object) -> None:
        raise _parallel.WorkerLost("a worker process ended")

    def receive(self) -> tuple[str, object]:
        raise _parallel.WorkerLost("a worker process ended")

    def close(self) -> None:
        pass


def _sees(data: memoryview, out: memoryview, name: str) -> int:
    """Run in a worker: whether it has the variable ``name`` in its environment."""
    out[0] = name in os.environ
    return 1


def test_workers_get_no_secrets_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VEIL_BAO_PLATFORM_SECRET_ID", "s3cret")
    _parallel._close_idle()  # the next workers start with this environment
    out = io.BytesIO()
    with _parallel.Pipeline(2, 16, 16, out) as pipeline:
        pipeline.submit(pipeline.take(), 0, _sees, "VEIL_BAO_PLATFORM_SECRET_ID")
        pipeline.submit(pipeline.take(), 0, _sees, "PATH")
    assert out.getvalue() == b"\x00\x01"
