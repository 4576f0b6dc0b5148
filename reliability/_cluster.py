"""A real Veil for the reliability scripts: ``veil serve`` in its own process, its OpenBao, a world.

Everything lives under one temporary home on loopback::

    home/veil/            the data directory (database, encrypted objects)
    home/veil/keyserver/  the embedded OpenBao's home (the script starts it, the server reuses it)
    home/tmp/             the server's TMPDIR (scanned for plaintext like the data directory)
    home/server.log       the server's output

The OpenBao is started by the script (``LocalKeyServer``, exactly as ``veil serve`` would start
it), so that it outlives killed servers and can itself be killed and restarted on its storage.
The world is an enterprise, a provider, one dataset of the demo's production log with an added
*secret* column of canary values (never used by a job, so never in any output or declaration),
and a grant with a large budget for tier-3 private queries.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from keys import LocalKeyServer
from keys.bao import free_port
from sandbox.client import FINAL_JOB_STATUSES, ApiError, VeilClient
from sandbox.demo.data import DECLARATION, production_log
from sandbox.demo.walkthrough import QUERIES

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PURPOSE = "process-optimization"
JOB_EPSILON = 0.001
#: A prefix no declaration, query or output holds: found on disk, it is leaked plaintext.
CANARY = b"VEILCANARY"
#: The upload's header line: its column names joined like this appear only in the plaintext.
CSV_HEADER = b"machine,shift,temperature_c,cycle_time_s"
CANARY_COLUMN = {"name": "batch_code", "type": "string", "class": "secret"}
GRANTED = ["machine", "shift", "temperature_c", "cycle_time_s", "vibration_mm_s", "defects"]


def canary_csv(rows: int) -> bytes:
    """The demo's production log with a secret ``batch_code`` column of canary values."""
    lines = production_log(rows, seed=7).decode().splitlines()
    out = [lines[0] + ",batch_code"]
    out += [f"{line},{CANARY.decode()}-{i:06d}-{(i * 7919) % 99991:05d}"
            for i, line in enumerate(lines[1:])]  # fmt: skip
    return ("\n".join(out) + "\n").encode()


@dataclass(frozen=True)
class World:
    operator_token: str
    enterprise_token: str
    provider_token: str
    dataset_id: str
    grant_id: str


