"""A real PostgreSQL for the session (Debian's ``postgresql`` package; the server itself:
``cluster.postgres``), a fresh database per test.

Without PostgreSQL the tests skip locally and fail under ``CI=true``;
``scripts/system-packages --postgres`` installs it (``make test`` does).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.postgres import (
    SEARCHED,
    SYSTEM_USER,
    PostgresServer,
    find_postgres_bin,
    usable_as_root,
)
from tests.conftest import require


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is a ``postgres`` test (in ``make test``; alone: ``make test-postgres``)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, stopped and removed at its end."""
    bin_dir = find_postgres_bin()
    require(bin_dir is not None, f"PostgreSQL (package postgresql: initdb in {SEARCHED})")
    assert bin_dir is not None
    if os.geteuid() == 0:
        require(usable_as_root(), f"runuser and the '{SYSTEM_USER}' user (initdb refuses root)")
    # Not under pytest's own temporary directory: its parents are private to root.
    server = PostgresServer(bin_dir, Path(tempfile.mkdtemp(prefix="veil-pg-")))
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """The URL of a fresh, empty database on the session's server."""
    return postgres.create_database()
