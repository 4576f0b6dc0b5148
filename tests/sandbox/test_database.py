"""The database's two kinds of transaction: writes take turns; reads never wait and never write."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from policies import audit
from sandbox.store.database import Database, migrate


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    url = f"sqlite:///{tmp_path / 'veil.db'}"
    migrate(url)
    database = Database(url)
    yield database
    database.dispose()


def test_a_read_transaction_refuses_to_write(db: Database) -> None:
    with pytest.raises(OperationalError, match=r"readonly|read-only|query_only"), db.read() as s:
        audit.record(s, "sneaky.write")
    with db.read() as s:
        assert s.execute(text("SELECT count(*) FROM audit_events")).scalar() == 0


def test_a_read_sees_the_last_commit_without_waiting_for_a_writer(db: Database) -> None:
    with db.transaction() as s:
        audit.record(s, "first")
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with db.transaction() as s:
            audit.record(s, "second")
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(10)
    started = time.monotonic()
    with db.read() as s:  # the writer holds SQLite's write lock right now
        actions = list(s.execute(text("SELECT action FROM audit_events")).scalars())
    waited = time.monotonic() - started
    release.set()
    thread.join(10)
    assert actions == ["first"]  # a consistent snapshot: the uncommitted event is not seen
    assert waited < 1.0
    with db.read() as s:
        assert s.execute(text("SELECT count(*) FROM audit_events")).scalar() == 2


def test_writers_of_one_process_take_turns_and_lose_nothing(db: Database) -> None:
    def append(n: int) -> None:
        for i in range(n):
            with db.transaction() as s:
                audit.record(s, "turn", details={"i": i})

    threads = [threading.Thread(target=append, args=(25,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    with db.read() as s:
        assert audit.verify(s, {}).ok
        assert s.execute(text("SELECT count(*) FROM audit_events")).scalar() == 200


def test_a_row_read_on_the_event_loop_sees_each_commit_and_cannot_write(db: Database) -> None:
    """``read_row`` (SQLite: inline, on the loop thread's own connection) reads what was
    committed just before, every time: nothing is kept between reads."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import timedelta

    import anyio
    from sqlalchemy import bindparam

    from policies.principals import Principal, Role, Status, create_principal
    from sandbox.store.rows import RowQuery

    by_id = RowQuery((Principal,), lambda q: q.where(Principal.id == bindparam("id")))
    with db.transaction() as session:
        principal_id = create_principal(session, Role.PROVIDER, "Row Reader").id

    async def reads() -> list[str]:
        seen = []
        for status in (Status.SUSPENDED, Status.ACTIVE):
            row = await db.read_row(by_id, {"id": principal_id})
            assert row is not None
            seen.append(row[0].status)
            with db.transaction() as session:  # another connection commits in between
                session.get(Principal, principal_id).status = status
        row = await db.read_row(by_id, {"id": principal_id})
        assert row is not None
        seen.append(row[0].status)
        assert row[0].created_at.utcoffset() == timedelta(0)  # the ORM's conversions
        with pytest.raises(Exception, match="readonly"):
            db._loop_connection().execute("DELETE FROM principals")
        return seen

    # In a thread of its own, as the server's event loop runs: in a full run the browser
    # tests' Playwright keeps an event loop running in the main thread (as in
    # tests/security/test_limits.py), and anyio refuses to start a loop inside it.
    with ThreadPoolExecutor(1) as pool:
        seen = pool.submit(anyio.run, reads).result()
    assert seen == [Status.ACTIVE, Status.SUSPENDED, Status.ACTIVE]
    assert db.read_row_now(by_id, {"id": "nobody"}) is None