class Cluster:
    """One Veil server process (started, killed, restarted at will) and its OpenBao."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.data_dir = home / "veil"
        self.tmp = home / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.log = home / "server.log"
        self.port = free_port()
        self.keyserver = LocalKeyServer(self.data_dir / "keyserver")
        self.proc: subprocess.Popen[bytes] | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VEIL_", "VAULT_"))}
        self.env = env | {
            "VEIL_DATA_DIR": str(self.data_dir),
            "VEIL_API_PORT": str(self.port),
            "VEIL_JOB_POLL_INTERVAL_S": "0.05",
            "VEIL_COMMITMENT_LETTERS": "false",  # letters: once per grant, not measured
            "VEIL_AUDIT_CHECKPOINT_EVERY": "25",  # signed checkpoints during the run
            "TMPDIR": str(self.tmp),
            "PYTHONPATH": str(ROOT),
        }

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.data_dir / 'veil.db'}"

    # -- OpenBao -----------------------------------------------------------------------------
    def start_keyserver(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.keyserver.start()

    def kill_keyserver(self) -> None:
        """SIGKILL the OpenBao process (no clean shutdown), then reap it."""
        pid = self.keyserver.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.keyserver.stop(timeout_s=5)

    # -- the Veil server ---------------------------------------------------------------------
    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sandbox.cli", *args]

    def init(self) -> str:
        """``veil init``: the database and the first operator; return its token."""
        done = subprocess.run(
            self._cli("init"), env=self.env, cwd=ROOT, capture_output=True, timeout=300, check=True
        )
        return done.stdout.decode().strip().splitlines()[-1]

    def start_server(self, timeout_s: float = 120.0) -> float:
        """Start ``veil serve``; return the seconds until ``/v1/health`` answered 200."""
        started = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self._cli("serve"), env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        while time.monotonic() - started < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"veil serve exited; see {self.log}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"veil serve did not start in {timeout_s:.0f} s; see {self.log}")

    def kill_server(self) -> None:
        """SIGKILL the server process (its job sandboxes die with it: --die-with-parent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait()
        self.proc = None

    def stop_server(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self) -> None:
        """Stop everything this cluster started (safe to call more than once)."""
        try:
            self.stop_server()
        finally:
            self.keyserver.stop()

    # -- the world ---------------------------------------------------------------------------
    def build_world(self, operator_token: str, rows: int) -> World:
        """An enterprise, a provider, the canary dataset uploaded, and a tier-3 grant."""
        with VeilClient(self.url, operator_token) as operator:
            ent = operator.create_enterprise("Reliability Works", "reliability-works")
            prov = operator.create_provider("Reliability Analytics")
            ent_token, prov_token = (
                operator.issue_token(ent["id"]),
                operator.issue_token(prov["id"]),
            )
        with VeilClient(self.url, ent_token) as enterprise:
            columns = [*DECLARATION["columns"], CANARY_COLUMN]
            ds = enterprise.create_dataset("reliability-log", columns, epsilon_cap=100.0)
            enterprise.upload(ds["id"], canary_csv(rows))
            grant = enterprise.create_grant(
                prov["id"], [ds["id"]], GRANTED, [3], [PURPOSE],
                datetime.now(UTC) + timedelta(days=1), epsilon=100.0,
            )  # fmt: skip
        return World(operator_token, ent_token, prov_token, ds["id"], grant["id"])


@dataclass(frozen=True)
class Process:
    pid: int
    name: str  # the command name (/proc/<pid>/comm)
    depth: int  # 1: a child of the root process, 2: a grandchild, ...


def descendants(pid: int) -> list[Process]:
    """The descendants of process ``pid``, read from ``/proc/<pid>/task/*/children``."""
    found: list[Process] = []
    todo = [(pid, 0)]
    while todo:
        parent, depth = todo.pop()
        for children in Path(f"/proc/{parent}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                for child in children.read_text().split():
                    with contextlib.suppress(OSError):
                        name = Path(f"/proc/{child}/comm").read_text().strip()
                        found.append(Process(int(child), name, depth + 1))
                        todo.append((int(child), depth + 1))
    return found


@dataclass
class LoadStats:
    submitted: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    results_read: int = 0
    unreachable: int = 0  # requests that found no server (it was down)
    refused: dict[int, int] = field(default_factory=dict)  # HTTP status -> count


class Load(threading.Thread):
    """A provider client: keeps ``depth`` private-query jobs in flight and reads each result.

    It rides out a server that is down (retrying), and counts what happened."""

    def __init__(self, url: str, world: World, depth: int = 2) -> None:
        super().__init__(name="reliability-load", daemon=True)
        self.url, self.world, self.depth = url, world, depth
        self.stats = LoadStats()
        self.stopping = threading.Event()
        self.paused = threading.Event()
        self._in_flight: deque[str] = deque()
        self._turn = 0

    def stop(self) -> None:
        self.stopping.set()
        self.join(30)

    def run(self) -> None:
        with VeilClient(self.url, self.world.provider_token, timeout=10) as client:
            while not self.stopping.is_set():
                if self.paused.is_set():
                    time.sleep(0.05)
                    continue
                try:
                    self._step(client)
                except httpx.HTTPError:
                    self.stats.unreachable += 1
                    time.sleep(0.2)
                except ApiError as exc:
                    self.stats.refused[exc.status] = self.stats.refused.get(exc.status, 0) + 1
                    time.sleep(0.2)

    def _step(self, client: VeilClient) -> None:
        while len(self._in_flight) < self.depth:
            _, aggregates, group_by = QUERIES[self._turn % len(QUERIES)]
            self._turn += 1
            job = client.submit_job(
                self.world.dataset_id, PURPOSE, JOB_EPSILON, aggregates, group_by
            )
            self.stats.submitted.append(job["id"])
            self._in_flight.append(job["id"])
        job_id = self._in_flight[0]
        job = client.get_job(job_id)
        if job["status"] in FINAL_JOB_STATUSES:
            self._in_flight.popleft()
            if job["status"] == "released":
                self.stats.released.append(job_id)
                client.get_result(job_id)
                self.stats.results_read += 1
        else:
            time.sleep(0.05)


def call_status(fn: Any, *args: Any, **kwargs: Any) -> tuple[int, str]:
    """Run a client call; (200, "") on success, else the HTTP status and the error's detail."""
    try:
        fn(*args, **kwargs)
    except ApiError as exc:
        return exc.status, exc.detail
    return 200, ""
