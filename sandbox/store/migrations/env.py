"""Alembic environment: the metadata of every Veil table, migrated on the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

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


def run_migrations() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "set sqlalchemy.url"
    engine = create_engine(url)
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
