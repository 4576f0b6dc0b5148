"""A real PostgreSQL for the session (Debian's ``postgresql`` package), a fresh database per test.

The server runs from a temporary directory on a free loopback port, its socket in that
directory, so a cluster the package itself started (``main``, port 5432, socket in
/var/run/postgresql) is neither used nor in the way.  initdb refuses root, so as root it
runs as the ``postgres`` system user that the package creates, from that directory (it
may not enter the caller's).  Without PostgreSQL the tests skip locally and fail under
``CI=true``; ``scripts/system-packages --postgres`` installs it (``make test`` does).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from keys.bao import free_port
from tests.conftest import require

SEARCHED = "/usr/lib/postgresql/*/bin"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here is a ``postgres`` test (in ``make test``; alone: ``make test-postgres``)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.postgres)


SYSTEM_USER = "postgres"  # the owner of the server's files when the tests run as root
SUPERUSER = "veil"  # the database superuser initdb creates (trust, loopback only)


def find_postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has initdb and pg_ctl."""
    found = []
    for directory in Path("/usr/lib/postgresql").glob("*/bin"):
        version = directory.parent.name
        if version.isdigit() and all((directory / t).is_file() for t in ("initdb", "pg_ctl")):
            found.append((int(version), directory))
    return max(found)[1] if found else None


class PostgresServer:
    """``initdb`` + ``pg_ctl start`` in ``home``; :meth:`stop` removes it all."""

    def __init__(self, bin_dir: Path, home: Path) -> None:
        self.bin_dir, self.home = bin_dir, home
        self.data, self.log = home / "data", home / "server.log"
        self.port = free_port()
        self._as = ["runuser", "-u", SYSTEM_USER, "--"] if os.geteuid() == 0 else []
        if self._as:
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(home, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")  # fmt: skip
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {home} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
                  "-o", options, "start")  # fmt: skip

    def _run(self, tool: str, *args: str) -> None:
        command = [*self._as, str(self.bin_dir / tool), *args]
        # From the server's own directory, not the caller's, which the postgres user may
        # not be allowed to enter (it worked from a root-only directory here; defensive).
        done = subprocess.run(
            command, cwd=self.home, capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed: {done.stdout}{done.stderr}{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return ""

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        name = f"veil_{uuid.uuid4().hex[:12]}"
        dsn = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.home, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, stopped and removed at its end."""
    bin_dir = find_postgres_bin()
    require(bin_dir is not None, f"PostgreSQL (package postgresql: initdb in {SEARCHED})")
    assert bin_dir is not None
    if os.geteuid() == 0:
        usable = shutil.which("runuser") is not None and _has_user(SYSTEM_USER)
        require(usable, f"runuser and the '{SYSTEM_USER}' user (initdb refuses root)")
    # Not under pytest's own temporary directory: its parents are private to root.
    server = PostgresServer(bin_dir, Path(tempfile.mkdtemp(prefix="veil-pg-")))
    yield server
    server.stop()


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """The URL of a fresh, empty database on the session's server."""
    return postgres.create_database()
