"""A throwaway PostgreSQL server (Debian's ``postgresql`` package) in a directory of its own.

``initdb`` + ``pg_ctl start`` on a free loopback port, the socket in that directory, so a
cluster the package itself started (``main``, port 5432) is neither used nor in the way.
initdb refuses root, so as root it runs as the ``postgres`` system user the package
creates, from that directory (it may not enter the caller's).  For tests, the cluster demo
and the benchmarks only: trust authentication on loopback, no fsync (``durable``: fsync and
synchronous commits on, as a production server runs).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
from psycopg import sql

from keys.bao import free_port

SEARCHED = "/usr/lib/postgresql/*/bin"
SYSTEM_USER = "postgres"  # the owner of the server's files when run as root
SUPERUSER = "veil"  # the database superuser initdb creates (trust, loopback only)


def find_postgres_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has initdb and pg_ctl."""
    found = []
    for directory in Path("/usr/lib/postgresql").glob("*/bin"):
        version = directory.parent.name
        if version.isdigit() and all((directory / t).is_file() for t in ("initdb", "pg_ctl")):
            found.append((int(version), directory))
    return max(found)[1] if found else None


def usable_as_root() -> bool:
    """As root: whether runuser and the ``postgres`` user exist (initdb refuses root)."""
    if shutil.which("runuser") is None:
        return False
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return False
    return True


class PostgresServer:
    """``initdb`` + ``pg_ctl start`` in ``home``; :meth:`stop` removes it all."""

    def __init__(
        self, bin_dir: Path, home: Path, *, max_connections: int = 200, durable: bool = False
    ) -> None:
        self.bin_dir, self.home = bin_dir, home
        self.data, self.log = home / "data", home / "server.log"
        self.port = free_port()
        self._as = ["runuser", "-u", SYSTEM_USER, "--"] if os.geteuid() == 0 else []
        if self._as:
            entry = pwd.getpwnam(SYSTEM_USER)
            os.chown(home, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")  # fmt: skip
        fast = "" if durable else "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {home} {fast}-c max_connections={max_connections}"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30",
                  "-o", options, "start")  # fmt: skip

    def _run(self, tool: str, *args: str) -> None:
        command = [*self._as, str(self.bin_dir / tool), *args]
        # From the server's own directory: PostgreSQL 15's tools stop when they cannot
        # find their working directory, which may be private to root.
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
