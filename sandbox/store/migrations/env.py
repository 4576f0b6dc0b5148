"""Alembic environment: the metadata of every Veil table, migrated on the configured URL."""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine, event

import policies.audit
import policies.grants
import policies.letters
import policies.principals
import policies.purposes
import sandbox.store.collab_models
import sandbox.store.kpi_models
import sandbox.store.models
import sandbox.store.programme_models
import sandbox.store.scorecard_models
import sandbox.store.source_models
from policies.db import Base
from sandbox.store.database import WRITE_LOCK_KEY

_ = (
    policies.audit,
    policies.grants,
    policies.letters,
    policies.principals,
    policies.purposes,
    sandbox.store.collab_models,
    sandbox.store.kpi_models,
    sandbox.store.programme_models,
    sandbox.store.scorecard_models,
    sandbox.store.source_models,
)
target_metadata = Base.metadata


def _sqlite_for_migrations(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def run_migrations() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "set sqlalchemy.url"
    engine = create_engine(url)
    if url.startswith("sqlite"):
        # SQLite's DDL here commits statement by statement (Alembic runs it outside a
        # transaction). In WAL mode with synchronous=NORMAL a commit is not fsynced on its
        # own, yet the database stays consistent on a crash or power cut: it loses at most
        # the last commits (a migration cut short is cut short either way: its statements
        # commit one by one). Veil's own connections then use synchronous=FULL
        # (``make_engine``).
        event.listen(engine, "connect", _sqlite_for_migrations)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=url.startswith("sqlite"),  # SQLite needs batch ALTERs
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Processes starting together migrate one after the other; the next one
                # then finds the newest schema (PostgreSQL's DDL is transactional).
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")
            context.run_migrations()
    engine.dispose()


run_migrations()
