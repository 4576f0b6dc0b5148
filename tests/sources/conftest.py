"""Real servers for the data sources' tests, each on a free loopback port: PostgreSQL
(Debian's ``postgresql``: ``cluster.postgres``) and MariaDB (Debian's ``mariadb-server``:
``tests/sources/mariadb.py``). Missing, the tests skip locally and fail under ``CI=true``;
``scripts/system-packages --postgres`` installs both."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from analytics.schema import ColumnClass, ColumnSpec, ColumnType, DatasetSchema, PrivacyUnit
from cluster.postgres import (
    SEARCHED,
    SYSTEM_USER,
    PostgresServer,
    find_postgres_bin,
    usable_as_root,
)
from keys import LocalKeyServer
from policies.principals import Principal, Role
from sandbox.accounts.tenants import create_enterprise
from sandbox.config.settings import Settings
from sandbox.data.datasets import create_dataset
from sandbox.runtime.veil import Veil
from sandbox.service import bootstrap_operator, open_veil
from tests.conftest import require
from tests.sandbox.conftest import settings_for
from tests.sources import mariadb


@pytest.fixture(scope="session")
def source_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server playing an MES database for the session."""
    bin_dir = find_postgres_bin()
    require(bin_dir is not None, f"PostgreSQL (package postgresql: initdb in {SEARCHED})")
    assert bin_dir is not None
    if os.geteuid() == 0:
        require(usable_as_root(), f"runuser and the '{SYSTEM_USER}' user (initdb refuses root)")
    server = PostgresServer(bin_dir, Path(tempfile.mkdtemp(prefix="veil-src-pg-")))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def maria() -> Iterator[mariadb.MariaDbServer]:
    """A MariaDB server playing an MES database for the module's tests."""
    require(mariadb.available(), "MariaDB (package mariadb-server: mariadb-install-db, mariadbd)")
    server = mariadb.MariaDbServer(Path(tempfile.mkdtemp(prefix="veil-src-maria-")))
    yield server
    server.stop()


def source_settings(tmp_path: Path, key_server: LocalKeyServer, **extra: Any) -> Settings:
    """A Veil whose scheduler never runs on its own (tests run sources themselves)."""
    values: dict[str, Any] = {"source_poll_s": 3600.0, "source_retry_s": 1.0} | extra
    return settings_for(tmp_path, key_server, **values)


@pytest.fixture
def veil(tmp_path: Path, key_server: LocalKeyServer) -> Iterator[Veil]:
    with open_veil(source_settings(tmp_path, key_server)) as running:
        yield running


@dataclass(frozen=True)
class Tenants:
    operator: Principal
    acme: Principal
    globex: Principal


@pytest.fixture
def tenants(veil: Veil) -> Tenants:
    """The operator and two enterprises (each with its keys)."""
    return make_tenants(veil)


def make_tenants(veil: Veil) -> Tenants:
    bootstrap_operator(veil)
    with veil.db.read() as session:
        operator = session.scalars(select(Principal).where(Principal.role == Role.OPERATOR)).one()
        session.expunge(operator)
    tag = uuid.uuid4().hex[:8]
    acme = create_enterprise(veil, operator, "Acme Metal", f"acme-{tag}")
    globex = create_enterprise(veil, operator, "Globex", f"globex-{tag}")
    return Tenants(operator, acme, globex)


#: The shared declaration both vendors' MES map onto.
LINE_SCHEMA = DatasetSchema(
    (
        ColumnSpec(
            "machine",
            ColumnType.STRING,
            ColumnClass.PUBLIC,
            categories=("press-1", "press-2", "mill-1"),
        ),
        ColumnSpec("temperature_c", ColumnType.FLOAT, ColumnClass.INTERNAL, lower=0.0, upper=200.0),
        ColumnSpec("cycle_time_s", ColumnType.FLOAT, ColumnClass.INTERNAL, lower=1.0, upper=600.0),
        ColumnSpec(
            "plant", ColumnType.STRING, ColumnClass.PUBLIC, categories=("plant-a", "plant-b")
        ),
        ColumnSpec("note", ColumnType.STRING, ColumnClass.INTERNAL, nullable=True),
    ),
    PrivacyUnit(),
)


def line_dataset(veil: Veil, enterprise: Principal, name: str = "line-log") -> str:
    return create_dataset(veil, enterprise, name, LINE_SCHEMA).id
