"""Start Veil's processes on this machine as a cluster: PostgreSQL, OpenBao node(s), API
processes behind one address, and ``veil worker`` processes (``VEIL_JOB_ENGINE=procrastinate``).

Everything lives under one home directory, on loopback ports::

    home/keyserver/  the OpenBao node(s)
    home/veil/       VEIL_DATA_DIR: the encrypted objects every process reads and writes
    home/logs/       one log per process

The home is the user's alone (directories 0700, files 0600), as a data directory is.

On several machines the same processes run as ``docs/deployment.md`` describes; the one
thing shared here through the file system, the objects directory, is shared storage there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from cluster.postgres import PostgresServer, find_postgres_bin, usable_as_root
from keys import KeyServerConfig
from keys.bao import free_port
from sandbox.config.datadir import make_private_dirs, open_private

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
_LEASES = text("SELECT id, pid FROM job_workers ORDER BY pid")
_RUNNING = text(
    "SELECT j.id, w.pid FROM jobs j JOIN job_workers w ON w.id = j.worker_id "
    "WHERE j.status = 'running'"
)
_ACTIONS = text("SELECT action FROM audit_events WHERE resource = :resource ORDER BY seq")
_BY_WORKER = text(
    "SELECT worker_id, count(*) FROM jobs WHERE worker_id IS NOT NULL GROUP BY worker_id"
)


def key_server_env(config: KeyServerConfig) -> dict[str, str]:
    """The VEIL_VAULT_* variables naming a key server (every node of a cluster)."""
    env = {
        "VEIL_VAULT_ADDR": ",".join(config.nodes),
        "VEIL_VAULT_NAMESPACE": config.namespace,
        "VEIL_VAULT_TENANCY": str(config.tenancy),
    }
    if config.role_id and config.secret_id:
        env |= {"VEIL_VAULT_ROLE_ID": config.role_id, "VEIL_VAULT_SECRET_ID": config.secret_id}
    elif config.token:
        env["VEIL_VAULT_TOKEN"] = config.token
    return env


class LocalCluster:
    """The processes of one Veil cluster on this machine; :meth:`stop` ends them all."""

    def __init__(self, home: Path | None = None, *, extra_env: dict[str, str] | None = None):
        self._own_home = home is None
        self.home = home or Path(tempfile.mkdtemp(prefix="veil-cluster-"))
        self.logs = self.home / "logs"
        make_private_dirs(self.logs)
        self.data_dir = self.home / "veil"
        self.port = free_port()
        self.postgres: PostgresServer | None = None
        self.database_url = ""
        self.key_server: Any = None
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        base = {k: v for k, v in os.environ.items() if not k.startswith(("VEIL_", "VAULT_"))}
        self.env = (
            base
            | {
                "VEIL_DATA_DIR": str(self.data_dir),
                "VEIL_API_HOST": HOST,
                "VEIL_API_PORT": str(self.port),
                "VEIL_JOB_ENGINE": "procrastinate",
                "PYTHONPATH": str(ROOT),
            }
            | (extra_env or {})
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    # -- the shared services ---------------------------------------------------------------
    def start_database(self) -> str:
        bin_dir = find_postgres_bin()
        if bin_dir is None:
            raise RuntimeError(
                "PostgreSQL is not installed: run scripts/system-packages --postgres"
            )
        if os.geteuid() == 0 and not usable_as_root():
            raise RuntimeError("as root, PostgreSQL needs runuser and the 'postgres' user")
        # Its own directory: the postgres user may not enter this cluster's (private) home.
        self.postgres = PostgresServer(bin_dir, Path(tempfile.mkdtemp(prefix="veil-pg-")))
        self.database_url = self.postgres.create_database()
        self.env["VEIL_DATABASE_URL"] = self.database_url
        return self.database_url

    def start_key_server(self, nodes: int = 3) -> KeyServerConfig:
        """``nodes`` OpenBao nodes with raft storage (1: a single embedded-style server)."""
        if nodes == 1:
            from keys import LocalKeyServer

            self.key_server = LocalKeyServer(self.home / "keyserver")
        else:
            from keys.cluster import LocalKeyCluster

            self.key_server = LocalKeyCluster(self.home / "keyserver", nodes=nodes)
        config: KeyServerConfig = self.key_server.start()
        self.env |= key_server_env(config)
        # `veil audit keys` reads one node's file audit log: the active node's (a cluster's
        # entries are on whichever node was active; docs/keys.md).
        if nodes == 1:
            audit_log = self.key_server.audit_log
        else:
            leader = self.key_server.leader()
            audit_log = None if leader is None else self.key_server.audit_log(leader)
        if audit_log is not None:
            self.env["VEIL_KEYSERVER_AUDIT_LOG"] = str(audit_log)
        return config

    # -- Veil's processes --------------------------------------------------------------------
    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sandbox.cli", *args]

    def _start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with open_private(self.logs / f"{name}.log", append=True) as out:
            return subprocess.Popen(
                self._cli(*args), env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )

    def init(self) -> str:
        """``veil init``: migrate the database, create the first operator; its token."""
        done = subprocess.run(
            self._cli("init"), env=self.env, cwd=ROOT, capture_output=True, timeout=300, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"veil init failed: {done.stdout.decode()}{done.stderr.decode()}")
        return done.stdout.decode().strip().splitlines()[-1]

    def start_api(self, processes: int = 2, timeout_s: float = 120) -> None:
        """``veil serve --processes N``: N API processes behind one address."""
        self.api = self._start("api", "serve", "--processes", str(processes))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                raise RuntimeError(f"veil serve exited; see {self.logs / 'api.log'}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"veil serve did not answer in {timeout_s:.0f} s")

    def start_workers(self, count: int, timeout_s: float = 120) -> None:
        """``count`` more ``veil worker`` processes; returns once each holds its lease."""
        wanted = len(self.live_workers()) + count
        for _ in range(count):
            self.workers.append(self._start(f"worker-{len(self.workers)}", "worker"))
        deadline = time.monotonic() + timeout_s
        while len(self.worker_leases()) < wanted:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the workers did not start; see {self.logs}")
            time.sleep(0.2)

    def live_workers(self) -> list[subprocess.Popen[bytes]]:
        return [w for w in self.workers if w.poll() is None]

    def worker_leases(self) -> list[tuple[str, int]]:
        """The leases in the database: (worker id, pid)."""
        return [(str(worker), int(pid)) for worker, pid in self._query(_LEASES)]

    def jobs_by_worker(self) -> dict[str, int]:
        """How many jobs each worker (by lease id) claimed, from the jobs' own rows."""
        return {str(worker): int(n) for worker, n in self._query(_BY_WORKER)}

    def running_jobs(self) -> list[tuple[str, int]]:
        """The jobs running now, each with the pid of the worker running it."""
        return [(str(job), int(pid)) for job, pid in self._query(_RUNNING)]

    def job_actions(self, job_id: str) -> list[str]:
        """The audit log's actions on one job, in order."""
        return [str(action) for (action,) in self._query(_ACTIONS, {"resource": f"job:{job_id}"})]

    def _query(self, query: Any, params: dict[str, Any] | None = None) -> list[Any]:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as connection:
                return list(connection.execute(query, params or {}))
        finally:
            engine.dispose()

    def stop_workers(self) -> None:
        stop_processes(self.workers)
        self.workers = []

    def stop(self, *, keep_home: bool = False) -> None:
        """Stop everything this cluster started (safe to call more than once), and remove
        the temporary home it made unless ``keep_home`` (its logs, after a failure)."""
        try:
            self.stop_workers()
            stop_processes([self.api] if self.api is not None else [])
            self.api = None
        finally:
            if self.key_server is not None:
                self.key_server.stop()
                self.key_server = None
            if self.postgres is not None:
                self.postgres.stop()
                self.postgres = None
            if self._own_home and not keep_home:
                shutil.rmtree(self.home, ignore_errors=True)


def stop_processes(processes: list[subprocess.Popen[bytes]], timeout_s: float = 60) -> None:
    """SIGTERM each running process, wait for them all, SIGKILL any still there after
    ``timeout_s``."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
