"""A control plane and one enterprise node as real processes on loopback, for ``nodes.py``.

Everything lives under one temporary home::

    home/veil/                 the control plane's data directory (``veil serve``)
    home/veil/keyserver/       its OpenBao (started by the script, like ``_cluster.Cluster``)
    home/node/                 the node's directory (``veil node init --dir``)
    home/node/veil/keyserver/  the node's own OpenBao: the control plane never sees it
    home/node.log              the node's output (``veil node run``)

The enterprise is created on the control plane with ``veil enterprises create --on-node``,
the node enrolled with ``veil node init --enrol CODE``; the enterprise uploads its dataset
and makes its grant on the node's own API with the token ``veil node init`` printed.  Both
OpenBao servers are started by the script so that they outlive killed Veil processes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session

from keys import LocalKeyServer
from keys.bao import free_port
from reliability._cluster import CANARY_COLUMN, GRANTED, HOST, PURPOSE, Cluster, canary_csv
from sandbox.client import ApiError, VeilClient
from sandbox.demo.data import DECLARATION
from sandbox.store.database import make_engine

ROOT = Path(__file__).resolve().parent.parent
#: The purpose of the short grant (scenario "grant expires while the node is away").
SHORT_PURPOSE = "quality-analysis"  # a second purpose of the city's vocabulary


class NodeProcess:
    """``veil node run`` in its own process (killed, paused, restarted at will), its OpenBao."""

    def __init__(self, home: Path) -> None:
        self.dir = home / "node"
        self.log = home / "node.log"
        self.port = free_port()
        self.keyserver = LocalKeyServer(self.dir / "veil" / "keyserver")
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VEIL_", "VAULT_"))}
        self.env = env | {
            "VEIL_JOB_POLL_INTERVAL_S": "0.05",
            "VEIL_COMMITMENT_LETTERS": "false",  # letters: once per grant, not measured
            "TMPDIR": str(home / "node-tmp"),
            "PYTHONPATH": str(ROOT),
        }
        (home / "node-tmp").mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.dir / 'veil' / 'veil.db'}"

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sandbox.cli", *args]

    def init(self, control_plane: str, code: str) -> str:
        """``veil node init --enrol CODE``; the enterprise's token on its node."""
        (self.dir / "veil").mkdir(parents=True, exist_ok=True)
        self.keyserver.start()
        done = subprocess.run(
            self._cli("node", "init", "--enrol", code, "--control-plane", control_plane,
                      "--dir", str(self.dir), "--json"),
            env=self.env, cwd=ROOT, capture_output=True, timeout=300, check=True,
        )  # fmt: skip
        return str(json.loads(done.stdout)["enterprise_token"])

    def start(self, timeout_s: float = 120.0) -> float:
        """Start ``veil node run``; the seconds until its own API answered 200."""
        started = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self._cli("node", "run", "--dir", str(self.dir), "--port", str(self.port)),
                env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        while time.monotonic() - started < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"veil node run exited; see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"veil node run did not start in {timeout_s:.0f} s; see {self.log}")

    def kill(self) -> None:
        """SIGKILL the node process (no clean shutdown); its sandboxes die with it."""
        self.resume()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the node is gone for the control plane (and for everyone) until resumed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self) -> None:
        if self.paused and self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def close(self) -> None:
        """Stop the node and its OpenBao (safe to call more than once)."""
        try:
            self.resume()
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(60)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None
        finally:
            self.keyserver.stop()


@contextmanager
def read_db(db_url: str) -> Iterator[Session]:
    """A read-only session on a database a running process writes (control plane or node)."""
    engine = make_engine(db_url, read_only=True)
    try:
        with Session(engine, expire_on_commit=False) as session, session.begin():
            yield session
    finally:
        engine.dispose()


@dataclass(frozen=True)
class NodeWorld:
    operator_token: str
    provider_token: str
    enterprise_token: str  # on the node's API
    enterprise_id: str
    node_id: str
    provider_id: str
    dataset_id: str
    grant_id: str


def _retry(call: Any, timeout_s: float = 60.0) -> Any:
    """``call()`` until it stops failing with an API error (the node's link has to catch up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except ApiError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def _cli_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "sandbox.cli", *args, "--json"],
        env=cluster.env, cwd=ROOT, capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout))


def build_world(cluster: Cluster, node: NodeProcess, operator_token: str, rows: int) -> NodeWorld:
    """The enterprise on its node, enrolled; a provider; the dataset and a grant made on the
    node, published to the control plane."""
    made = _cli_json(cluster, "enterprises", "create", "Node Works", "--slug", "node-works",
                     "--on-node", "--token", operator_token, "--url", cluster.url)  # fmt: skip
    with VeilClient(cluster.url, operator_token) as operator:
        provider = operator.create_provider("Node Analytics")
        provider_token = operator.issue_token(provider["id"])
    enterprise_token = node.init(cluster.url, str(made["enrolment_code"]))
    node.start()
    with VeilClient(node.url, enterprise_token, timeout=120) as enterprise:
        columns = [*DECLARATION["columns"], CANARY_COLUMN]
        ds = enterprise.create_dataset("node-log", columns, epsilon_cap=100.0)
        enterprise.upload(ds["id"], canary_csv(rows))
        until = datetime.now(UTC) + timedelta(days=1)
        grant = _retry(
            lambda: enterprise.create_grant(  # the provider reaches the node first
                provider["id"], [ds["id"]], GRANTED, [3], [PURPOSE], until, epsilon=50.0
            )
        )
    world = NodeWorld(
        operator_token, provider_token, enterprise_token, str(made["id"]), str(made["node_id"]),
        provider["id"], ds["id"], grant["id"],
    )  # fmt: skip
    wait_published(cluster, world, grant["id"])
    return world


def wait_published(cluster: Cluster, world: NodeWorld, grant_id: str) -> None:
    """Until the provider sees the dataset and the grant on the control plane."""
    with VeilClient(cluster.url, world.provider_token) as provider:

        def published() -> None:
            if grant_id not in {g["id"] for g in provider.list_grants()} or not provider.catalog():
                raise ApiError(404, {"detail": "not published yet"})

        _retry(published)


def short_grant(cluster: Cluster, node: NodeProcess, world: NodeWorld, seconds: float) -> Any:
    """A grant for SHORT_PURPOSE valid ``seconds`` more, made on the node and published;
    its id and end."""
    until = datetime.now(UTC) + timedelta(seconds=seconds)
    with VeilClient(node.url, world.enterprise_token) as enterprise:
        grant = enterprise.create_grant(world.provider_id, [world.dataset_id], GRANTED, [3],
                                        [SHORT_PURPOSE], until, epsilon=1.0)  # fmt: skip
    wait_published(cluster, world, grant["id"])
    return grant["id"], until
