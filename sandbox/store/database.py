"""The database: engine, sessions, and migrations (Alembic).

SQLite (WAL) under the data directory by default.  Two kinds of transaction:

- ``Database.transaction()`` for anything that may write.  On SQLite it begins
  with ``BEGIN IMMEDIATE`` so that writers queue on the database lock instead
  of failing half-way with "database is locked" after reading stale state
  (the audit head and budget debits rely on that).  Writers of one process
  first queue on a lock in memory: SQLite's own busy handler polls with
  sleeps of up to 100 ms, so under many concurrent requests the database
  lock would sit free while every waiter sleeps.  The lock in memory only
  orders this process's writers; atomicity still comes from the database
  (other processes queue on SQLite's lock as before).
- ``Database.read()`` for requests that only read (showing and listing grants,
  the catalog).  On SQLite it begins with a plain (deferred) ``BEGIN``
  on connections set to ``PRAGMA query_only``: with WAL a reader sees one
  consistent snapshot of the last commit, never waits for a writer, and any
  attempt to write in it fails (PostgreSQL: a ``READ ONLY`` transaction).
- ``await Database.read_row(query, values)`` for the hottest reads (authenticating
  every API request, ``GET /v1/grants/{id}``): one SELECT built once
  (:class:`~sandbox.store.rows.RowQuery`) on the driver's connection, without a session.
  On SQLite it runs inline on the event loop, on a query-only connection of the loop's
  own thread (a WAL reader waits for no writer; one that would wait, which SQLite says at
  once there, is retried in a worker thread); on PostgreSQL, whose reads cross the
  network, in a worker thread (AnyIO's pool), never blocking the loop.

PostgreSQL (``VEIL_DATABASE_URL``, e.g. ``postgresql+psycopg://...``): transactions run
at READ COMMITTED, and every ``transaction()`` first takes one transaction-scoped advisory
lock (``pg_advisory_xact_lock``), waiting at most ``BUSY_TIMEOUT_S``.  Writers of every
process therefore take turns, as on SQLite under ``BEGIN IMMEDIATE``, and each statement
after the lock sees every earlier commit: the code's read-check-write steps (narrowing a
grant, the dataset cap, the audit head) stay as safe as on SQLite.  Nearly every write
appends to the one audit chain, whose head row is locked anyway, so little concurrency is
lost.  The row-level guards stay as well (conditional ``UPDATE`` debits, the audit head
``SELECT ... FOR UPDATE``, job claims ``FOR UPDATE SKIP LOCKED``).  Readers take no lock.

Each of a process's two PostgreSQL engines (writers, readers) opens up to ``pool_size``
connections (``VEIL_DATABASE_POOL_SIZE``) as they are needed and keeps them, so a process
holds at most twice that; a caller beyond that waits up to ``BUSY_TIMEOUT_S`` for one to
come back.  No connection is opened for a busy moment and closed after it: under a steady
load that was a new server process every fifth request or so, a third of the machine's
CPU (``docs/performance.md``, round 4).  SQLite's pools are sized for its own reasons
(``make_engine``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from sqlalchemy import Engine, create_engine, event, inspect, make_url
from sqlalchemy.orm import Session, sessionmaker

from sandbox.store.rows import RowQuery

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_S = 30
READ_POOL_SIZE = 40  # the size of the thread pool that runs the API's sync routes (AnyIO's)
#: PostgreSQL: connections each engine opens at most, and keeps; see the settings.
DEFAULT_POOL_SIZE = 10
# The key of the advisory lock that PostgreSQL writers take in turn ("veil" in ASCII).
WRITE_LOCK_KEY = 0x7665696C


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'veil.db'}"


def create_private_sqlite(url: str) -> None:
    """SQLite: create the database file with mode 0600 before SQLite does, which gives its
    ``-wal`` and ``-shm`` files the database file's mode: all three are private to their
    owner whatever the umask.  An existing file keeps its mode; other URLs are left alone."""
    parsed = make_url(url)
    path = parsed.database
    if parsed.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return
    if path.startswith("file:") or parsed.query.get("uri"):
        return  # a URI filename: SQLite's to interpret
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))  # empty: a valid database
    except FileNotFoundError:
        return  # no such directory: SQLite says so when it opens it


def make_engine(url: str, *, read_only: bool = False, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys, a busy timeout and immediate writes.

    ``read_only``: connections refuse writes; on SQLite they begin deferred transactions.
    ``pool_size``: PostgreSQL only (connections opened at most, and kept).
    """
    if not url.startswith("sqlite"):
        return _server_engine(url, read_only=read_only, pool_size=pool_size)
    create_private_sqlite(url)
    # Readers run side by side (one per API worker thread), so their pool keeps as many
    # connections as the thread pool has threads: beyond ``pool_size`` a connection is
    # closed on return, and opening one (file, WAL index, pragmas) costs more than a query.
    # Writers take turns (see ``Database``), so the default pool suffices for them.
    pool = {"pool_size": READ_POOL_SIZE, "max_overflow": READ_POOL_SIZE} if read_only else {}
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}, **pool
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_S * 1000}")
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    begin = "BEGIN" if read_only else "BEGIN IMMEDIATE"

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Straight to the driver: BEGIN returns no rows, and SQLAlchemy's statement machinery
        # (compilation cache, events, result set-up) would cost more than SQLite does.
        connection.connection.driver_connection.execute(begin)

    return engine


