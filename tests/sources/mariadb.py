"""A throwaway MariaDB server (Debian's ``mariadb-server``) in a directory of its own, on a
free loopback port, for the SQL source's tests: ``mariadb-install-db`` + ``mariadbd``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pymysql

from keys.bao import free_port

INSTALL_DB = "mariadb-install-db"
SERVER = "/usr/sbin/mariadbd"


def available() -> bool:
    return shutil.which(INSTALL_DB) is not None and Path(SERVER).is_file()


class MariaDbServer:
    """A server with a database ``mes`` and a user ``mes`` (password login) who may read it."""

    PASSWORD = "mes-Secret-Passw0rd"  # the test's own throwaway credential

    def __init__(self, home: Path) -> None:
        self.home, self.data = home, home / "data"
        self.port = free_port()
        self._user = ["--user=root"] if os.geteuid() == 0 else []
        self.log = home / "server.log"
        done = subprocess.run(
            [
                INSTALL_DB,
                "--no-defaults",
                f"--datadir={self.data}",
                "--skip-test-db",
                "--auth-root-authentication-method=normal",
                *self._user,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {done.stdout}{done.stderr}")
        self.process: subprocess.Popen[bytes] | None = None
        self.start()
        with self.root() as conn, conn.cursor() as cur:
            cur.execute("CREATE DATABASE mes")
            cur.execute("CREATE USER 'mes'@'127.0.0.1' IDENTIFIED BY %s", (self.PASSWORD,))
            cur.execute("GRANT ALL ON mes.* TO 'mes'@'127.0.0.1'")

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                SERVER,
                "--no-defaults",
                f"--datadir={self.data}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.home / 'mysqld.sock'}",
                f"--pid-file={self.home / 'mysqld.pid'}",
                f"--log-error={self.log}",
                "--skip-log-bin",
                "--skip-name-resolve",
                *self._user,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.root().close()
                return
            except pymysql.err.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mariadbd did not start: {self.log_tail()}") from None
                time.sleep(0.1)

    def root(self) -> pymysql.connections.Connection:  # type: ignore[type-arg]
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", autocommit=True)

    def mes(self) -> pymysql.connections.Connection:  # type: ignore[type-arg]
        return pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user="mes",
            password=self.PASSWORD,
            database="mes",
            autocommit=True,
        )

    def kill(self) -> None:
        """The server gone at once (SIGKILL), as a crashed or unplugged database."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(30)
            self.process = None

    def log_tail(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        try:
            if self.process is not None:
                self.process.terminate()
                self.process.wait(30)
        finally:
            shutil.rmtree(self.home, ignore_errors=True)
