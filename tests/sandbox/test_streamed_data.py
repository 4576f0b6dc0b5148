"""A job's data decrypted as it is sent to its sandbox (``Decrypting``, ``SandboxProcess.run``
with a ``DataStream``): the worker never holds the whole plaintext, and data whose stream
fails, even after every byte of it went out, is never computed on."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import polars as pl
import pytest

from analytics.query_document import parse_query
from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema
from keys.errors import DecryptionError
from sandbox.client import ApiError
from sandbox.config.settings import Settings
from sandbox.data.datasets import latest_version
from sandbox.isolation.child import Task
from sandbox.isolation.pool import SandboxPool
from sandbox.jobs.runner import claim_next_job, run_job
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import open_veil
from tests.sandbox.conftest import PURPOSE, World, make_world, settings_for

pytestmark = pytest.mark.integration

SCHEMA = DatasetSchema(
    (
        ColumnSpec("k", ColumnType.STRING, ColumnClass.PUBLIC, categories=("a", "b")),
        ColumnSpec("x", ColumnType.FLOAT, ColumnClass.INTERNAL, 0.0, 10.0),
    )
)
QUERY = Task("query", SCHEMA, parse_query({"aggregates": [{"kind": "count"}]}), 1.0)


def parquet(rows: int) -> bytes:
    buffer = io.BytesIO()
    pl.DataFrame({"k": ["a", "b"] * (rows // 2), "x": [5.0] * rows}).write_parquet(buffer)
    return buffer.getvalue()


class Streamed:
    """A ``DataStream`` writing ``data`` in pieces, then failing if told to (as a stored object
    whose last chunk does not authenticate fails after its other chunks went out)."""

    def __init__(self, data: bytes, fail: Exception | None = None) -> None:
        self.data, self.fail, self.calls = data, fail, 0

    @property
    def size(self) -> int:
        return len(self.data)

    def write_to(self, out: BinaryIO) -> None:
        self.calls += 1
        half = len(self.data) // 2
        out.write(self.data[:half])
        out.write(self.data[half:])
        if self.fail is not None:
            raise self.fail


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[SandboxPool]:
    pool = SandboxPool(Settings(data_dir=tmp_path, job_wall_s=20), reusable=True)
    yield pool
    pool.close()


def test_a_streamed_query_is_answered_as_one_sent_whole(pool: SandboxPool) -> None:
    data = Streamed(parquet(1_000))
    result = pool.take().run(QUERY, data).message["result"]
    assert data.calls == 1 and result["tier"] == 3
    assert 900 < result["rows"][0]["values"][0]["value"] < 1_100  # the rows were read


def test_a_stream_that_fails_after_all_its_bytes_is_never_computed_on(pool: SandboxPool) -> None:
    """Every byte of a valid Parquet went out, then the stream failed: the job process must
    not answer from it (the end frame is never sent, the sandbox is killed)."""
    worker = pool.take()
    damaged = DecryptionError()  # as a last chunk that does not authenticate raises it
    with pytest.raises(DecryptionError) as raised:
        worker.run(QUERY, Streamed(parquet(1_000), fail=damaged))
    assert raised.value is damaged
    assert not worker.alive  # killed with its job process
    again = pool.take()  # a fresh sandbox serves the next job
    assert again is not worker
    assert again.run(QUERY, parquet(1_000)).message["result"]["tier"] == 3


@pytest.fixture
def world(tmp_path: Path, key_server: object) -> Iterator[tuple[Veil, World]]:
    settings = settings_for(tmp_path, key_server)  # type: ignore[arg-type]
    with open_veil(settings, worker=False) as veil, ApiThread(veil.settings, veil) as url:
        yield veil, make_world(veil, url, rows=30_000)


def test_a_job_on_a_damaged_object_fails_and_releases_nothing(
    world: tuple[Veil, World],
) -> None:
    veil, w = world
    with veil.db.read() as session:
        version = latest_version(session, w.dataset_id)
        assert version is not None
        path = veil.settings.objects_dir / version.object_path
    stored = path.read_bytes()
    path.write_bytes(stored[:-1] + bytes([stored[-1] ^ 1]))  # the last chunk's tag
    job = w.provider.submit_job(w.dataset_id, PURPOSE, 0.25, [{"kind": "count"}])
    assert claim_next_job(veil) == job["id"]
    run_job(veil, job["id"])
    done = w.provider.get_job(job["id"])
    assert done["status"] == "failed" and done.get("result") is None
    assert done["error"] == (
        "internal error while computing the result; its data was read, so its budget stays spent"
    )
    with pytest.raises(ApiError):
        w.provider.get_result(job["id"])

    path.write_bytes(stored)  # the same job on the intact object is released
    job = w.provider.submit_job(w.dataset_id, PURPOSE, 0.25, [{"kind": "count"}])
    assert claim_next_job(veil) == job["id"]
    run_job(veil, job["id"])
    assert w.provider.get_job(job["id"])["status"] == "released"


def test_data_that_cannot_even_be_sized_fails_at_once(pool: SandboxPool) -> None:
    """The stored object missing: its error, at once, not the wall clock's."""

    class Missing(Streamed):
        @property
        def size(self) -> int:
            raise FileNotFoundError("objects/.../v1.veil")

    gone = Missing(b"")
    with pytest.raises(FileNotFoundError):
        pool.take().run(QUERY, gone)
    assert gone.calls == 0