def _server_engine(url: str, *, read_only: bool, pool_size: int) -> Engine:
    """PostgreSQL: readers in READ ONLY, REPEATABLE READ transactions (one snapshot for the
    whole transaction, as SQLite's readers get; READ COMMITTED would take one per statement,
    and a check of the audit chain would see the head move under it); writers take the write
    lock as they begin."""
    if pool_size < 1:
        raise ValueError("pool_size must be at least 1")
    pool: dict[str, Any] = {
        "pool_size": pool_size,
        # None beyond: a connection opened at a busy moment would be closed as it came back
        # (SQLAlchemy's "overflow"), and opened again at the next, a server process each time.
        "max_overflow": 0,
        "pool_timeout": BUSY_TIMEOUT_S,
        "pool_pre_ping": True,
    }
    if read_only:
        options = {"postgresql_readonly": True}
        return create_engine(
            url, isolation_level="REPEATABLE READ", execution_options=options, **pool
        )
    engine = create_engine(url, **pool)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Through the driver: the connection's own execute() would begin a transaction
        # again.  The driver opens the transaction with the first statement.
        # Both in one round trip (no parameters: the simple protocol takes several).
        cursor = connection.connection.cursor()
        try:
            cursor.execute(
                f"SET LOCAL lock_timeout = '{BUSY_TIMEOUT_S}s'; "
                f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"
            )
        finally:
            cursor.close()

    return engine


def alembic_config(url: str) -> Config:
    # Alembic is imported when a schema is migrated, not by every command that opens the
    # database (it takes about a tenth of a second).
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema."""
    from alembic import command

    create_private_sqlite(url)
    command.upgrade(alembic_config(url), "head")


def is_initialised(engine: Engine) -> bool:
    return inspect(engine).has_table("alembic_version")


class Database:
    """Sessions on one database.

    ``transaction()`` (may write) and ``read()`` (must not) commit on success and
    roll back on error.
    """

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_engine = make_engine(url, read_only=True, pool_size=pool_size)
        self._read_sessions = sessionmaker(self._read_engine, expire_on_commit=False)
        # Re-entrant: a nested write transaction in one thread fails in SQLite as it did
        # before (SQLite's busy timeout), instead of first waiting here for itself.
        self._writers = threading.RLock() if url.startswith("sqlite") else None
        self._inline = url.startswith("sqlite")
        self._own = threading.local()  # SQLite: each event loop thread's read connection

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A transaction that may write; it holds the database's write lock (SQLite) or
        Veil's write lock (PostgreSQL: an advisory lock) until it ends."""
        with self._queued(), self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction: a consistent snapshot, no write lock; writing in it fails.

        Use it only where nothing is written, not even an audit event: a denial that
        must be audited belongs in :meth:`transaction`.
        """
        with self._read_sessions() as session, session.begin():
            yield session

    async def read_row(self, query: RowQuery, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """The first row of ``query`` (one SELECT: a consistent snapshot of its own) as
        detached objects, or None; for async code (see the module's docstring)."""
        if self._inline:
            try:
                return query.first(self._loop_connection(), self.engine.dialect, values)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                # SQLite would make this reader wait (a recovery, a WAL reset): not on the
                # event loop; a worker thread waits with the usual busy timeout.
        return await anyio.to_thread.run_sync(self.read_row_now, query, values)

    def read_row_now(self, query: RowQuery, values: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """:meth:`read_row` for sync code: on a pooled read connection of this thread."""
        connection = self._read_engine.raw_connection()
        try:
            return query.first(connection.driver_connection, self.engine.dialect, values)
        finally:
            connection.close()  # back to the pool, which rolls back (PostgreSQL's implicit
            # transaction)

    def _loop_connection(self) -> Any:
        connection = getattr(self._own, "connection", None)
        if connection is None:
            # The thread's own connection, outside the pool: only this thread uses it, one
            # statement at a time; it goes when the thread does (or at ``dispose``).  It
            # never waits for a lock, and cannot write.
            engine = self._read_engine
            args, kwargs = engine.dialect.create_connect_args(engine.url)
            connection = engine.dialect.loaded_dbapi.connect(*args, **kwargs)
            connection.isolation_level = None
            connection.execute("PRAGMA query_only=ON")
            connection.execute("PRAGMA busy_timeout=0")
            self._own.connection = connection
        return connection

    @contextmanager
    def _queued(self) -> Iterator[None]:
        """Wait for this process's other writers (bounded: then SQLite's busy timeout decides)."""
        if self._writers is None:
            yield
            return
        acquired = self._writers.acquire(timeout=BUSY_TIMEOUT_S)
        try:
            yield
        finally:
            if acquired:
                self._writers.release()

    def dispose(self) -> None:
        self._own = threading.local()  # the event loops' connections close as they go
        self.engine.dispose()
        self._read_engine.dispose()
