"""The set-up ``collab_bench`` measures: a control plane and N enterprise nodes on loopback.

One control plane (a Veil core with its embedded OpenBao and its API on a loopback port)
and N nodes, each a Veil core of its own (its own directory, SQLite database and embedded
OpenBao, whose credentials only it has), enrolled with a real one-time code, its dataset
uploaded on its own API, and its link thread running as in production: a long-poll claim
on the control plane, woken when a collaboration phase opens.  Everything runs in this
process (threads) and stops with the world.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import psutil

from node.link.rounds import NodeLink
from node.setup.provision import init_node, node_settings, running_node
from node.work import collab
from policies.budget import Budget
from sandbox.client import VeilClient
from sandbox.collaborations.runs import PHASE_S
from sandbox.config.settings import Settings
from sandbox.demo.data import DECLARATION, production_log
from sandbox.runtime.veil import Veil
from sandbox.server.thread import ApiThread
from sandbox.service import bootstrap_operator, open_veil
from sandbox.store.collab_models import CollaborationRun

# Only what these settings name (no VEIL_VAULT_ADDR, no PostgreSQL URL from the
# environment).  The control plane's embedded worker polls once a second.
LOCAL: dict[str, Any] = {
    "vault_addr": None,
    "database_url": None,
    "job_poll_interval_s": 1.0,
    "commitment_letters": False,  # letters: once per grant, not measured
}
ROWS = 400  # rows per enterprise: the partial is one value per statistic, whatever the rows
COLUMNS = [{"name": "cycle_time", "type": "float"}, {"name": "temperature", "type": "float"}]
MAPPING = {"cycle_time": "cycle_time_s", "temperature": "temperature_c"}
CATEGORY = "machining"
#: The benchmark: a count, a mean and three quantiles (one 20-bin histogram), one cell.
BENCHMARK: dict[str, Any] = {
    "statistics": [
        {"kind": "count"},
        {"kind": "mean", "column": "cycle_time", "lower": 10, "upper": 90},
        {"kind": "quantile", "column": "temperature", "lower": 20, "upper": 120,
         "q": [0.25, 0.5, 0.75], "bins": 20},
    ],
    "by": None,
    "epsilon": 1.0,
    "delta": 1e-6,
    "min_participants": 5,
}  # fmt: skip


@dataclass
class CollabNode:
    veil: Veil
    link: NodeLink
    node_id: str
    enterprise_id: str
    dataset_id: str
    frame: pl.DataFrame  # its rows in the common schema (for the in-process baseline only)


@dataclass
class RunTimes:
    """One run: its status, the control plane's row (created → finished), what the
    provider saw (POST sent → a GET reading it ended), and when each phase opened."""

    status: str
    row_s: float
    client_s: float
    opened: dict[str, datetime]
    created_at: datetime
    finished_at: datetime | None
    survivors: int


@dataclass
class CollabWorld:
    home: Path
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    nodes: list[CollabNode] = field(default_factory=list)
    setup_s: list[float] = field(default_factory=list)  # each node's enrol + start + upload

    def __enter__(self) -> CollabWorld:
        try:
            settings = Settings(data_dir=self.home / "control-plane", **LOCAL)
            self.cp = self.stack.enter_context(open_veil(settings))
            self.url = self.stack.enter_context(ApiThread(settings, self.cp))
            token = bootstrap_operator(self.cp)
            assert token is not None
            self.operator = self.stack.enter_context(VeilClient(self.url, token))
            made = self.operator.create_provider("Benchmarks Inc")
            self.provider = self.stack.enter_context(
                VeilClient(self.url, self.operator.issue_token(made["id"]), timeout=120)
            )
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for node in self.nodes:
            node.link._stop.set()  # all at once: each link ends when its claim returns
        self.stack.close()  # links, node cores and their OpenBaos, then the control plane

    def add_node(self) -> CollabNode:
        """Enrol, start and provision one more node; its link thread long-polls."""
        started = time.perf_counter()
        index = len(self.nodes)
        made = self.operator.create_node_enterprise(
            f"Works {index}", f"works{index}-{uuid.uuid4().hex[:6]}"
        )
        node_dir = self.home / f"node-{index}"
        settings = node_settings(node_dir, **LOCAL)
        config, token = init_node(node_dir, self.url, made["enrolment_code"], settings)
        # No job worker: the nodes run no job here, and N idle workers (each with its warm
        # sandbox, about 150 MiB) would take the memory and the cores the run needs; in
        # production each node has its own machine.
        veil, link = self.stack.enter_context(
            running_node(node_dir, settings, link=False, worker=False)
        )
        csv = production_log(ROWS, seed=100 + index)
        with ApiThread(settings, veil) as node_url, VeilClient(node_url, token) as owner:
            dataset = owner.create_dataset(DECLARATION["name"], DECLARATION["columns"])
            owner.upload(dataset["id"], csv)
        link.start()
        frame = pl.read_csv(csv).select([pl.col(local).alias(common)
                                         for common, local in MAPPING.items()])  # fmt: skip
        node = CollabNode(veil, link, config.node_id, config.enterprise_id, dataset["id"], frame)
        self.nodes.append(node)
        self.setup_s.append(time.perf_counter() - started)
        return node

    def collaboration(self, count: int) -> str:
        """A proposal the first ``count`` nodes join (each from its node, signed there)."""
        made = self.provider.propose_collaboration(
            f"Benchmark over {count} nodes", "industry benchmark", COLUMNS, BENCHMARK
        )
        for node in self.nodes[:count]:
            collab.join(node.veil, node.link.control, node.node_id, node.enterprise_id,
                        made["id"], node.dataset_id, MAPPING, CATEGORY,
                        Budget.from_floats(100.0, 1e-3))  # fmt: skip
        return str(made["id"])

    def run(self, collaboration_id: str, timeout: float = 6 * PHASE_S) -> RunTimes:
        """One run, started by the provider over HTTP, answered by the nodes' link threads."""
        started = time.perf_counter()
        run_id = str(self.provider.start_collaboration_run(collaboration_id)["id"])
        watcher = _PhaseWatcher(self.cp, run_id)
        watcher.start()
        try:
            deadline = time.monotonic() + timeout
            while True:
                seen = self.provider.get_collaboration_run(collaboration_id, run_id)
                if seen["status"] != "running":
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the run is still in phase {seen['phase']}")
                time.sleep(0.02)
            client_s = time.perf_counter() - started
        finally:
            watcher.stop()
        with self.cp.db.read() as session:
            row = session.get(CollaborationRun, run_id)
            assert row is not None
            session.expunge(row)
        finished = row.finished_at
        return RunTimes(
            status=row.status,
            row_s=(finished - row.created_at).total_seconds() if finished else float("nan"),
            client_s=client_s,
            opened=watcher.opened,
            created_at=row.created_at,
            finished_at=finished,
            survivors=int(seen["survivors"]),
        )

    def memory_mib(self) -> dict[str, float]:
        """Resident memory of this process and of its OpenBao children, in MiB."""
        me = psutil.Process()
        baos = 0
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "bao" in child.name():
                    baos += child.memory_info().rss
        mib = 1024 * 1024
        return {"this process": me.memory_info().rss / mib, "OpenBao processes": baos / mib}


class _PhaseWatcher:
    """When each phase of a run opened, read off the control plane's row: a phase opens
    with its deadline set to ``now + PHASE_S``, so the row tells the exact time as long as
    the watcher sees the phase.  It looks when the control plane wakes the nodes (which it
    does as a phase opens) and every 50 ms besides; a watcher polling every few
    milliseconds would take the one interpreter's time from the run it measures."""

    def __init__(self, cp: Veil, run_id: str) -> None:
        self.cp, self.run_id = cp, run_id
        self.opened: dict[str, datetime] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="phase-watcher", daemon=True)
        self._wake = cp.wake_nodes

    def start(self) -> None:
        def wake_nodes() -> None:
            self._look()
            self._wake()

        self.cp.wake_nodes = wake_nodes  # type: ignore[method-assign]
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.cp.wake_nodes = self._wake  # type: ignore[method-assign]
        self._look()

    def _look(self) -> None:
        with self.cp.db.read() as session:
            row = session.get(CollaborationRun, self.run_id)
            if row is not None and row.status == "running" and row.phase not in self.opened:
                self.opened[row.phase] = row.phase_deadline - timedelta(seconds=PHASE_S)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            self._look()
