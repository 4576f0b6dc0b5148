"""The Alembic migrations on PostgreSQL: up to the newest schema, down, up again, at once."""

from __future__ import annotations

import multiprocessing

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

import node.work.models
import policies.letters
import policies.purposes
import sandbox.store.collab_models
import sandbox.store.kpi_models
import sandbox.store.models
import sandbox.store.node_models
import sandbox.store.programme_models
import sandbox.store.scorecard_models
import sandbox.store.source_models
from policies.db import Base
from sandbox.store.database import alembic_config, migrate

pytestmark = pytest.mark.integration

# Every model module, so that ``Base.metadata`` holds every table whatever ran before.
_ = (node.work.models, policies.letters, policies.purposes, sandbox.store.collab_models,
     sandbox.store.kpi_models, sandbox.store.models, sandbox.store.node_models,
     sandbox.store.programme_models, sandbox.store.scorecard_models,
     sandbox.store.source_models)  # fmt: skip

#: The job queue of VEIL_JOB_ENGINE=procrastinate, created by the same migrations.
PROCRASTINATE = {
    "procrastinate_jobs",
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_workers",
}


def _state(url: str) -> tuple[str | None, set[str]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            tables = set(inspect(connection).get_table_names())
            version = None
            if "alembic_version" in tables:
                version = connection.execute(
                    text("SELECT version_num FROM alembic_version")
                ).scalar()
        return version, tables - {"alembic_version"}
    finally:
        engine.dispose()


def test_migrations_build_every_table_and_come_down_again(postgres_url: str) -> None:
    config = alembic_config(postgres_url)
    head = ScriptDirectory.from_config(config).get_current_head()
    migrate(postgres_url)
    assert _state(postgres_url) == (head, set(Base.metadata.tables) | PROCRASTINATE)
    command.downgrade(config, "base")
    assert _state(postgres_url) == (None, set())
    migrate(postgres_url)
    assert _state(postgres_url) == (head, set(Base.metadata.tables) | PROCRASTINATE)


def test_processes_starting_together_migrate_once(postgres_url: str) -> None:
    """Several API processes on one new database: one migrates, the others find it done."""
    spawn = multiprocessing.get_context("spawn")
    processes = [spawn.Process(target=migrate, args=(postgres_url,)) for _ in range(3)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
    assert [p.exitcode for p in processes] == [0, 0, 0]
    head = ScriptDirectory.from_config(alembic_config(postgres_url)).get_current_head()
    assert _state(postgres_url) == (head, set(Base.metadata.tables) | PROCRASTINATE)
