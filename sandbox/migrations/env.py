"""Alembic environment: the metadata of every Veil table, migrated on the configured URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import policies.audit
import policies.grants
import policies.principals
import sandbox.models  # noqa: F401 - registers the sandbox tables
from policies.db import Base

_ = (policies.audit, policies.grants, policies.principals)
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
            context.run_migrations()
    engine.dispose()


run_migrations()
